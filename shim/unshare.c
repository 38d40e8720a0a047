// SPDX-License-Identifier: MIT
/*
 * unshare() and setns(): the kernel refuses a new or another user namespace
 * (and setns into a mount namespace) to a process with more than one thread
 * (EINVAL, unshare(2), setns(2)). The closer thread is the library's, not
 * the program's: it steps aside for the call and comes back after it. So
 * it does for CLONE_FILES, whose table it shares.
 */
#include <errno.h>
#include <sched.h>

#include "runtime.h"
#include "shim.h"

/* unshare(2): CLONE_NEWUSER implies CLONE_THREAD; these need a single thread */
#define ONE_THREAD_UNSHARE	(CLONE_NEWUSER | CLONE_THREAD | CLONE_SIGHAND | CLONE_VM)

/* Calls fn(a, b) with the closer stopped when need says so; libc's result and errno. */
static int alone(int (*fn)(int, int), int a, int b, bool need)
{
	bool paused = need && closer_pause();
	int r, saved;

	r = fn(a, b);
	saved = errno;
	if (paused)
		closer_resume();
	errno = saved;
	return r;
}

static int call_unshare(int flags, int unused)
{
	(void)unused;
	return REAL(unshare)(flags);
}

static int call_setns(int fd, int nstype)
{
	return REAL(setns)(fd, nstype);
}

/*
 * CLONE_FILES gives the caller a table of its own when another thread
 * shares it. With the closer the only other one, the closer steps aside:
 * the table is then not shared, and stays the one the library's fds and
 * the program's are in (a copy made under the closer would keep every
 * deferred socket open in the caller's table, and take the program's later
 * copies where the closer cannot see them). With other threads of the
 * program, the closer stays with them (README, Limits).
 */
SHIM_EXPORT int unshare(int flags)
{
	bool files = (flags & CLONE_FILES) && rt.tracking && !rt_foreign() && closer_running() &&
		     rt_table_alone();

	return alone(call_unshare, flags, 0, (flags & ONE_THREAD_UNSHARE) || files);
}

/* nstype 0 (any) or a pidfd's flags may name a user or mount namespace */
SHIM_EXPORT int setns(int fd, int nstype)
{
	return alone(call_setns, fd, nstype,
		     !nstype || (nstype & (CLONE_NEWUSER | CLONE_NEWNS)) != 0);
}
