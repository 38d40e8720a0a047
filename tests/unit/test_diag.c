// SPDX-License-Identifier: MIT
/*
 * sock_diag against sockets this test makes in a network namespace of its
 * own, so that the kernel's list holds exactly them.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <net/if.h>
#include <netinet/in.h>
#include <poll.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <criterion/criterion.h>

#include "addr.h"
#include "defaults.h"
#include "diag.h"
#include "record.h"

#define ALL_STATES	0xfffu

static void write_proc(const char *path, const char *value)
{
	int fd = open(path, O_WRONLY | O_CLOEXEC);

	cr_assert_geq(fd, 0, "%s: %s", path, strerror(errno));
	cr_assert_eq(write(fd, value, strlen(value)), (ssize_t)strlen(value), "%s", path);
	close(fd);
}

/* A network namespace of this test's own, loopback up; skips unless root. */
static void enter_private_netns(void)
{
	struct ifreq ifr;
	int fd;

	if (geteuid() != 0)
		cr_skip_test("needs root for a private network namespace (unshare CLONE_NEWNET)");
	cr_assert_eq(unshare(CLONE_NEWNET), 0, "unshare: %s", strerror(errno));
	fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	cr_assert_geq(fd, 0);
	memset(&ifr, 0, sizeof(ifr));
	strcpy(ifr.ifr_name, "lo");
	cr_assert_eq(ioctl(fd, SIOCGIFFLAGS, &ifr), 0);
	ifr.ifr_flags |= IFF_UP;
	cr_assert_eq(ioctl(fd, SIOCSIFFLAGS, &ifr), 0, "lo up: %s", strerror(errno));
	close(fd);
	write_proc("/proc/sys/net/ipv4/tcp_tw_reuse", "0");
}

static socklen_t loopback(int family, uint16_t port, struct sockaddr_storage *ss)
{
	memset(ss, 0, sizeof(*ss));
	if (family == AF_INET) {
		struct sockaddr_in *sin = (struct sockaddr_in *)ss;

		sin->sin_family = AF_INET;
		sin->sin_port = htons(port);
		sin->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
		return sizeof(*sin);
	}
	struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)ss;

	sin6->sin6_family = AF_INET6;
	sin6->sin6_port = htons(port);
	sin6->sin6_addr = in6addr_loopback;
	return sizeof(*sin6);
}

static int listen_on(int family, uint16_t *port)
{
	struct sockaddr_storage ss;
	socklen_t len = loopback(family, 0, &ss);
	int fd = socket(family, SOCK_STREAM | SOCK_CLOEXEC, 0);

	cr_assert_geq(fd, 0);
	cr_assert_eq(bind(fd, (struct sockaddr *)&ss, len), 0, "bind: %s", strerror(errno));
	cr_assert_eq(listen(fd, 16), 0);
	len = sizeof(ss);
	cr_assert_eq(getsockname(fd, (struct sockaddr *)&ss, &len), 0);
	/* sin_port and sin6_port sit at the same offset */
	*port = ntohs(((struct sockaddr_in *)&ss)->sin_port);
	return fd;
}

/* Connects a client of family to the listener lfd on port; *server gets the accepted end. */
static int connect_pair(int family, int lfd, uint16_t port, int *server)
{
	struct sockaddr_storage ss;
	socklen_t len = loopback(family, port, &ss);
	int fd = socket(family, SOCK_STREAM | SOCK_CLOEXEC, 0);

	cr_assert_geq(fd, 0);
	cr_assert_eq(connect(fd, (struct sockaddr *)&ss, len), 0, "connect: %s", strerror(errno));
	*server = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
	cr_assert_geq(*server, 0);
	return fd;
}

static void endpoints(int fd, struct tw_addr *local, struct tw_addr *remote)
{
	struct sockaddr_storage ss;
	socklen_t len = sizeof(ss);

	cr_assert_eq(getsockname(fd, (struct sockaddr *)&ss, &len), 0);
	cr_assert_eq(addr_from_sockaddr(local, (struct sockaddr *)&ss, len), 0);
	len = sizeof(ss);
	cr_assert_eq(getpeername(fd, (struct sockaddr *)&ss, &len), 0);
	cr_assert_eq(addr_from_sockaddr(remote, (struct sockaddr *)&ss, len), 0);
}

