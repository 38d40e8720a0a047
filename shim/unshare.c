// SPDX-License-Identifier: MIT
/*
 * unshare() and setns(): the kernel refuses a new or another user namespace
 * (and setns into a mount namespace) to a process with more than one thread
 * (EINVAL, unshare(2), setns(2)). The closer thread is the library's, not
 * the program's: it steps aside for the call and comes back after it.
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

SHIM_EXPORT int unshare(int flags)
{
	return alone(call_unshare, flags, 0, (flags & ONE_THREAD_UNSHARE) != 0);
}

/* nstype 0 (any) or a pidfd's flags may name a user or mount namespace */
SHIM_EXPORT int setns(int fd, int nstype)
{
	return alone(call_setns, fd, nstype,
		     !nstype || (nstype & (CLONE_NEWUSER | CLONE_NEWNS)) != 0);
}
