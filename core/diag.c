// SPDX-License-Identifier: MIT
/*
 * sock_diag for TCP (NETLINK_SOCK_DIAG, SOCK_DIAG_BY_FAMILY, inet_diag_req_v2):
 * the kernel's own view of a socket, which is what the close records and the
 * tool's counts are checked against.
 *
 * diag_lookup() and diag_lookup_on() are called by the preload library on its
 * close path, maybe from a signal handler: they allocate nothing
 * (mnl_socket_open() would malloc), keep their buffers on the stack, and use
 * the netlink socket with raw syscalls so that the library's own socket() and close()
 * wrappers are not entered again. diag_dump() is for the tool and the tests
 * and may use the ordinary libmnl socket helpers.
 */
#include <errno.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>
#include <netinet/in.h>
#include <linux/inet_diag.h>
#include <linux/netlink.h>
#include <linux/sock_diag.h>

#include <libmnl/libmnl.h>

#include "diag.h"
#include "record.h"

/* One socket's answer is a few hundred bytes: inet_diag_msg plus a handful of attributes. */
#define DIAG_ONE_BUF	4096
/* Per recvfrom() of a dump; libmnl's suggested size for dumps. */
#define DIAG_DUMP_BUF	32768
/* How long diag_lookup() waits for the kernel, which answers before sendto() returns. */
#define DIAG_WAIT_MS	1000

struct lookup_ctx {
	struct diag_sock *out;
	int found;
};

struct dump_ctx {
	int (*cb)(const struct diag_sock *s, void *arg);
	void *arg;
	int stop;		/* what cb returned when it asked to stop */
};

/* Fills *e from one inet_diag_sockid end: AF_INET holds the address in word 0. */
static void addr_from_diag(struct tw_addr *e, int family, const __be32 *words, __be16 port)
{
	static const uint8_t mapped[12] = { 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff };

	if (family == AF_INET) {
		memcpy(e->a, mapped, sizeof(mapped));
		memcpy(e->a + 12, &words[0], 4);
	} else {
		memcpy(e->a, words, 16);
	}
	e->port = ntohs(port);
}

/* Converts one inet_diag_msg into *s; -EPROTO when it is too short. */
static int diag_from_msg(const struct nlmsghdr *nlh, struct diag_sock *s)
{
	const struct inet_diag_msg *m;

	if (mnl_nlmsg_get_payload_len(nlh) < sizeof(*m))
		return -EPROTO;
	m = mnl_nlmsg_get_payload(nlh);
	memset(s, 0, sizeof(*s));
	s->family = m->idiag_family;
	addr_from_diag(&s->local, m->idiag_family, m->id.idiag_src, m->id.idiag_sport);
	addr_from_diag(&s->remote, m->idiag_family, m->id.idiag_dst, m->id.idiag_dport);
	s->state = m->idiag_state;
	s->inode = m->idiag_inode;
	s->uid = m->idiag_uid;
	s->expires_ms = m->idiag_expires;
	s->cookie = (uint64_t)m->id.idiag_cookie[0] | (uint64_t)m->id.idiag_cookie[1] << 32;
	return 0;
}

/* Puts one SOCK_DIAG_BY_FAMILY request for TCP in buf and returns its header. */
static struct nlmsghdr *diag_put_request(void *buf, int family, uint16_t flags, uint32_t states)
{
	struct nlmsghdr *nlh = mnl_nlmsg_put_header(buf);
	struct inet_diag_req_v2 *req;

	nlh->nlmsg_type = SOCK_DIAG_BY_FAMILY;
	nlh->nlmsg_flags = NLM_F_REQUEST | flags;
	nlh->nlmsg_seq = 1;
	req = mnl_nlmsg_put_extra_header(nlh, sizeof(*req));
	req->sdiag_family = (uint8_t)family;
	req->sdiag_protocol = IPPROTO_TCP;
	req->idiag_states = states;
	req->id.idiag_cookie[0] = INET_DIAG_NOCOOKIE;
	req->id.idiag_cookie[1] = INET_DIAG_NOCOOKIE;
	return nlh;
}

static int lookup_cb(const struct nlmsghdr *nlh, void *data)
{
	struct lookup_ctx *ctx = data;

	if (nlh->nlmsg_type != SOCK_DIAG_BY_FAMILY)
		return MNL_CB_OK;
	if (diag_from_msg(nlh, ctx->out) < 0)
		return MNL_CB_ERROR;
	ctx->found = 1;
	return MNL_CB_STOP;
}

