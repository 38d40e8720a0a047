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
 * Ends each tracked connection in [first, last] on its own (recorded with
 * via), then lets the kernel close the rest in runs that skip the library's
 * own fds. CLOSE_RANGE_CLOEXEC closes nothing and passes straight through.
 */
static int shim_close_range(unsigned first, unsigned last, int flags, enum tw_via via)
{
	int (*fn)(unsigned, unsigned, int) = real.close_range ? real.close_range : raw_close_range;
	unsigned hi = (unsigned)atomic_load(&fdtab_hi), from = first;
	/* up to the highest fd the table knows: the whole table is 4 MiB to fault in */
	unsigned top = last < hi ? last : hi;
	int r = 0, saved = errno;

	if (!rt.tracking || (flags & CLOSE_RANGE_CLOEXEC) || first > last)
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
