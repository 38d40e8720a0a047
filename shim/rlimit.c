// SPDX-License-Identifier: MIT
/*
 * setrlimit() and prlimit(): the record writer reads RLIMIT_FSIZE once a
 * second, and writes without guarding against SIGXFSZ while it is
 * unlimited. A program that lowers its own limit has it read again at
 * once: the next record past it is dropped, not the program killed.
 */
#include <errno.h>
#include <sys/resource.h>

#include "runtime.h"
#include "shim.h"

static int set(int r, int resource)
{
	int saved = errno;

	if (r == 0 && resource == RLIMIT_FSIZE && rt.tracking)
		sink_fsize_refresh();
	errno = saved;
	return r;
}

SHIM_EXPORT int setrlimit(__rlimit_resource_t resource, const struct rlimit *rl)
{
	return set(REAL(setrlimit)(resource, rl), resource);
}

SHIM_EXPORT int setrlimit64(__rlimit_resource_t resource, const struct rlimit64 *rl)
{
	return set(REAL(setrlimit64)(resource, rl), resource);
}

SHIM_EXPORT int prlimit(pid_t pid, __rlimit_resource_t resource, const struct rlimit *rl,
			struct rlimit *old)
{
	return set(REAL(prlimit)(pid, resource, rl, old), resource);
}

SHIM_EXPORT int prlimit64(pid_t pid, __rlimit_resource_t resource, const struct rlimit64 *rl,
			  struct rlimit64 *old)
{
	return set(REAL(prlimit64)(pid, resource, rl, old), resource);
}