static uint64_t cookie_of(int fd)
{
	uint64_t cookie = 0;
	socklen_t len = sizeof(cookie);

	cr_assert_eq(getsockopt(fd, SOL_SOCKET, SO_COOKIE, &cookie, &len), 0);
	cr_assert_neq(cookie, 0);
	return cookie;
}

/* Closes the client first, lets the server read EOF and close: TIME_WAIT on the client. */
static void client_closes_first(int client, int server)
{
	struct pollfd pfd = { .fd = server, .events = POLLIN };
	char c;

	cr_assert_eq(close(client), 0);
	cr_assert_eq(poll(&pfd, 1, 2000), 1, "server never saw the client's FIN");
	cr_assert_eq(read(server, &c, 1), 0);
	cr_assert_eq(close(server), 0);
}

static void abort_close(int fd)
{
	struct linger lg = { .l_onoff = 1, .l_linger = 0 };

	cr_assert_eq(setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg)), 0);
	cr_assert_eq(close(fd), 0);
}

static const char *state_name(int state)
{
	switch (state) {
	case TW_ESTABLISHED: return "ESTABLISHED";
	case TW_TIME_WAIT: return "TIME_WAIT";
	case TW_LISTEN: return "LISTEN";
	default: return "OTHER";
	}
}

struct seen {
	char line[8][160];
	int n;
};

static int collect(const struct diag_sock *s, void *arg)
{
	struct seen *seen = arg;
	char l[TW_ADDR_STRLEN], r[TW_ADDR_STRLEN];

	addr_format(l, &s->local);
	addr_format(r, &s->remote);
	if (seen->n < 8)
		snprintf(seen->line[seen->n], sizeof(seen->line[0]), "%s %s %s",
			 state_name(s->state), l, r);
	seen->n++;
	return 0;
}

static int cmp_line(const void *a, const void *b)
{
	return strcmp(a, b);
}

/* The kernel's socket list as sorted "STATE local remote" lines. */
static void dump_sorted(struct seen *seen)
{
	memset(seen, 0, sizeof(*seen));
	cr_assert_eq(diag_dump(ALL_STATES, collect, seen), 0);
	cr_assert_leq(seen->n, 8, "more sockets than this test made: %d", seen->n);
	qsort(seen->line, (size_t)seen->n, sizeof(seen->line[0]), cmp_line);
}

static void sleep_ms(long ms)
{
	struct timespec ts = { .tv_sec = ms / 1000, .tv_nsec = (ms % 1000) * 1000000L };

	nanosleep(&ts, NULL);
}

static void fmt(char *buf, const struct tw_addr *a)
{
	addr_format(buf, a);
}

/*
 * Listener, one live pair, one TIME_WAIT made by the client closing first:
 * the dump lists exactly those four sockets.
 */
static void dump_lists_exactly(int family)
{
	char lp[TW_ADDR_STRLEN], c1[TW_ADDR_STRLEN], s1[TW_ADDR_STRLEN], c2[TW_ADDR_STRLEN];
	char any[TW_ADDR_STRLEN], want[4][160];
	struct tw_addr l, r, tw_local;
	struct seen seen;
	uint16_t port;
	int lfd, cfd, sfd, cfd2, sfd2, i, tries;

	enter_private_netns();
	lfd = listen_on(family, &port);
	cfd = connect_pair(family, lfd, port, &sfd);
	cfd2 = connect_pair(family, lfd, port, &sfd2);
	endpoints(cfd2, &tw_local, &r);
	client_closes_first(cfd2, sfd2);

	endpoints(cfd, &l, &r);
	fmt(c1, &l);
	fmt(s1, &r);
	fmt(c2, &tw_local);
	fmt(lp, &r);
	strcpy(any, family == AF_INET ? "0.0.0.0:0" : "[::]:0");
	snprintf(want[0], sizeof(want[0]), "ESTABLISHED %s %s", c1, s1);
	snprintf(want[1], sizeof(want[1]), "ESTABLISHED %s %s", s1, c1);
	snprintf(want[2], sizeof(want[2]), "LISTEN %s %s", lp, any);
	snprintf(want[3], sizeof(want[3]), "TIME_WAIT %s %s", c2, s1);
	qsort(want, 4, sizeof(want[0]), cmp_line);

	/* the server's LAST_ACK goes once the client's ACK is in: wait for it, briefly */
	for (tries = 0; tries < 100; tries++) {
		dump_sorted(&seen);
		if (seen.n == 4)
			break;
		sleep_ms(10);
	}
	cr_assert_eq(seen.n, 4, "kernel lists %d sockets", seen.n);
	for (i = 0; i < 4; i++)
		cr_expect_str_eq(seen.line[i], want[i]);
	cr_expect_eq(diag_count_timewait(), 1);

	close(cfd);
	close(sfd);
	close(lfd);
}