/*
 * One request/answer on the netlink socket fd, all with raw syscalls and
 * stack memory; the answer must carry seq. Returns 1 (found), 0 (ENOENT: no
 * such 4-tuple; ESTALE: the 4-tuple now belongs to a socket with another
 * cookie), or -errno (then the socket may hold a late answer: do not reuse it).
 */
static int lookup_family(int fd, uint32_t seq, int family, const struct tw_addr *local,
			 const struct tw_addr *remote, uint64_t cookie, struct diag_sock *out)
{
	union {
		char b[MNL_NLMSG_HDRLEN + MNL_ALIGN(sizeof(struct inet_diag_req_v2))];
		struct nlmsghdr align;
	} req_buf;
	union {
		char b[DIAG_ONE_BUF];
		struct nlmsghdr align;
	} ans;
	struct sockaddr_nl kernel = { .nl_family = AF_NETLINK };
	struct lookup_ctx ctx = { .out = out, .found = 0 };
	struct inet_diag_req_v2 *req;
	struct nlmsghdr *nlh;
	ssize_t n;
	int ret, tries;

	memset(&req_buf, 0, sizeof(req_buf));
	nlh = diag_put_request(req_buf.b, family, 0, ~0u);
	nlh->nlmsg_seq = seq;
	req = mnl_nlmsg_get_payload(nlh);
	if (family == AF_INET) {
		memcpy(&req->id.idiag_src[0], local->a + 12, 4);
		memcpy(&req->id.idiag_dst[0], remote->a + 12, 4);
	} else {
		memcpy(req->id.idiag_src, local->a, 16);
		memcpy(req->id.idiag_dst, remote->a, 16);
	}
	req->id.idiag_sport = htons(local->port);
	req->id.idiag_dport = htons(remote->port);
	/* Cookie 0 is never handed out (sock_gen_cookie starts at 1): it means "any". */
	if (cookie) {
		req->id.idiag_cookie[0] = (uint32_t)cookie;
		req->id.idiag_cookie[1] = (uint32_t)(cookie >> 32);
	}

	/* Raw syscalls: the preload library wraps none of them, and none is a cancellation point. */
	for (tries = 0; tries < 8; tries++) {
		n = syscall(SYS_sendto, fd, nlh, nlh->nlmsg_len, 0, (struct sockaddr *)&kernel,
			    sizeof(kernel));
		if (n >= 0 || errno != EINTR)
			break;
	}
	if (n < 0)
		return -errno;

	/*
	 * The kernel handles the request inside sendto() and queues the answer
	 * before it returns, so the first recvfrom() normally has it; poll()
	 * only bounds the wait should that ever change.
	 */
	for (tries = 0; tries < 8; tries++) {
		n = syscall(SYS_recvfrom, fd, ans.b, sizeof(ans.b), MSG_DONTWAIT, NULL, NULL);
		if (n >= 0)
			break;
		if (errno == EAGAIN) {
			struct pollfd pfd = { .fd = fd, .events = POLLIN };

			if (syscall(SYS_poll, &pfd, 1, DIAG_WAIT_MS) == 0)
				return -ETIMEDOUT;
		} else if (errno != EINTR) {
			break;
		}
	}
	if (n < 0)
		return -errno;

	errno = 0;
	ret = mnl_cb_run(ans.b, (size_t)n, seq, 0, lookup_cb, &ctx);
	if (ret == MNL_CB_ERROR && !ctx.found) {
		/* mnl_cb_run() reports the kernel's NLMSG_ERROR in errno */
		if (errno == ENOENT || errno == ESTALE)
			return 0;
		return errno ? -errno : -EPROTO;
	}
	return ctx.found;
}

int diag_socket(void)
{
	long fd = syscall(SYS_socket, AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_SOCK_DIAG);

	return fd < 0 ? -errno : (int)fd;
}

/*
 * Both ends IPv4 (mapped): the kernel hashes such connections by their IPv4
 * 4-tuple whatever the socket's family, and an AF_INET request finds
 * dual-stack AF_INET6 sockets too (inet_diag_find_one_icsk() uses
 * inet_lookup() for AF_INET and for AF_INET6 with two mapped addresses, and
 * neither path checks sk_family). So one AF_INET request is enough; an
 * AF_INET6 retry with the mapped addresses could only take the same path.
 */
