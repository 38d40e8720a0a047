// SPDX-License-Identifier: MIT
/*
 * epoll_create() and epoll_create1(): the program's epoll instances are
 * noted, so that a socket it closes and the library keeps (defer, abort)
 * leaves them as the close would have made it (conn.c, unwatch()).
 */
#include <errno.h>
#include <sys/epoll.h>

#include "runtime.h"
#include "shim.h"

static int noted(int epfd)
{
	int saved = errno;

	if (epfd >= 0 && rt.tracking)
		conn_note_epoll(epfd);
	errno = saved;
	return epfd;
}

SHIM_EXPORT int epoll_create(int size)
{
	return noted(REAL(epoll_create)(size));
}

SHIM_EXPORT int epoll_create1(int flags)
{
	return noted(REAL(epoll_create1)(flags));
}
