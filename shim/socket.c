// SPDX-License-Identifier: MIT
/* socket(): SO_REUSEADDR on new TCP sockets, and marking them for connect/accept. */
#include <errno.h>
#include <netinet/in.h>

#include "runtime.h"
#include "shim.h"

static bool is_tcp(int domain, int type, int protocol)
{
	/* SOCK_NONBLOCK and SOCK_CLOEXEC ride in type: mask them off */
	type &= ~(SOCK_NONBLOCK | SOCK_CLOEXEC);
	return (domain == AF_INET || domain == AF_INET6) && type == SOCK_STREAM &&
	       (protocol == 0 || protocol == IPPROTO_TCP);
}

/*
 * A new TCP socket gets SO_REUSEADDR before the program can bind it, and a
 * mark in the table so that connect() and accept() know it is TCP without
 * asking the kernel.
 */
static int shim_socket(int domain, int type, int protocol)
{
	bool tcp = is_tcp(domain, type, protocol);
	int fd, saved, one = 1;

	if (!tcp || !rt.tracking) {
		fd = REAL(socket)(domain, type, protocol);
	} else {
		/* made and marked as one step for fork(): a child gets it marked */
		conn_socket_begin();
		fd = REAL(socket)(domain, type, protocol);
		saved = errno;
		conn_socket_end(fd, true);
		errno = saved;
	}
	if (fd < 0 || !tcp)
		return fd;
	saved = errno;
	if (rt.reuseaddr)
		REAL(setsockopt)(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	errno = saved;
	return fd;
}

SHIM_EXPORT int socket(int domain, int type, int protocol)
{
	return shim_socket(domain, type, protocol);
}
