// SPDX-License-Identifier: MIT
/* accept() and accept4(): an accepted TCP connection is a tracked server connection. */
#include <errno.h>
#include <string.h>
#include <netinet/in.h>

#include "runtime.h"
#include "shim.h"

/*
 * Is the listener TCP? Sockets made by socket() are marked; one inherited
 * from elsewhere (socket activation, an exec'ing parent) is asked once and
 * the answer kept in the table.
 */
static bool listener_is_tcp(int fd)
{
	uint32_t v = fdtab_get(fd);
	int proto = 0, dom = 0;
	socklen_t l = sizeof(proto);

	if (v == FDT_TCP)
		return true;
	if (v != FDT_NONE)
		return false;
	if (getsockopt(fd, SOL_SOCKET, SO_PROTOCOL, &proto, &l) == 0 &&
	    getsockopt(fd, SOL_SOCKET, SO_DOMAIN, &dom, &l) == 0 &&
	    proto == IPPROTO_TCP && (dom == AF_INET || dom == AF_INET6)) {
		fdtab_set(fd, FDT_TCP);
		return true;
	}
	fdtab_set(fd, FDT_OTHER);
	return false;
}

/*
 * accept4 with flags kept as the program gave them. The peer's address is
 * needed even when the program passes none, so accept always gets our buffer
 * and the program's is filled as accept(2) would: truncated to its length,
 * with the real length returned.
 */
static int shim_accept4(int lfd, struct sockaddr *addr, socklen_t *len, int flags, bool four)
{
	struct sockaddr_storage ss;
	socklen_t sl = sizeof(ss);
	int fd, saved;

	if (!rt.tracking)
		return four ? REAL(accept4)(lfd, addr, len, flags) : REAL(accept)(lfd, addr, len);
	fd = four ? REAL(accept4)(lfd, (struct sockaddr *)&ss, &sl, flags) :
		    REAL(accept)(lfd, (struct sockaddr *)&ss, &sl);
	if (fd < 0)
		return fd;
	saved = errno;
	if (addr && len) {
		memcpy(addr, &ss, sl < *len ? sl : *len);
		*len = sl;
	}
	if (listener_is_tcp(lfd))
		conn_open(fd, TW_ROLE_SERVER, (struct sockaddr *)&ss, sl);
	else
		fdtab_set(fd, FDT_NONE);
	errno = saved;
	return fd;
}

SHIM_EXPORT int accept(int fd, struct sockaddr *addr, socklen_t *len)
{
	return shim_accept4(fd, addr, len, 0, false);
}

SHIM_EXPORT int accept4(int fd, struct sockaddr *addr, socklen_t *len, int flags)
{
	return shim_accept4(fd, addr, len, flags, true);
}
