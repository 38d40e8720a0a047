// SPDX-License-Identifier: MIT
/*
 * The fd table, the library's own fds, clocks and randomness: small pieces the
 * close path needs, all async-signal-safe.
 */
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <stdbool.h>
#include <pthread.h>
#include <time.h>
#include <sys/resource.h>
#include <unistd.h>
#include <sys/syscall.h>

#include "runtime.h"
#include "stats.h"

/*
 * Indexed by fd. It lives in .bss: 4 MiB of address space whose pages the
 * kernel only backs once a tracked fd touches them.
 */
_Atomic uint32_t fdtab[TW_FD_MAX];
_Atomic int fdtab_hi;

struct rt rt;
_Atomic int rt_vforks = RT_VFORKS_BASE;
_Atomic bool rt_cloned;
_Atomic bool rt_main_gone;
_Atomic bool rt_owner_set;
_Atomic bool rt_threadless;
_Atomic uint32_t rt_spawns;

/*
 * A copy of fd for the library to keep, close-on-exec, at a number the
 * program would not have had. RLIMIT_NOFILE bounds the numbers a process
 * may open, not the fds it holds, and the program can only ever have those
 * below its soft limit: when the hard limit leaves room, the soft one is
 * raised for the instant of the copy, which goes just above it, and put
 * back. When it leaves none (soft = hard) and the limit is large, the copy
 * goes to its upper half, which programs rarely reach; at a small one the
 * library keeps no fd (-EMFILE) and gives up what needed it. Raw
 * syscalls, async-signal-safe. Returns the new fd or -errno.
 */
/* the hard limit last seen: the raise and the read of the old limit are then one call */
static rlim_t hard_seen;

/*
 * No room above the soft limit at the last look (soft = hard): that soft
 * limit (low 32 bits; 0: not known), and the second until which it stands.
 * The copies go to its upper half by one fcntl, without the two prlimit
 * calls that would only find the same, until a second has passed or the
 * program sets a limit (its setrlimit and prlimit wrappers), which counts
 * up the high 32 bits: a look that read the limit before that change
 * publishes nothing. A limit lowered from outside meanwhile makes the
 * fcntl fail (EINVAL) and the limit is read again at once; one raised from
 * outside is seen within the second.
 */
static _Atomic uint64_t full_soft;
static uint64_t full_until;

void libfd_limit_changed(void)
{
	uint64_t v = atomic_load(&full_soft);

	while (!atomic_compare_exchange_weak(&full_soft, &v, ((v >> 32) + 1) << 32))
		;
}

/* the copy in the upper half of a soft limit of 1024 or more, else -EMFILE */
static long dup_upper_half(int fd, rlim_t soft)
{
	long nfd;

	if (soft < TW_LIBFD_SHARE_MIN)
		return -EMFILE;
	nfd = syscall(SYS_fcntl, fd, F_DUPFD_CLOEXEC, soft / 2);
	return nfd < 0 ? -errno : nfd;
}

static long dup_placed(int fd)
{
	struct rlimit old, up;
	bool raised = false;
	long nfd = -1;
	uint64_t full = atomic_load(&full_soft);

	if ((uint32_t)full && clock_mono_s() < full_until) {
		nfd = dup_upper_half(fd, (uint32_t)full);
		if (nfd != -EINVAL)
			return nfd;
		atomic_compare_exchange_strong(&full_soft, &full, full & ~0xffffffffull);
		full &= ~0xffffffffull;
	}
	up.rlim_max = hard_seen;
	up.rlim_cur = hard_seen < TW_FD_MAX ? hard_seen : TW_FD_MAX;
	if (hard_seen && syscall(SYS_prlimit64, 0, RLIMIT_NOFILE, &up, &old) == 0) {
		raised = true;
		if (old.rlim_max != hard_seen) {
			/* the program changed its hard limit: put it back, start over */
			syscall(SYS_prlimit64, 0, RLIMIT_NOFILE, &old, NULL);
			raised = false;
		}
	}
	if (!raised) {
		if (syscall(SYS_prlimit64, 0, RLIMIT_NOFILE, NULL, &old) < 0)
			return -errno;
		hard_seen = old.rlim_max;
		up.rlim_max = old.rlim_max;
		up.rlim_cur = old.rlim_max < TW_FD_MAX ? old.rlim_max : TW_FD_MAX;
		raised = up.rlim_cur > old.rlim_cur &&
			 syscall(SYS_prlimit64, 0, RLIMIT_NOFILE, &up, NULL) == 0;
	}
	if (raised) {
		if (up.rlim_cur == old.rlim_cur && up.rlim_max == old.rlim_max) {
			/* the "raise" set what was there: nothing to put back */
			full_until = clock_mono_s() + 1;
			if (old.rlim_cur <= UINT32_MAX)
				atomic_compare_exchange_strong(&full_soft, &full,
							       (full & ~0xffffffffull) |
							       old.rlim_cur);
			return dup_upper_half(fd, old.rlim_cur);
		}
		if (up.rlim_cur > old.rlim_cur)
			nfd = syscall(SYS_fcntl, fd, F_DUPFD_CLOEXEC, old.rlim_cur);
		syscall(SYS_prlimit64, 0, RLIMIT_NOFILE, &old, NULL);
		if (nfd >= 0)
			return nfd;
	}
	return dup_upper_half(fd, old.rlim_cur);
}

/*
 * One copy at a time: another thread's raised soft limit must not be
 * taken for the program's, nor put back as if it were. Another thread's
 * copy is waited for (a few system calls); a signal handler that
 * interrupted this thread's own copy cannot wait for it and places its copy
 * without raising the limit (its upper half), or gets -EMFILE.
 */