Test(diag, dump_lists_exactly_listener_pair_and_timewait_ipv4)
{
	dump_lists_exactly(AF_INET);
}

Test(diag, dump_lists_exactly_listener_pair_and_timewait_ipv6)
{
	dump_lists_exactly(AF_INET6);
}

struct tw_info {
	uint32_t expires_ms;
	uint32_t inode;
	int n;
};

static int tw_cb(const struct diag_sock *s, void *arg)
{
	struct tw_info *t = arg;

	cr_expect_eq(s->state, TW_TIME_WAIT);
	t->expires_ms = s->expires_ms;
	t->inode = s->inode;
	t->n++;
	return 0;
}

Test(diag, timewait_has_no_inode_and_at_most_60s_left)
{
	struct tw_info t = { 0 };
	uint16_t port;
	int lfd, cfd, sfd;

	enter_private_netns();
	lfd = listen_on(AF_INET, &port);
	cfd = connect_pair(AF_INET, lfd, port, &sfd);
	client_closes_first(cfd, sfd);
	cr_assert_eq(diag_dump(1u << TW_TIME_WAIT, tw_cb, &t), 0);
	cr_assert_eq(t.n, 1);
	cr_expect_eq(t.inode, 0);
	cr_expect_gt(t.expires_ms, 50000);
	cr_expect_leq(t.expires_ms, TW_TIMEWAIT_SEC * 1000);
	close(lfd);
}

static int stop_at_first(const struct diag_sock *s, void *arg)
{
	(void)s;
	(*(int *)arg)++;
	return 1;
}

Test(diag, dump_stops_when_callback_asks)
{
	uint16_t port;
	int lfd, cfd, sfd, calls = 0;

	enter_private_netns();
	lfd = listen_on(AF_INET, &port);
	cfd = connect_pair(AF_INET, lfd, port, &sfd);
	cr_assert_eq(diag_dump(ALL_STATES, stop_at_first, &calls), 0);
	cr_expect_eq(calls, 1);
	close(cfd);
	close(sfd);
	close(lfd);
}

/*
 * The live socket is found by 4-tuple and cookie with the inode its fd has;
 * a wrong cookie or an unknown 4-tuple is "not there"; after a normal close
 * the kernel still has it (FIN_WAIT2, then TIME_WAIT: the cookie moves to the
 * TIME_WAIT socket) with no inode; after an abortive close it is gone.
 */
