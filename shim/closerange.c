// SPDX-License-Identifier: MIT
/*
 * close_range() and closefrom(): programs that close every fd they did not
 * open (ssh, daemons) end their connections this way, and must not end the
 * library's.
 */
#include <errno.h>
#include <linux/close_range.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "runtime.h"
#include "shim.h"

static int op_close(int fd, void *arg)
{
	(void)arg;
	return (int)syscall(SYS_close, fd);
}

static int raw_close_range(unsigned first, unsigned last, int flags)
{
	return (int)syscall(SYS_close_range, first, last, flags);
}

/*
 * Does the call close fds of this process's table? Not with
 * CLOSE_RANGE_CLOEXEC (it marks them), nor with flags the kernel does not
 * know or first > last (EINVAL before anything). CLOSE_RANGE_UNSHARE first
 * gives the caller a table of its own when another thread, or a child made
 * with CLONE_FILES, shares it (__close_range(), unshare_fd()), and closes
 * there: the others keep the connections.
 */
static bool closes_nothing(unsigned first, unsigned last, int flags)
{
	return first > last || (flags & ~(CLOSE_RANGE_UNSHARE | CLOSE_RANGE_CLOEXEC)) ||
	       (flags & CLOSE_RANGE_CLOEXEC);
}

/*
 * Ends each tracked connection in [first, last] on its own (recorded with
 * via), then lets the kernel close the rest in runs that skip the library's
 * own fds. A call that closes none of them passes straight through.
 */
static int close_in_place(unsigned first, unsigned last, int flags, enum tw_via via)
{
	int (*fn)(unsigned, unsigned, int) = real.close_range ? real.close_range : raw_close_range;
	unsigned hi = (unsigned)atomic_load(&fdtab_hi), from = first;
	/* up to the highest fd the table knows: the whole table is 4 MiB to fault in */
	unsigned top = last < hi ? last : hi;
	int r = 0, saved = errno;

	if (!rt.tracking || closes_nothing(first, last, flags))
		return fn(first, last, flags);
	for (unsigned fd = first; fd <= top && fd >= first; fd++) {
		uint32_t v = fdtab_get((int)fd);

		if (v == FDT_NONE)
			continue;
		if (fdt_is_lib(v)) {
			if (fd > from && fn(from, fd - 1, flags) < 0)
				return -1;
			from = fd + 1;
			continue;
		}
		conn_release((int)fd, via, op_close, NULL);
	}
	if (from <= last && from >= first)
		r = fn(from, last, flags);
	if (r == 0)
		errno = saved;
	return r;
}

/*
 * With CLOSE_RANGE_UNSHARE, the library's closer thread, which shares the
 * table, steps aside (as for unshare()): a program with one thread then
 * closes in place, as without the library. One whose other threads (or a
 * CLONE_FILES child) share it closes in a table of the caller's own: the
 * connections stay open for the rest, and the table describes theirs. A
 * vfork child's table is its own already.
 */
static int shim_close_range(unsigned first, unsigned last, int flags, enum tw_via via)
{
	int (*fn)(unsigned, unsigned, int) = real.close_range ? real.close_range : raw_close_range;
	bool paused, gone;
	int r, saved;

	if (!rt.tracking || !(flags & CLOSE_RANGE_UNSHARE) || closes_nothing(first, last, flags) ||
	    rt_foreign())
		return close_in_place(first, last, flags, via);
	if (atomic_load(&rt_cloned))
		return fn(first, last, flags);
	paused = closer_pause();
	if (rt_threads(&gone) == 1)
		r = close_in_place(first, last, flags, via);
	else
		r = fn(first, last, flags);
	saved = errno;
	if (paused)
		closer_resume();
	errno = saved;
	return r;
}

SHIM_EXPORT int close_range(unsigned first, unsigned last, int flags)
{
	return shim_close_range(first, last, flags, TW_VIA_CLOSE_RANGE);
}

SHIM_EXPORT void closefrom(int lowfd)
{
	if (lowfd < 0)
		lowfd = 0;
	shim_close_range((unsigned)lowfd, ~0u, 0, TW_VIA_CLOSEFROM);
}
