// SPDX-License-Identifier: MIT
/* connect(): a TCP socket that connects becomes a tracked client connection. */
#include <errno.h>

#include "runtime.h"
#include "shim.h"

/*
 * Tracks the connection once connect() succeeded or is under way
 * (EINPROGRESS on a non-blocking socket; EINTR, where the kernel carries on
 * in the background). A connection that later fails is recorded as `reset`.
 */
static int shim_connect(int fd, const struct sockaddr *addr, socklen_t len)
{
	int r = REAL(connect)(fd, addr, len), saved = errno;
	uint32_t mark = fdtab_get(fd);

	if (!rt.tracking || !fdt_is_tcp(mark) || !addr ||
	    (addr->sa_family != AF_INET && addr->sa_family != AF_INET6))
		return r;
	if (r == 0 || errno == EINPROGRESS || errno == EINTR) {
		conn_open(fd, mark, TW_ROLE_CLIENT, addr, len);
		errno = saved;
	}
	return r;
}

SHIM_EXPORT int connect(int fd, const struct sockaddr *addr, socklen_t len)
{
	return shim_connect(fd, addr, len);
}
