// SPDX-License-Identifier: MIT
/*
 * Start-up: the real functions, the settings, the fork handlers, and the
 * sockets the process inherited.
 */
#include <dirent.h>
#include <fcntl.h>
#include <dlfcn.h>
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <netinet/in.h>
#include <linux/tcp.h>
#include <sys/auxv.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>

#include "config.h"
#include "diagmsg.h"
#include "runtime.h"
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
	BIND(_exit, true);
	BIND(_Exit, true);
	BIND(setsockopt, true);
	BIND(sendmsg, true);
	BIND(execve, true);
	BIND(execv, true);
	BIND(execvp, true);
	BIND(execvpe, true);
	BIND(fexecve, true);
	BIND(close, true);
}

void shim_symbols(void)
{
	pthread_once(&symbols_once, bind_all);
}

/*
 * The table first: no change of it may be under way when the closer's locks
 * are taken (a connect starting the closer holds its start lock).
 */
static void fork_prepare(void)
{
	conn_fork_prepare();
	closer_fork_prepare();
}

static void fork_parent(void)
{
	/* every connection open now may have a second holder: the child */
	atomic_fetch_add(&rt.forkgen, 1);
	closer_fork_parent();
	conn_fork_parent();
}

static void fork_child(void)
{
	rt.pid = (int)syscall(SYS_getpid);
	rt.forked = true;
	atomic_fetch_add(&rt.forkgen, 1);
	conn_fork_child();
	closer_fork_child();
	sink_fork_child();
	rnd_fork_child();
	if (rt.conf)
		conf_reseed(rt.conf, rnd_next());
}

/*
 * The library's own fds go to the upper half of the fd limit, out of the way
 * of programs that expect low numbers (daemons reopening 0-2, select() users).
 */
static int libfd_base_pick(void)
{
	struct rlimit rl;
	rlim_t base = 64;

	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY &&
	    rl.rlim_cur / 2 > base)
		base = rl.rlim_cur / 2;
	if (base >= TW_FD_MAX)
		base = TW_FD_MAX / 2;
	return (int)base;
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
	rt.pid = (int)syscall(SYS_getpid);
	strncpy(rt.comm, program_invocation_short_name, TW_COMM_MAX);
	diag_init(secure ? NULL : getenv(TW_ENV_DEBUG));
	err[0] = 0;
	r = conf_load_env(&c, rt.comm, secure, err, sizeof(err));
	if (r < 0) {
		SHIM_ERR("%s; twshim changes nothing in this process", err[0] ? err : strerror(-r));
		return;
	}
	rt.conf = c;
	rt.reuseaddr = conf_reuseaddr(c);
	pthread_atfork(fork_prepare, fork_parent, fork_child);
	if (!conf_tracking(c))
		return;
	r = conn_slots_init();
	if (r < 0) {
		SHIM_ERR("cannot reserve connection slots: %s; connections are not tracked",
			 strerror(-r));
		return;
	}
	rt.libfd_base = libfd_base_pick();
	shared_init();
	sink_open_all(c);
	adopt_inherited();
	rt.tracking = true;
	SHIM_DBG("tracking connections of %s", rt.comm);
}
