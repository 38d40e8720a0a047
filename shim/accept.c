// SPDX-License-Identifier: MIT
/* accept() and accept4(): an accepted TCP connection is a tracked server connection. */
#include <errno.h>
#include <string.h>
#include <netinet/in.h>

#include "runtime.h"
#include "shim.h"

/*
 * The listener's mark: FDT_TCP with the options its connections inherit, or
 * something else when it is no TCP socket. Sockets made by socket() are
 * marked; one inherited from elsewhere (socket activation, an exec'ing
 * parent) is asked once and the answer kept in the table.
 */
static uint32_t listener_mark(int fd)
{
	uint32_t v = fdtab_get(fd);
	int proto = 0, dom = 0;
	socklen_t l = sizeof(proto);

	if (v != FDT_NONE)
		return v;
	if (getsockopt(fd, SOL_SOCKET, SO_PROTOCOL, &proto, &l) == 0 &&
	    getsockopt(fd, SOL_SOCKET, SO_DOMAIN, &dom, &l) == 0 &&
	    proto == IPPROTO_TCP && (dom == AF_INET || dom == AF_INET6))
		v = conn_probe_mark(fd);
	else
		v = FDT_OTHER;
	fdtab_set(fd, v);
	return v;
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
	uint32_t mark;

	/*
	 * An address buffer without its length, or with a negative one (an
	 * uninitialized variable): the kernel fails the call with EFAULT or
	 * EINVAL, after taking the connection off the queue and closing it.
	 * The program must see exactly that, not a connection.
	 */
	if (!rt.tracking || (addr && (!len || (int)*len < 0)))
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
	mark = listener_mark(lfd);
	if (fdt_is_tcp(mark))
		conn_open(fd, mark, TW_ROLE_SERVER, (struct sockaddr *)&ss, sl, true);
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
