// SPDX-License-Identifier: MIT
/*
 * The per-process counters: one small file in the `stats` directory, mapped
 * shared, made at the process's first tracked connection. The close path
 * only adds to it: atomic adds, no system call, no lock, no allocation.
 * A forked child gets a file of its own in the fork handler, so the close
 * path never has to ask which process it runs in.
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <sched.h>
#include <stddef.h>
#include <string.h>
#include <unistd.h>
#include <sys/mman.h>
#include <sys/syscall.h>

#include "config.h"
#include "diagmsg.h"
#include "record.h"
#include "runtime.h"
#include "stats.h"

_Static_assert(offsetof(struct tw_stats_file, conns) % 8 == 0, "counters are aligned");

enum { ST_NONE, ST_MAKING, ST_READY, ST_OFF };

static struct tw_stats_file *page;	/* NULL until made; read with an acquire load */
static _Atomic int state;
static _Atomic bool atfork_set;

int proc_stat_open(int pid)
{
	char path[64], *p, *end = path + sizeof(path) - 1;

	memcpy(path, "/proc/", 6);
	p = path + 6;
	if (pid) {
		p += fmt_u64(p, (uint64_t)pid);
	} else {
		memcpy(p, "self", 4);
		p += 4;
	}
	if (p + 5 > end)
		return -ENAMETOOLONG;
	memcpy(p, "/stat", 6);
	return (int)syscall(SYS_openat, AT_FDCWD, path, O_RDONLY | O_CLOEXEC);
}

uint64_t proc_stat_read(int fd, int field, char *st)
{
	char buf[1024], *p;
	unsigned long long v = 0;
	long n;
	int at;

	*st = 0;
	n = fd < 0 ? -1 : syscall(SYS_pread64, fd, buf, sizeof(buf) - 1, 0);
	if (n <= 0)
		return 0;
	buf[n] = 0;
	/* comm, field 2, may hold spaces and parentheses: count from the last ')' */
	p = strrchr(buf, ')');
	if (!p || p[1] != ' ')
		return 0;
	*st = p[2];
	for (at = 2; *p && at < field; p++)
		if (*p == ' ')
			at++;
	while (*p >= '0' && *p <= '9')
		v = v * 10 + (unsigned)(*p++ - '0');
	return v;
}

uint64_t stats_start_ticks(int pid)
{
	int fd = proc_stat_open(pid);
	char st;
	uint64_t v = proc_stat_read(fd, 22, &st);

	if (fd >= 0)
		syscall(SYS_close, fd);
	/* gone, or a zombie: it has ended, only its parent has not reaped it */
	return st == 'Z' || st == 'X' ? 0 : v;
}

/* dir/PID-START[-N].twstats into path; 0 or -ENAMETOOLONG */
static int file_name(char *path, size_t len, const char *dir, uint64_t start, unsigned n)
{
	size_t dl = strlen(dir), i;
	char *p;

	if (dl + 80 > len)
		return -ENAMETOOLONG;
	memcpy(path, dir, dl);
	p = path + dl;
	*p++ = '/';
	p += fmt_u64(p, (uint64_t)rt.pid);
	*p++ = '-';
	p += fmt_u64(p, start);
	if (n) {
		*p++ = '-';
		p += fmt_u64(p, n);
	}
	i = sizeof(TW_STATS_SUFFIX);
	memcpy(p, TW_STATS_SUFFIX, i);
	return 0;
}

/*
 * Makes and maps the file. O_EXCL and O_NOFOLLOW: never a file or a
 * symbolic link someone else put there; a name taken (the same pid and
 * start time: a process that exec'd, or a stale file) moves on to -1, -2...
 * The fd is closed once mapped. Returns 0 or -errno.
 */
static int file_make(const char *dir)
{
	struct tw_stats_file *f;
	char path[TW_PATH_MAX];
	uint64_t start = stats_start_ticks(rt.pid);
	const char *name;
	long fd = -1;
	unsigned n;
	int err;

	for (n = 0; n < 16; n++) {
		err = file_name(path, sizeof(path), dir, start, n);
		if (err)
			return err;
		fd = syscall(SYS_openat, AT_FDCWD, path,
			     O_RDWR | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0644);
		if (fd >= 0 || errno != EEXIST)
			break;
	}
	if (fd < 0)
		return -errno;
	if (ftruncate((int)fd, sizeof(*f)) < 0) {
		err = -errno;
		goto fail;
	}
	f = mmap(NULL, sizeof(*f), PROT_READ | PROT_WRITE, MAP_SHARED, (int)fd, 0);
	if (f == MAP_FAILED) {
		err = -errno;
		goto fail;
	}
	syscall(SYS_close, fd);
	f->version = TW_STATS_VERSION;
	f->size = sizeof(*f);
	f->pid = rt.pid;
	f->start_ticks = start;
	f->created_us = clock_real_us();
	strncpy(f->comm, rt.comm, sizeof(f->comm) - 1);
	for (n = 0; n < TW_ARMS_MAX && (name = conf_arm_name(rt.conf, n + 1)); n++)
		strncpy(f->arms[n], name, TW_STATS_ARM_NAME - 1);
	f->narms = n;
	__atomic_store_n(&f->magic, TW_STATS_MAGIC, __ATOMIC_RELEASE);
	__atomic_store_n(&page, f, __ATOMIC_RELEASE);
	return 0;
fail:
	unlink(path);
	syscall(SYS_close, fd);
	return err;
}

