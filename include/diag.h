/* SPDX-License-Identifier: MIT */
/*
 * sock_diag (NETLINK_SOCK_DIAG, inet_diag) through libmnl: one socket looked
 * up by 4-tuple and cookie, or all TCP sockets in some states dumped.
 */
#ifndef TWSHIM_DIAG_H
#define TWSHIM_DIAG_H

#include <stdint.h>

#include "addr.h"

struct diag_sock {
	int family;		/* AF_INET or AF_INET6 as the kernel reports it */
	struct tw_addr local, remote;
	uint8_t state;		/* enum tw_tcp_state */
	uint32_t inode;		/* 0: no file refers to it (orphan, TIME_WAIT) */
	uint32_t uid;
	uint32_t expires_ms;	/* TIME_WAIT: time left */
	uint64_t cookie;
};

/* a cookie that matches any socket (the kernel's INET_DIAG_NOCOOKIE) */
#define DIAG_ANY_COOKIE	UINT64_MAX

/*
 * Looks up the TCP socket with this 4-tuple and cookie (DIAG_ANY_COOKIE: the
 * one socket the kernel finds for the 4-tuple, a TIME_WAIT one included). Returns 1 and fills
 * *out when the kernel has it, 0 when it has not (gone, or another socket now
 * holds the 4-tuple), -errno when the query failed. Async-signal-safe: one
 * netlink socket opened and closed with raw syscalls, buffers on the stack.
 */
int diag_lookup(const struct tw_addr *local, const struct tw_addr *remote, uint64_t cookie,
		struct diag_sock *out);
/*
 * The same on a netlink socket the caller keeps (diag_socket()), for
 * answers tagged seq; after a negative return the socket should be dropped.
 */
int diag_lookup_on(int fd, uint32_t seq, const struct tw_addr *local,
		   const struct tw_addr *remote, uint64_t cookie, struct diag_sock *out);
/* a NETLINK_SOCK_DIAG socket (raw syscall, close-on-exec), or -errno */
int diag_socket(void);
/*
 * Calls cb for every TCP socket (IPv4 and IPv6) of this network namespace
 * whose state bit (1 << state) is in states. cb returns 0 to go on. Returns
 * 0 or -errno.
 */
int diag_dump(uint32_t states, int (*cb)(const struct diag_sock *s, void *arg), void *arg);
/* count of TIME_WAIT sockets in this network namespace, or -errno */
long diag_count_timewait(void);

#endif
