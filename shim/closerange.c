// SPDX-License-Identifier: MIT
/*
 * close_range() and closefrom(): programs that close every fd they did not
 * open (ssh, daemons) end their connections this way, and must not end the
 * library's.
 */
#include <errno.h>
#include <linux/close_range.h>
#include <sys/syscall.h>
#include <time.h>
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
/* up to the highest fd the table knows (the whole table is 4 MiB to fault in) */
static unsigned table_top(unsigned last)
{
	unsigned hi = (unsigned)atomic_load(&fdtab_hi);

	return last < hi ? last : hi;
}

static int close_in_place(unsigned first, unsigned last, int flags, enum tw_via via)
{
	int (*fn)(unsigned, unsigned, int) = real.close_range ? real.close_range : raw_close_range;
	unsigned from = first;
	int r = 0, saved = errno;

	if (!rt.tracking || closes_nothing(first, last, flags))
		return fn(first, last, flags);
	/*
	 * The top is read again at each step: a connection ended on the way
	 * may have left the library a copy (defer), above all the others.
	 */
	for (unsigned fd = first; fd <= table_top(last) && fd >= first; fd++) {
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
 * With CLOSE_RANGE_UNSHARE: in a program with one thread (the library's
 * closer is none of its own), the closer steps aside (as for unshare()),
 * the table is then not shared, and the fds close in place, as without the
 * library. Where the program's other threads (or a CLONE_FILES child) share
 * it, the kernel gives the caller a table of its own and closes there: the
 * others keep the connections, the table describes theirs, and the closer
 * is left alone (restarted from the caller, it would share the caller's
 * table). A vfork child's table is its own already. Without /proc to count
 * threads, the program is taken for one with one.
 */
static int shim_close_range(unsigned first, unsigned last, int flags, enum tw_via via)
{
	int (*fn)(unsigned, unsigned, int) = real.close_range ? real.close_range : raw_close_range;
	int r, saved, e0 = errno;
	bool paused;

	if (!rt.tracking || !(flags & CLOSE_RANGE_UNSHARE) || closes_nothing(first, last, flags) ||
	    rt_foreign())
		return close_in_place(first, last, flags, via);
	if (!rt_table_alone())
		return fn(first, last, flags);
	paused = closer_pause();
	r = close_in_place(first, last, flags, via);
	saved = r == 0 ? e0 : errno;
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
