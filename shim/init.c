// SPDX-License-Identifier: MIT
/*
 * Start-up: the real functions, the settings, the fork handlers, and the
 * sockets the process inherited.
 */
#include <dirent.h>
#include <fcntl.h>
#include <dlfcn.h>
#include <link.h>
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <netinet/in.h>
#include <linux/tcp.h>
#include <sys/auxv.h>
#include <sys/resource.h>
#include <sys/epoll.h>
#include <sys/stat.h>
#include <sys/syscall.h>

#include "config.h"
#include "diagmsg.h"
#include "runtime.h"
#include "stats.h"
#include "shim.h"

/*
 * close() works before anything is resolved: dlsym may call malloc, and a
 * malloc may call close, so close never triggers resolution itself.
 */
static int raw_close(int fd)
{
	return (int)syscall(SYS_close, fd);
}

struct real real = { .close = raw_close };

static pthread_once_t symbols_once = PTHREAD_ONCE_INIT;

/*
 * One real function. dlsym handing back our own wrapper means the library
 * sits where RTLD_NEXT cannot see past it (loaded twice, or linked in): a
 * loop waiting to happen, so stop with a clear message.
 */
static void *bind_symbol(const char *name, void *ours, bool required)
{
	void *p = dlsym(RTLD_NEXT, name);

	if (p == ours) {
		SHIM_ERR("dlsym(RTLD_NEXT, \"%s\") returned twshim's own wrapper; "
			 "is libtwshim.so loaded twice?", name);
		abort();
	}
	if (!p && required) {
		SHIM_ERR("the C library has no %s: %s", name, dlerror());
		abort();
	}
	return p;
}

#define BIND(f, req) (real.f = bind_symbol(#f, (void *)f, req))

static void bind_all(void)
{
	BIND(socket, true);
	BIND(connect, true);
	BIND(accept, true);
	BIND(accept4, true);
	BIND(shutdown, true);
	BIND(dup, true);
	BIND(dup2, true);
	BIND(dup3, true);
	BIND(fcntl, true);
	BIND(fcntl64, false);	/* glibc >= 2.28 */
	BIND(close_range, false);	/* glibc >= 2.34 */
	BIND(closefrom, false);	/* glibc >= 2.34 */
	BIND(fclose, true);
	BIND(fdopen, true);
	BIND(epoll_create, true);
	BIND(epoll_create1, true);
	BIND(pthread_exit, true);
	BIND(_exit, true);
	BIND(_Exit, true);
	BIND(setsockopt, true);
	BIND(sendmsg, true);
	BIND(execve, true);
	BIND(execv, true);
	BIND(execvp, true);
	BIND(execvpe, true);
	BIND(fexecve, true);
	BIND(unshare, true);
	BIND(setns, true);
	BIND(clone, true);
	BIND(posix_spawn, true);
	BIND(posix_spawnp, true);
	BIND(system, true);
	BIND(popen, true);
	BIND(close, true);
}

void shim_symbols(void)
{
	pthread_once(&symbols_once, bind_all);
}

/*
 * The signal mask of the thread that forks, while it holds the closer's
 * locks: a handler that exits or execs (which take them) would wait for
 * ever on its own thread. Signals are held from there until the fork
 * handlers after the fork let them in (the child's mask is the parent's).
 */
static __thread sigset_t fork_mask __attribute__((tls_model("initial-exec")));

/*
 * The table first: no change of it may be under way when the closer's locks
 * are taken (a connect starting the closer holds its start lock).
 */
void shim_fork_prepare(void)
{
	sigset_t all;

	conn_fork_prepare();
	sigfillset(&all);
	pthread_sigmask(SIG_BLOCK, &all, &fork_mask);
	closer_fork_prepare();
	libfd_fork_prepare();
}

void shim_fork_parent(void)
{
	/* every connection open now may have a second holder: the child */
	atomic_fetch_add(&rt.forkgen, 1);
	libfd_fork_parent();
	closer_fork_parent();
	pthread_sigmask(SIG_SETMASK, &fork_mask, NULL);
	conn_fork_parent();
}