int diag_lookup_on(int fd, uint32_t seq, const struct tw_addr *local,
		   const struct tw_addr *remote, uint64_t cookie, struct diag_sock *out)
{
	int saved = errno, ret, family;

	family = addr_is_v4(local) && addr_is_v4(remote) ? AF_INET : AF_INET6;
	ret = lookup_family(fd, seq ? seq : 1, family, local, remote, cookie, out);
	errno = saved;
	return ret;
}

int diag_lookup(const struct tw_addr *local, const struct tw_addr *remote, uint64_t cookie,
		struct diag_sock *out)
{
	int saved = errno, fd = diag_socket(), ret;

	if (fd < 0)
		return fd;
	ret = diag_lookup_on(fd, 1, local, remote, cookie, out);
	syscall(SYS_close, fd);
	errno = saved;
	return ret;
}

static int dump_cb(const struct nlmsghdr *nlh, void *data)
{
	struct dump_ctx *ctx = data;
	struct diag_sock s;
	int ret;

	if (nlh->nlmsg_type != SOCK_DIAG_BY_FAMILY)
		return MNL_CB_OK;
	if (diag_from_msg(nlh, &s) < 0)
		return MNL_CB_ERROR;
	ret = ctx->cb(&s, ctx->arg);
	if (ret) {
		ctx->stop = ret;
		return MNL_CB_STOP;
	}
	return MNL_CB_OK;
}

/*
 * Dumps one family's TCP sockets in states. Returns 0, 1 when the callback
 * stopped the dump, or -errno.
 */
static int dump_family(struct mnl_socket *nl, char *buf, int family, uint32_t states,
		       struct dump_ctx *ctx)
{
	unsigned int portid = mnl_socket_get_portid(nl);
	struct nlmsghdr *nlh;
	ssize_t n;
	int ret;

	nlh = diag_put_request(buf, family, NLM_F_DUMP, states);
	nlh->nlmsg_seq = (uint32_t)family;
	if (mnl_socket_sendto(nl, nlh, nlh->nlmsg_len) < 0)
		return -errno;
	for (;;) {
		n = mnl_socket_recvfrom(nl, buf, DIAG_DUMP_BUF);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		errno = 0;
		ret = mnl_cb_run(buf, (size_t)n, (unsigned int)family, portid, dump_cb, ctx);
		if (ret == MNL_CB_ERROR)
			return errno ? -errno : -EPROTO;
		if (ret == MNL_CB_STOP)
			return ctx->stop ? 1 : 0;
	}
}

/*
 * A dump is one request per family: the kernel reports each socket under
 * its own family only, so a dual-stack socket shows up once, in AF_INET6,
 * with mapped addresses.
 */
int diag_dump(uint32_t states, int (*cb)(const struct diag_sock *s, void *arg), void *arg)
{
	static const int families[] = { AF_INET, AF_INET6 };
	struct dump_ctx ctx = { .cb = cb, .arg = arg };
	struct mnl_socket *nl;
	char *buf;
	size_t i;
	int ret = 0;

	buf = malloc(DIAG_DUMP_BUF);
	if (!buf)
		return -ENOMEM;
	nl = mnl_socket_open2(NETLINK_SOCK_DIAG, SOCK_CLOEXEC);
	if (!nl) {
		ret = -errno;
		goto out_free;
	}
	if (mnl_socket_bind(nl, 0, MNL_SOCKET_AUTOPID) < 0) {
		ret = -errno;
		goto out_close;
	}
	for (i = 0; i < sizeof(families) / sizeof(families[0]); i++) {
		ret = dump_family(nl, buf, families[i], states, &ctx);
		/* a kernel without IPv6 has no AF_INET6 handler: nothing to list */
		if (families[i] == AF_INET6 && (ret == -ENOENT || ret == -EAFNOSUPPORT))
			ret = 0;
		if (ret)
			break;
	}
	if (ret > 0)
		ret = ctx.stop < 0 ? ctx.stop : 0;
out_close:
	mnl_socket_close(nl);
out_free:
	free(buf);
	return ret;
}

static int count_cb(const struct diag_sock *s, void *arg)
{
	(void)s;
	(*(long *)arg)++;
	return 0;
}

long diag_count_timewait(void)
{
	long count = 0;
	int ret;

	ret = diag_dump(1u << TW_TIME_WAIT, count_cb, &count);
	return ret < 0 ? ret : count;
}