static void lookup_follows_one_connection(int family)
{
	struct tw_addr local, remote, nowhere;
	struct diag_sock s;
	struct stat st;
	uint64_t cookie;
	uint16_t port;
	int lfd, cfd, sfd, cfd2, sfd2, ret, tries;

	enter_private_netns();
	lfd = listen_on(family, &port);
	cfd = connect_pair(family, lfd, port, &sfd);
	endpoints(cfd, &local, &remote);
	cookie = cookie_of(cfd);
	cr_assert_eq(fstat(cfd, &st), 0);

	memset(&s, 0, sizeof(s));
	cr_assert_eq(diag_lookup(&local, &remote, cookie, &s), 1);
	cr_expect_eq(s.family, family);
	cr_expect_eq(s.state, TW_ESTABLISHED);
	cr_expect_eq(s.cookie, cookie);
	cr_expect_neq(s.inode, 0);
	cr_expect_eq(s.inode, (uint32_t)st.st_ino);
	cr_expect_arr_eq(s.local.a, local.a, 16);
	cr_expect_eq(s.local.port, local.port);
	cr_expect_eq(s.remote.port, remote.port);

	/* the accepted end by its own cookie, seen from its side */
	cr_expect_eq(diag_lookup(&remote, &local, cookie_of(sfd), &s), 1);
	cr_expect_eq(s.local.port, port);

	cr_expect_eq(diag_lookup(&local, &remote, cookie + 1000, &s), 0, "wrong cookie");
	nowhere = remote;
	nowhere.port = (uint16_t)(port == 1 ? 2 : 1);
	cr_expect_eq(diag_lookup(&local, &nowhere, cookie, &s), 0, "unknown 4-tuple");

	/* normal close with the peer still open: orphaned FIN_WAIT2, no fd, same cookie */
	cr_assert_eq(close(cfd), 0);
	ret = diag_lookup(&local, &remote, cookie, &s);
	cr_assert_eq(ret, 1);
	cr_expect_eq(s.inode, 0);
	cr_expect(s.state == TW_FIN_WAIT1 || s.state == TW_FIN_WAIT2, "state %d", s.state);
	cr_assert_eq(close(sfd), 0);
	for (tries = 0; tries < 100; tries++) {
		ret = diag_lookup(&local, &remote, cookie, &s);
		if (ret != 1 || s.state == TW_TIME_WAIT)
			break;
		sleep_ms(10);
	}
	cr_assert_eq(ret, 1);
	cr_expect_eq(s.state, TW_TIME_WAIT);
	cr_expect_eq(s.inode, 0);

	/* abortive close: the kernel forgets it at once */
	cfd2 = connect_pair(family, lfd, port, &sfd2);
	endpoints(cfd2, &local, &remote);
	cookie = cookie_of(cfd2);
	cr_assert_eq(diag_lookup(&local, &remote, cookie, &s), 1);
	abort_close(cfd2);
	cr_expect_eq(diag_lookup(&local, &remote, cookie, &s), 0, "reset socket still listed");
	close(sfd2);
	close(lfd);
}

Test(diag, lookup_follows_one_connection_ipv4)
{
	lookup_follows_one_connection(AF_INET);
}

Test(diag, lookup_follows_one_connection_ipv6)
{
	lookup_follows_one_connection(AF_INET6);
}

/* An AF_INET6 socket talking to an IPv4 peer is found by its mapped 4-tuple. */
Test(diag, lookup_finds_dual_stack_socket_by_mapped_addresses)
{
	struct sockaddr_in6 to = { .sin6_family = AF_INET6 };
	struct tw_addr local, remote;
	struct diag_sock s;
	uint16_t port;
	int lfd, cfd, sfd, off = 0;

	enter_private_netns();
	lfd = listen_on(AF_INET, &port);
	cfd = socket(AF_INET6, SOCK_STREAM | SOCK_CLOEXEC, 0);
	cr_assert_geq(cfd, 0);
	setsockopt(cfd, IPPROTO_IPV6, IPV6_V6ONLY, &off, sizeof(off));
	to.sin6_port = htons(port);
	inet_pton(AF_INET6, "::ffff:127.0.0.1", &to.sin6_addr);
	cr_assert_eq(connect(cfd, (struct sockaddr *)&to, sizeof(to)), 0, "%s", strerror(errno));
	sfd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
	cr_assert_geq(sfd, 0);
	endpoints(cfd, &local, &remote);
	cr_assert(addr_is_v4(&local) && addr_is_v4(&remote));

	cr_assert_eq(diag_lookup(&local, &remote, cookie_of(cfd), &s), 1);
	cr_expect_eq(s.family, AF_INET6);
	cr_expect_eq(s.state, TW_ESTABLISHED);
	cr_expect_neq(s.inode, 0);
	cr_expect_arr_eq(s.local.a, local.a, 16);
	close(cfd);
	close(sfd);
	close(lfd);
}

Test(diag, lookup_keeps_errno)
{
	struct tw_addr a = { .a = { [15] = 1 }, .port = 1 };
	struct diag_sock s;

	errno = EBADF;
	cr_expect_geq(diag_lookup(&a, &a, 1, &s), 0);
	cr_expect_eq(errno, EBADF);
}
