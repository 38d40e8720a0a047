// SPDX-License-Identifier: MIT
/*
 * setsockopt() and sendmsg(): the ways a program changes how a connection
 * ends without closing it: SO_LINGER {1,0} (its close will reset, on the
 * socket itself or on a listener whose connections inherit it), SO_PEEK_OFF
 * (a peek at close may skip unread data), and SCM_RIGHTS (another process
 * will hold it).
 */
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdatomic.h>
#include <sys/socket.h>

#include "runtime.h"
#include "shim.h"

/*
 * A connect() of a socket with TCP_FASTOPEN_CONNECT returns 0 before the
 * handshake (the SYN goes with the first write): from then on, a connect
 * that returned 0 is not taken to mean ESTABLISHED in this process.
 */
_Atomic bool shim_fastopen;

static int shim_setsockopt(int fd, int level, int name, const void *val, socklen_t len)
{
	int r = REAL(setsockopt)(fd, level, name, val, len), saved = errno;

	if (r == 0 && rt.tracking && level == SOL_SOCKET &&
	    (name == SO_LINGER || name == SO_PEEK_OFF)) {
		conn_note_sockopt(fd, name, val, len);
		errno = saved;
	}
	if (r == 0 && level == IPPROTO_TCP && name == TCP_FASTOPEN_CONNECT)
		atomic_store(&shim_fastopen, true);
	return r;
}

/*
 * Sockets passed away with SCM_RIGHTS get a second holder the library
 * cannot see. The control data is read only after the kernel took it: a
 * message it refuses (a bad pointer, a bad length) fails as it would,
 * and sends nothing.
 */
static ssize_t shim_sendmsg(int fd, const struct msghdr *msg, int flags)
{
	ssize_t r = REAL(sendmsg)(fd, msg, flags);
	int saved = errno;

	if (r < 0 || !rt.tracking || !msg->msg_controllen)
		return r;
	for (struct cmsghdr *c = CMSG_FIRSTHDR(msg); c; c = CMSG_NXTHDR((struct msghdr *)msg, c)) {
		size_t n;

		if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS)
			continue;
		n = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
		for (size_t i = 0; i < n; i++) {
			int sent;

			__builtin_memcpy(&sent, CMSG_DATA(c) + i * sizeof(int), sizeof(int));
			conn_note_sent(sent);
		}
	}
	errno = saved;
	return r;
}

SHIM_EXPORT int setsockopt(int fd, int level, int name, const void *val, socklen_t len)
{
	return shim_setsockopt(fd, level, name, val, len);
}

SHIM_EXPORT ssize_t sendmsg(int fd, const struct msghdr *msg, int flags)
{
	return shim_sendmsg(fd, msg, flags);
}