/*
 * In a forked child the parent's mapping would count the child's ends in
 * the parent's file: the child makes its own, at once (now), when the
 * parent had one (the connections it inherited end in it); or (a child of
 * clone(), on a stack of the program's that may be small) at its first
 * connection.
 */
void stats_fork_child(bool now)
{
	struct tw_stats_file *f = page;
	const char *dir;

	page = NULL;
	if (!f) {
		/* made by a thread the fork left behind: made again here when needed */
		if (atomic_load(&state) == ST_MAKING)
			atomic_store(&state, ST_NONE);
		return;
	}
	munmap(f, sizeof(*f));
	if (!now) {
		atomic_store(&state, ST_NONE);
		return;
	}
	/* the child's own draw of a split=process arm may name no directory */
	dir = conf_stats_dir(rt.conf);
	atomic_store(&state, dir && !file_make(dir) ? ST_READY : ST_OFF);
}

static void stats_forked(void)
{
	stats_fork_child(true);
}

void stats_open(void)
{
	const char *dir;
	int s = atomic_load_explicit(&state, memory_order_acquire), err;

	if (s == ST_READY || s == ST_OFF)
		return;
	dir = conf_stats_dir(rt.conf);
	if (!dir) {
		atomic_store(&state, ST_OFF);
		return;
	}
	s = ST_NONE;
	if (!atomic_compare_exchange_strong(&state, &s, ST_MAKING)) {
		/* another thread makes it: its connections end after it is there */
		for (int i = 0; i < 100000 && atomic_load(&state) == ST_MAKING; i++)
			sched_yield();
		return;
	}
	if (!atomic_exchange(&atfork_set, true))
		pthread_atfork(NULL, NULL, stats_forked);
	err = file_make(dir);
	if (err)
		SHIM_ERR("stats: cannot make a file in %s: %s; no counters are kept", dir,
			 strerror(-err));
	atomic_store(&state, err ? ST_OFF : ST_READY);
}

static void add(uint64_t *v)
{
	__atomic_fetch_add(v, 1, __ATOMIC_RELAXED);
}

void stats_end(unsigned role, unsigned policy, unsigned arm, unsigned end, bool timeout,
	       bool deferred)
{
	struct tw_stats_file *f = __atomic_load_n(&page, __ATOMIC_ACQUIRE);

	if (!f)
		return;
	if (arm >= TW_STATS_ARMS)
		arm = 0;
	add(&f->conns[role % TW_STATS_ROLES][policy % TW_STATS_POLICIES][arm]
		     [end % TW_STATS_ENDS]);
	if (timeout)
		add(&f->defer_timeouts);
	if (deferred)
		__atomic_fetch_sub(&f->deferred_now, 1, __ATOMIC_RELAXED);
}

bool stats_on(void)
{
	return __atomic_load_n(&page, __ATOMIC_ACQUIRE) != NULL;
}

void stats_defer_begin(void)
{
	struct tw_stats_file *f = __atomic_load_n(&page, __ATOMIC_ACQUIRE);

	if (f)
		__atomic_fetch_add(&f->deferred_now, 1, __ATOMIC_RELAXED);
}

void stats_learned(void)
{
	struct tw_stats_file *f = __atomic_load_n(&page, __ATOMIC_ACQUIRE);

	if (f)
		add(&f->learned_fallbacks);
}

void stats_connect_wait(void)
{
	struct tw_stats_file *f = __atomic_load_n(&page, __ATOMIC_ACQUIRE);

	if (f)
		add(&f->connect_waits);
}

int stats_file_check(const void *buf, size_t len)
{
	const struct tw_stats_file *f = buf;

	if (len < sizeof(*f) || f->magic != TW_STATS_MAGIC || f->version != TW_STATS_VERSION ||
	    f->size != sizeof(*f) || f->narms > TW_ARMS_MAX)
		return -EINVAL;
	return 0;
}
