// SPDX-License-Identifier: MIT
/*
 * setrlimit() and prlimit(): the record writer reads RLIMIT_FSIZE once a
 * second, and writes without guarding against SIGXFSZ while it is
 * unlimited. A program that lowers its own limit has it read again at
 * once: the next record past it is dropped, not the program killed. So is
 * RLIMIT_NOFILE, which the library's copies of deferred sockets stay above
 * (libfd_dup()).
 */
#include <errno.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "runtime.h"
#include "shim.h"

_Static_assert(sizeof(struct rlimit) == sizeof(struct rlimit64), "one layout for both");

/*
 * A sanitizer's runtime sets its limits before it has set itself up: no
 * access here may be instrumented (an instrumented load then faults).
 */
#define UNINSTRUMENTED __attribute__((no_sanitize("address", "thread")))

UNINSTRUMENTED static int set(long r, int resource)
{
	int saved = errno;

	if (r == 0 && resource == RLIMIT_FSIZE && rt.tracking)
		sink_fsize_refresh();
	if (r == 0 && resource == RLIMIT_NOFILE && rt.tracking)
		libfd_limit_changed();
	errno = saved;
	return (int)r;
}

/*
 * By the system call, as glibc makes them (prlimit64, struct rlimit and
 * struct rlimit64 the same on 64-bit): nothing to resolve with dlsym(),
 * which would crash a sanitizer's runtime setting its limits.
 */
UNINSTRUMENTED SHIM_EXPORT int setrlimit(__rlimit_resource_t resource,
					 const struct rlimit *rl)
{
	return set(syscall(SYS_prlimit64, 0, resource, rl, NULL), resource);
}

UNINSTRUMENTED SHIM_EXPORT int setrlimit64(__rlimit_resource_t resource,
					   const struct rlimit64 *rl)
{
	return set(syscall(SYS_prlimit64, 0, resource, rl, NULL), resource);
}

UNINSTRUMENTED SHIM_EXPORT int prlimit(pid_t pid, __rlimit_resource_t resource,
				       const struct rlimit *rl, struct rlimit *old)
{
	return set(syscall(SYS_prlimit64, pid, resource, rl, old), resource);
}

UNINSTRUMENTED SHIM_EXPORT int prlimit64(pid_t pid, __rlimit_resource_t resource,
					 const struct rlimit64 *rl, struct rlimit64 *old)
{
	return set(syscall(SYS_prlimit64, pid, resource, rl, old), resource);
}