/* in a child of fork() or of a fork-like clone(): the library's state is its own now */
static void child_common(void)
{
	rt.pid = (int)syscall(SYS_getpid);
	/* the children sharing memory were the parent's */
	atomic_store(&rt_vforks, RT_VFORKS_BASE);
	rt.forked = true;
	atomic_fetch_add(&rt.forkgen, 1);
	libfd_fork_child();
	conn_fork_child();
	closer_fork_child();
	pthread_sigmask(SIG_SETMASK, &fork_mask, NULL);
	sink_fork_child();
	rnd_fork_child();
	if (rt.conf)
		conf_reseed(rt.conf, rnd_next());
}

/*
 * The child of a clone() that copies the memory and the fds (shim/vfork.c),
 * which glibc runs no handler for: it starts no thread.
 */
void shim_clone_child(void)
{
	atomic_store(&rt_threadless, true);
	child_common();
	stats_fork_child(false);
}

/* glibc set the child of fork() up as a process of its own: it may start threads */
static void fork_child(void)
{
	atomic_store(&rt_threadless, false);
	child_common();
}

/*
 * Sockets the process inherited across exec (inetd, socket activation, a
 * forking server that execs its handler): listeners and unconnected TCP
 * sockets are marked so accept() knows them; connections are adopted.
 */
static void adopt_inherited(void)
{
	DIR *d = opendir("/proc/self/fd");
	struct dirent *e;

	if (!d)
		return;
	while ((e = readdir(d))) {
		int fd = atoi(e->d_name), v = 0;
		socklen_t l = sizeof(v);
		struct tcp_info ti;
		socklen_t tl = sizeof(ti);
		struct stat st;

		if (e->d_name[0] == '.' || fd == dirfd(d) || fstat(fd, &st) < 0 ||
		    !S_ISSOCK(st.st_mode))
			continue;
		if (getsockopt(fd, SOL_SOCKET, SO_PROTOCOL, &v, &l) < 0 || v != IPPROTO_TCP)
			continue;
		if (getsockopt(fd, SOL_SOCKET, SO_DOMAIN, &v, &l) < 0 ||
		    (v != AF_INET && v != AF_INET6))
			continue;
		if (getsockopt(fd, IPPROTO_TCP, TCP_INFO, &ti, &tl) < 0)
			continue;
		if (ti.tcpi_state == TW_LISTEN || ti.tcpi_state == TW_CLOSE)
			fdtab_set(fd, conn_probe_mark(fd));
		else
			conn_adopt(fd);
	}
	closedir(d);
}

/* The load bias of the loaded object called name (as the loader lists it). */
static bool load_bias(const char *name, ElfW(Addr) *out)
{
	struct link_map *lm = NULL;
	void *h = dlopen(name, RTLD_LAZY | RTLD_NOLOAD);
	bool ok;

	if (!h)
		return false;
	ok = dlinfo(h, RTLD_DI_LINKMAP, &lm) == 0 && lm;
	if (ok)
		*out = lm->l_addr;
	dlclose(h);
	return ok;
}

/* Is sym, looked up from handle h, defined in the object loaded at addr itself? */
static bool defines(void *h, const char *sym, ElfW(Addr) addr)
{
	void *p = dlsym(h, sym);
	Dl_info di;

	return p && dladdr(p, &di) && (ElfW(Addr))di.dli_fbase == addr;
}

/*
 * Does the object loaded at addr define, itself (not through a dependency),
 * the names that make up a copy of this library? Those that no C library,
 * sanitizer runtime or other interposer defines all together without also
 * defining write().
 */
static bool object_is_twshim(const char *name, ElfW(Addr) addr)
{
	static const char *const marks[] = { "close", "closefrom", "fexecve", "_Exit",
					     "setsockopt", "sendmsg" };
	ElfW(Addr) bias;
	bool ok;
	void *h;

	if (!name || !*name || !load_bias(name, &bias) || bias != addr)
		return false;
	h = dlopen(name, RTLD_LAZY | RTLD_NOLOAD);
	if (!h)
		return false;
	ok = !defines(h, "write", addr);
	for (size_t i = 0; ok && i < sizeof(marks) / sizeof(marks[0]); i++)
		ok = defines(h, marks[i], addr);
	dlclose(h);
	return ok;
}