static _Atomic bool dup_busy;
static __thread bool dup_mine __attribute__((tls_model("initial-exec")));

static void dup_take(void)
{
	for (;;) {
		bool f = false;

		if (atomic_compare_exchange_strong(&dup_busy, &f, true))
			return;
		sched_yield();
	}
}

int libfd_dup(int fd)
{
	struct rlimit cur;
	long nfd;

	if (dup_mine) {
		if (syscall(SYS_prlimit64, 0, RLIMIT_NOFILE, NULL, &cur) < 0)
			return -errno;
		return (int)dup_upper_half(fd, cur.rlim_cur);
	}
	/* before taking it: a handler that interrupts the wait must not wait too */
	dup_mine = true;
	dup_take();
	nfd = dup_placed(fd);
	atomic_store(&dup_busy, false);
	dup_mine = false;
	return (int)nfd;
}

/* No copy is under way across a fork: the child's limit is the program's. */
void libfd_fork_prepare(void)
{
	dup_mine = true;
	dup_take();
}

void libfd_fork_parent(void)
{
	atomic_store(&dup_busy, false);
	dup_mine = false;
}

void libfd_fork_child(void)
{
	libfd_fork_parent();
}

/*
 * Moves fd to where the library keeps its fds (libfd_dup()) and marks it in
 * the table as the library's. Returns the new number; or, when there is no
 * such place, closes fd and returns -errno: the library never holds a
 * number the program could have had.
 */
int libfd_move(int fd, uint32_t mark)
{
	int nfd = libfd_dup(fd), cancel;

	/*
	 * close(), not the raw call: the number is the program's to reuse at
	 * once, and a ThreadSanitizer runtime must see it closed, or it takes
	 * the program's next fd of that number for a race with ours. The table
	 * knows nothing of it, so the library's own wrapper passes it through;
	 * cancellation stays off across it.
	 */
	fdtab_set(fd, FDT_NONE);
	pthread_setcancelstate(PTHREAD_CANCEL_DISABLE, &cancel);
	close(fd);
	pthread_setcancelstate(cancel, NULL);
	if (nfd >= 0)
		fdtab_set(nfd, mark);
	return nfd;
}

/*
 * Closes one of the library's fds. The mark is cleared after the close and
 * only if nobody re-marked the number meanwhile: cleared before, a program
 * sweeping its fds could close ours and have the number given back to it
 * while we still hold it. The window left is a program's open() in the
 * instant between the two, whose fd a later close() would then leave open.
 */
void libfd_close(int fd)
{
	uint32_t mark = fdtab_get(fd);

	syscall(SYS_close, fd);
	if (fdt_is_lib(mark) && (unsigned)fd < TW_FD_MAX)
		atomic_compare_exchange_strong(&fdtab[fd], &mark, FDT_NONE);
}

/*
 * /proc/self/stat, kept open above the program's fds (an open at each
 * look would take, for an instant, the lowest free number, which a
 * program's open in another thread expects). A forked child opens its own:
 * /proc/self is resolved at the open.
 */
static _Atomic int self_stat = -1;
static _Atomic int self_stat_pid;

long rt_threads(bool *leader_gone)
{
	int fd = atomic_load(&self_stat), e0 = errno, pid = rt.pid, expect;
	char st;
	long n;

	if (fd < 0 || atomic_load(&self_stat_pid) != pid) {
		if (fd >= 0 && (expect = fd, atomic_compare_exchange_strong(&self_stat, &expect, -1)))
			libfd_close(fd);
		fd = proc_stat_open(0);
		if (fd >= 0)
			fd = libfd_move(fd, FDT_LIB);
		expect = -1;
		if (fd >= 0 && !atomic_compare_exchange_strong(&self_stat, &expect, fd)) {
			libfd_close(fd);
			fd = expect;
		} else if (fd >= 0) {
			atomic_store(&self_stat_pid, pid);
		}
	}
	n = (long)proc_stat_read(fd, 20, &st);
	*leader_gone = st == 'Z';
	errno = e0;
	return n;
}

bool rt_table_alone(void)
{
	long n, mine = 1 + (long)closer_running();
	bool gone;

	for (int i = 0; (n = rt_threads(&gone)) > mine && i < 10; i++) {
		struct timespec pause = { 0, 100000 };

		syscall(SYS_nanosleep, &pause, NULL);	/* no cancellation point */
	}
	return !atomic_load(&rt_cloned) && n <= mine;
}

uint64_t clock_mono_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

uint64_t clock_mono_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
	return (uint64_t)ts.tv_sec;
}

uint64_t clock_real_us(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000;
}

/*
 * A per-thread xorshift64* generator for A/B draws: no syscall, no lock.
 * Seeded from the clock, the thread's stack address and the pid, so threads
 * and forked children draw differently.
 */
static __thread uint64_t rnd_state;

uint64_t rnd_next(void)
{
	uint64_t x = rnd_state;

	if (!x) {
		x = clock_mono_ns() ^ ((uint64_t)(uintptr_t)&x << 16) ^ (uint64_t)rt.pid << 40;
		x |= 1;
	}
	x ^= x >> 12;
	x ^= x << 25;
	x ^= x >> 27;
	rnd_state = x;
	return x * 0x2545f4914f6cdd1dull;
}

/* the forking thread's state was copied into the child: draw anew */
void rnd_fork_child(void)
{
	rnd_state = 0;
}
