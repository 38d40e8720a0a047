// SPDX-License-Identifier: MIT
/*
 * connect(): a TCP socket that connects becomes a tracked client connection;
 * and the library is never the cause of a connect that fails for want of a
 * local port.
 */
#include <errno.h>
#include <netinet/in.h>

#include "decide.h"
#include "runtime.h"
#include "shim.h"

/* a failed connect looks again this often while it waits for a port */
#define RETRY_NS	2000000u

static uint16_t local_port(int fd)
{
	struct tw_addr a;

	if (addr_of_fd(&a, fd, false) < 0)
		return 1;	/* unknown: not ours to wait for */
	return a.port;
}

/*
 * connect() failed with EADDRNOTAVAIL: no local port was free. While this
 * process holds deferred connections, their ports may be the ones lacking:
 * it waits for them to end (at most the defer_ms this connection's policy
 * has) and connects again. Not for a socket the program bound itself. What
 * the program sees is what a connect would have shown with the port free
 * (0, or EINPROGRESS when non-blocking), else the EADDRNOTAVAIL it had.
 */
static int connect_wait(int fd, const struct sockaddr *addr, socklen_t len, bool *waited)
{
	struct observed o = { .who = WHO_CONNECT };
	struct tw_policy pol;
	struct tw_addr to;
	uint64_t until, now;
	int r;

	if (addr_from_sockaddr(&to, addr, len) < 0 || local_port(fd) != 0)
		goto fail;
	conf_resolve(rt.conf, TW_ROLE_CLIENT, addr, len, to.port, rnd_next(), &pol);
	o.mode = pol.close;
	until = clock_mono_ns() + (uint64_t)pol.defer_ms * 1000000u;
	for (;;) {
		o.waiting = closer_count() > 0;
		now = clock_mono_ns();
		if (decide(&o).act != DO_RETRY || now >= until)
			break;
		closer_wait_end(now + RETRY_NS < until ? now + RETRY_NS : until);
		*waited = true;
		r = REAL(connect)(fd, addr, len);
		if (r == 0 || errno != EADDRNOTAVAIL)
			return r;
	}
fail:
	errno = EADDRNOTAVAIL;
	return -1;
}

/*
 * Tracks the connection once connect() succeeded or is under way
 * (EINPROGRESS on a non-blocking socket; EINTR, where the kernel carries on
 * in the background). A connection that later fails is recorded as `reset`.
 */
static int shim_connect(int fd, const struct sockaddr *addr, socklen_t len)
{
	int r = REAL(connect)(fd, addr, len), saved = errno;
	uint32_t mark = fdtab_get(fd);
	bool waited = false;

	/* the kernel read addr for these (a failure before may be a bad pointer) */
	if (!rt.tracking || !fdt_is_tcp(mark) || !addr ||
	    (r < 0 && saved != EADDRNOTAVAIL && saved != EINPROGRESS && saved != EINTR) ||
	    (addr->sa_family != AF_INET && addr->sa_family != AF_INET6))
		return r;
	if (r < 0 && saved == EADDRNOTAVAIL && closer_count()) {
		r = connect_wait(fd, addr, len, &waited);
		saved = errno;
	}
	if (r == 0 || saved == EINPROGRESS || saved == EINTR) {
		conn_open(fd, mark, TW_ROLE_CLIENT, addr, len,
			  r == 0 && !atomic_load(&shim_fastopen));
		mark = fdtab_get(fd);
		if (waited && fdt_is_conn(mark))
			conn_at(fdt_index(mark))->waited = 1;
	}
	errno = saved;
	return r;
}

SHIM_EXPORT int connect(int fd, const struct sockaddr *addr, socklen_t len)
{
	return shim_connect(fd, addr, len);
}