struct copies {
	ElfW(Addr) self;
	bool other_first;	/* another copy comes before this one */
	bool done;
};

static int copy_cb(struct dl_phdr_info *info, size_t size, void *arg)
{
	struct copies *k = arg;

	(void)size;
	if (info->dlpi_addr == k->self) {
		k->done = true;
		return 1;
	}
	if (object_is_twshim(info->dlpi_name, info->dlpi_addr)) {
		k->other_first = true;
		return 1;
	}
	return 0;
}

/*
 * Two copies of the library in one process (one preloaded system-wide, one
 * from `twshim run` out of a build tree): the program's calls go through
 * both, and each would apply its policy and write its record. Only the copy
 * first in the loader's list, which is the order in which symbols are
 * looked up, acts; any later one passes every call through.
 */
static bool another_copy_first(void)
{
	struct copies k = { 0 };
	Dl_info di;

	if (!dladdr((void *)another_copy_first, &di))
		return false;
	if (!load_bias(di.dli_fname, &k.self))
		return false;
	dl_iterate_phdr(copy_cb, &k);
	return k.other_first;
}

/*
 * The process name for records, rules and %n in a log path: the program's
 * basename as it was started. In secure-execution mode whoever started it
 * chose argv[0] (`nginx`, `..`), so the name comes from the executable the
 * kernel ran instead (/proc/self/exe); "" when that cannot be read, which
 * refuses any log path holding %n.
 */
static void comm_init(bool secure)
{
	char exe[TW_PATH_MAX];
	const char *base;
	ssize_t n;

	if (!secure) {
		strncpy(rt.comm, program_invocation_short_name, TW_COMM_MAX);
		return;
	}
	rt.comm[0] = 0;
	n = readlink("/proc/self/exe", exe, sizeof(exe) - 1);
	if (n <= 0)
		return;
	exe[n] = 0;
	/* an executable deleted since it started reads "path (deleted)" */
	if (n > 10 && !strcmp(exe + n - 10, " (deleted)"))
		exe[n - 10] = 0;
	base = strrchr(exe, '/');
	base = base ? base + 1 : exe;
	n = (ssize_t)strnlen(base, TW_COMM_MAX);
	memcpy(rt.comm, base, (size_t)n);
	rt.comm[n] = 0;
}

/*
 * Reads the settings and, when some connection may be recorded or closed
 * otherwise than normally, turns tracking on. A setting that does not parse
 * leaves the program's sockets untouched, after one line on stderr.
 */
__attribute__((constructor)) static void shim_init(void)
{
	bool secure = getauxval(AT_SECURE) != 0;
	char err[512];
	struct conf *c = NULL;
	int r;

	shim_symbols();
	if (another_copy_first()) {
		diag_init(secure ? NULL : getenv(TW_ENV_DEBUG));
		SHIM_DBG("another copy of twshim is active here; this one passes through");
		return;
	}
	rt.pid = (int)syscall(SYS_getpid);
	comm_init(secure);
	diag_init(secure ? NULL : getenv(TW_ENV_DEBUG));
	err[0] = 0;
	r = conf_load_env(&c, rt.comm, secure, err, sizeof(err));
	if (r < 0) {
		SHIM_ERR("%s; twshim changes nothing in this process", err[0] ? err : strerror(-r));
		return;
	}
	rt.conf = c;
	rt.reuseaddr = conf_reuseaddr(c);
	pthread_atfork(shim_fork_prepare, shim_fork_parent, fork_child);
	if (!conf_tracking(c))
		return;
	r = conn_slots_init();
	if (r < 0) {
		SHIM_ERR("cannot reserve connection slots: %s; connections are not tracked",
			 strerror(-r));
		return;
	}
	shared_init();
	sink_open_all(c);
	adopt_inherited();
	rt.tracking = true;
	SHIM_DBG("tracking connections of %s", rt.comm);
}
