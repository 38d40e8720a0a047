/* SPDX-License-Identifier: MIT */
/*
 * One endpoint of a TCP connection, IPv4 kept as IPv4-mapped IPv6 so that one
 * comparison serves both families.
 */
#ifndef TWSHIM_ADDR_H
#define TWSHIM_ADDR_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

struct tw_addr {
	uint8_t a[16];		/* network order; IPv4 as ::ffff:a.b.c.d */
	uint16_t port;		/* host order */
};

/* longest text addr_format() writes: "[" 45 "]:" 5 and NUL */
#define TW_ADDR_STRLEN	56

/* Fills *out from an AF_INET or AF_INET6 sockaddr; -EAFNOSUPPORT otherwise. */
int addr_from_sockaddr(struct tw_addr *out, const struct sockaddr *sa, socklen_t len);
/*
 * The local (peer false) or remote (peer true) end of socket fd, by raw
 * getsockname()/getpeername(): 0, or -errno (-EAFNOSUPPORT: not IP).
 */
int addr_of_fd(struct tw_addr *out, int fd, bool peer);
/* Writes a sockaddr_in6 (AF_INET6, mapped for IPv4) for *a; returns its length. */
socklen_t addr_to_sockaddr6(const struct tw_addr *a, struct sockaddr_storage *ss);
bool addr_is_v4(const struct tw_addr *a);
/*
 * "1.2.3.4:80" for IPv4 and IPv4-mapped addresses, "[2001:db8::1]:80" for the
 * rest (RFC 5952 text). Returns the length written; buf holds at least
 * TW_ADDR_STRLEN bytes. Async-signal-safe: no locale, no stdio.
 */
size_t addr_format(char *buf, const struct tw_addr *a);

#endif
