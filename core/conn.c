// SPDX-License-Identifier: MIT
/*
 * Connection slots and the life of a tracked connection: opened at connect or
 * accept, released when the program lets go of its last fd, ended now or
 * handed to the closer, and recorded once.
 */
#include <errno.h>
#include <fcntl.h>
#include <stddef.h>
#include <stdio.h>
#include <pthread.h>
#include <sched.h>
#include <string.h>
#include <unistd.h>
#include <linux/sockios.h>
#include <netinet/in.h>
#include <linux/tcp.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>

#include "diag.h"
#include "diagmsg.h"
#include "runtime.h"
#include "stats.h"

static struct tw_conn *slots;
/* free list head: ABA tag in the high 32 bits, slot index + 1 in the low */
static _Atomic uint64_t free_head;
static _Atomic uint32_t slots_used;
/* highest fd that ever held a connection: bounds the walk at exit */
static _Atomic int fd_hi;

_Static_assert(sizeof(struct tw_conn) <= 112, "a deferred connection must stay within 128 bytes");

/*
 * Reserves address space for every slot once, at start-up. MAP_NORESERVE:
 * pages are backed only when a slot is first used.
 */
int conn_slots_init(void)
{
	void *p;

	if (slots)
		return 0;
	p = mmap(NULL, (size_t)TW_CONN_MAX * sizeof(struct tw_conn), PROT_READ | PROT_WRITE,
		 MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	if (p == MAP_FAILED)
		return -errno;
	slots = p;
	return 0;
}

struct tw_conn *conn_at(uint32_t idx)
{
	return &slots[idx];
}

uint32_t conn_index(const struct tw_conn *c)
{
	return (uint32_t)(c - slots);
}

/* Pops a slot from the free list, else takes a fresh one. Lock-free. */
struct tw_conn *conn_alloc(void)
{
	uint64_t head = atomic_load(&free_head);
	struct tw_conn *c = NULL;
	uint32_t i;

	if (!slots)
		return NULL;
	while ((uint32_t)head) {
		uint32_t top = (uint32_t)head - 1;
		uint32_t next = __atomic_load_n(&slots[top].next, __ATOMIC_RELAXED);
		uint64_t nh = (((head >> 32) + 1) << 32) | next;

		if (atomic_compare_exchange_weak(&free_head, &head, nh)) {
			c = &slots[top];
			break;
		}
	}
	if (!c) {
		i = atomic_fetch_add(&slots_used, 1);
		if (i >= TW_CONN_MAX) {
			atomic_fetch_sub(&slots_used, 1);
			return NULL;
		}
		c = &slots[i];
	}
	memset(c, 0, sizeof(*c));
	c->libfd = -1;
	return c;
}

void conn_free(struct tw_conn *c)
{
	uint64_t head = atomic_load(&free_head), nh;

	do {
		__atomic_store_n(&c->next, (uint32_t)head, __ATOMIC_RELAXED);
		nh = (((head >> 32) + 1) << 32) | (conn_index(c) + 1);
	} while (!atomic_compare_exchange_weak(&free_head, &head, nh));
}

static void note_fd(int fd)
{
	int hi = atomic_load_explicit(&fd_hi, memory_order_relaxed);

	while (fd > hi && !atomic_compare_exchange_weak(&fd_hi, &hi, fd))
		;
}

/*
 * Changes of the table and fork() keep out of each other's way, so that a
 * child never inherits half of one: fds copied before a close and the table
 * after it, or a connection judged unshared just before the fork made it
 * shared. Not a lock: both sides give up waiting after a bound, so a signal
 * handler that closes a socket while its thread forks cannot deadlock.
 */
static _Atomic int table_busy;
static _Atomic bool table_forking;

static void table_enter(void)
{
	for (int i = 0; i < 10000; i++) {
		atomic_fetch_add(&table_busy, 1);
		if (!atomic_load(&table_forking))
			return;
		atomic_fetch_sub(&table_busy, 1);
		sched_yield();
	}
	atomic_fetch_add(&table_busy, 1);
}

static void table_leave(void)
{
	atomic_fetch_sub(&table_busy, 1);
}

void conn_fork_prepare(void)
{
	atomic_store(&table_forking, true);
	for (int i = 0; i < 100000 && atomic_load(&table_busy); i++)
		sched_yield();
}

void conn_fork_parent(void)
{
	atomic_store(&table_forking, false);
}

void conn_fork_child(void)
{
	atomic_store(&table_busy, 0);
	atomic_store(&table_forking, false);
}

static void conn_track(struct tw_conn *c, int fd)
{
	c->fd = fd;
	c->gen = atomic_load(&rt.forkgen);
	atomic_store(&c->nfds, 1);
	stats_open();
	note_fd(fd);
	fdtab_set(fd, conn_index(c) + 1);
}

/* Does this SO_LINGER or SO_PEEK_OFF value make a close or a peek behave otherwise? */
static bool opt_sets(int name, const void *optval, socklen_t optlen)
{
	if (name == SO_LINGER) {
		const struct linger *l = optval;

		return optlen >= sizeof(*l) && l->l_onoff && !l->l_linger;
	}
	return optlen >= sizeof(int) && *(const int *)optval >= 0;	/* SO_PEEK_OFF */
}

uint32_t conn_probe_mark(int fd)
{
	struct linger l = { 0 };
	socklen_t ll = sizeof(l);
	int off = -1;
	socklen_t ol = sizeof(off);
	uint32_t mark = FDT_TCP;

	if (getsockopt(fd, SOL_SOCKET, SO_LINGER, &l, &ll) == 0 &&
	    opt_sets(SO_LINGER, &l, ll))
		mark |= CONN_LINGER0;
	if (getsockopt(fd, SOL_SOCKET, SO_PEEK_OFF, &off, &ol) == 0 &&
	    opt_sets(SO_PEEK_OFF, &off, ol))
		mark |= CONN_PEEKOFF;
	return mark;
}

/*
 * The socket had other fds of this process before it connected (dup before
 * connect): they hold the connection too, and the close of one of them must
 * not end it. Found by the inode they share; rare, so a scan.
 */
static void link_dups(struct tw_conn *c, int fd)
{
	struct stat st, o;
	int hi = atomic_load(&fd_hi);

	if (fstat(fd, &st) < 0)
		return;
	for (int i = 0; i <= hi; i++) {
		uint32_t v = fdtab_get(i);

		if (i == fd || !fdt_is_tcp(v) || !(v & FDT_TCP_DUPED))
			continue;
		if (fstat(i, &o) == 0 && o.st_ino == st.st_ino && o.st_dev == st.st_dev &&
		    atomic_compare_exchange_strong(&fdtab[i], &v, conn_index(c) + 1))
			atomic_fetch_add(&c->nfds, 1);
	}
}

/*
 * Starts tracking fd after connect or accept. remote is what the program
 * connected to or what accept returned. Resolves the policy here, once, and
 * starts the closer if this connection may need it: the close path must not
 * create a thread.
 */
static void conn_open_locked(int fd, uint32_t mark, enum tw_role role,
			     const struct sockaddr *remote, socklen_t len)
{
	struct sockaddr_storage ss;
	socklen_t sl = sizeof(ss);
	struct tw_conn *c;

	if (fdt_is_conn(fdtab_get(fd)))
		return;
	c = conn_alloc();
	if (!c) {
		SHIM_WARN("no connection slot left: fd %d is not tracked", fd);
		return;
	}
	c->t_open_ns = clock_mono_ns();
	if (addr_from_sockaddr(&c->remote, remote, len) < 0 ||
	    getsockname(fd, (struct sockaddr *)&ss, &sl) < 0 ||
	    addr_from_sockaddr(&c->local, (struct sockaddr *)&ss, sl) < 0) {
		conn_free(c);
		return;
	}
	c->flags = (role == TW_ROLE_SERVER ? CONN_SERVER : 0) | (uint8_t)(mark & FDT_TCP_OPTS);
	conf_resolve(rt.conf, role, remote, len,
		     role == TW_ROLE_SERVER ? c->local.port : c->remote.port, rnd_next(), &c->pol);
	if (c->pol.close != TW_CLOSE_NORMAL && !closer_running())
		closer_start();
	conn_track(c, fd);
	/* (an accepted socket is new: the listener's fds are not its) */
	if (role == TW_ROLE_CLIENT && (mark & FDT_TCP_DUPED))
		link_dups(c, fd);
}

void conn_open(int fd, uint32_t mark, enum tw_role role, const struct sockaddr *remote,
	       socklen_t len)
{
	table_enter();
	conn_open_locked(fd, mark, role, remote, len);
	table_leave();
}

/* the kernel's ephemeral range, to tell an inherited client from a server */
static int port_ephemeral(uint16_t port)
{
	static int lo = -1, hi = -1;
	char buf[64];
	int fd, n;

	if (lo < 0) {
		lo = 32768;
		hi = 60999;
		fd = (int)syscall(SYS_open, "/proc/sys/net/ipv4/ip_local_port_range",
				  O_RDONLY | O_CLOEXEC);
		if (fd >= 0) {
			n = (int)read(fd, buf, sizeof(buf) - 1);
			syscall(SYS_close, fd);
			if (n > 0) {
				buf[n] = 0;
				sscanf(buf, "%d %d", &lo, &hi);
			}
		}
	}
	return port >= lo && port <= hi;
}

/*
 * Takes over a connected TCP socket the process inherited across exec
 * (inetd-style servers, socket passing). The parent may still hold it, so
 * it is treated as shared until its close finds that nobody else does. Its role is guessed from the ports: a
 * local port in the ephemeral range is a client's.
 */
void conn_adopt(int fd)
{
	struct sockaddr_storage ls, ps;
	socklen_t ll = sizeof(ls), pl = sizeof(ps);
	struct tw_conn *c;
	enum tw_role role;

	if (getsockname(fd, (struct sockaddr *)&ls, &ll) < 0 ||
	    getpeername(fd, (struct sockaddr *)&ps, &pl) < 0)
		return;
	c = conn_alloc();
	if (!c)
		return;
	if (addr_from_sockaddr(&c->local, (struct sockaddr *)&ls, ll) < 0 ||
	    addr_from_sockaddr(&c->remote, (struct sockaddr *)&ps, pl) < 0) {
		conn_free(c);
		return;
	}
	role = port_ephemeral(c->local.port) && !port_ephemeral(c->remote.port) ?
	       TW_ROLE_CLIENT : TW_ROLE_SERVER;
	c->t_open_ns = clock_mono_ns();
	c->flags = CONN_INHERITED | (role == TW_ROLE_SERVER ? CONN_SERVER : 0) |
		   (uint8_t)(conn_probe_mark(fd) & FDT_TCP_OPTS);
	conf_resolve(rt.conf, role, (struct sockaddr *)&ps, pl,
		     role == TW_ROLE_SERVER ? c->local.port : c->remote.port, rnd_next(), &c->pol);
	conn_track(c, fd);
}

static const char *why_name(uint8_t why)
{
	static const char *const names[] = {
		NULL, "shared", "no_fd", "cap", "no_closer", "linger",
	};

	return why < sizeof(names) / sizeof(names[0]) ? names[why] : NULL;
}

void conn_record(struct tw_conn *c, enum tw_end end, bool timeout, uint64_t end_ns)
{
	struct tw_record r = {
		.pid = rt.pid,
		.comm = rt.comm,
		.role = (c->flags & CONN_SERVER) ? TW_ROLE_SERVER : TW_ROLE_CLIENT,
		.policy = c->mode,
		.state = c->state,
		.end = (uint8_t)end,
		.via = c->via,
		.timeout = timeout,
		.deferred = c->mode != TW_CLOSE_NORMAL,
		.why = why_name(c->why),
		.local = c->local,
		.remote = c->remote,
		.bytes_acked = c->bytes_acked,
		.bytes_received = c->bytes_received,
		.fd = c->fd,
	};
	char buf[TW_RECORD_MAX];
	size_t n;

	stats_end(r.role, r.policy, c->pol.arm, end, timeout, c->libfd >= 0);
	r.sample = conf_log_sample(rt.conf, &c->pol);
	if (c->pol.sink == TW_SINK_NONE ||
	    !record_wanted(c->pol.log_only, r.sample, end, rnd_next()))
		return;
	if (!end_ns)
		end_ns = c->t_close_ns;
	r.ts_us = clock_real_us();
	r.dur_us = (c->t_close_ns - c->t_open_ns) / 1000;
	r.deferred_us = end_ns > c->t_close_ns ? (end_ns - c->t_close_ns) / 1000 : 0;
	if (c->pol.arm)
		r.arm = conf_arm_name(rt.conf, c->pol.arm);
	n = record_format(buf, sizeof(buf), &r);
	if (n)
		sink_write(c->pol.sink, buf, n);
}

static int set_linger0(int fd)
{
	struct linger l = { .l_onoff = 1, .l_linger = 0 };

	return (int)syscall(SYS_setsockopt, fd, SOL_SOCKET, SO_LINGER, &l, sizeof(l));
}

static int queued(int fd, unsigned long req)
{
	int n = 0;

	if (ioctl(fd, req, &n) < 0)
		return -1;
	return n;
}

/* reads and drops what has arrived, so that a close does not become a reset */
static void drain(int fd)
{
	char buf[4096];

	for (int i = 0; i < 64; i++)
		if (recv(fd, buf, sizeof(buf), MSG_DONTWAIT) <= 0)
			break;
}

/*
 * The connection is over (CLOSE). If the peer's FIN had come first when the
 * program last looked (c->state), it ended passively. A FIN sent first from
 * this side left a TIME_WAIT socket that no fd refers to, which only the
 * kernel's table shows. Else it was reset.
 */
static enum tw_end end_of_closed(const struct tw_conn *c)
{
	struct diag_sock ds;

	if (c->state == TW_CLOSE_WAIT || c->state == TW_LAST_ACK)
		return TW_END_PASSIVE;
	if (diag_lookup(&c->local, &c->remote, DIAG_ANY_COOKIE, &ds) == 1 &&
	    ds.state == TW_TIME_WAIT)
		return TW_END_ACTIVE;
	return TW_END_RESET;
}

/*
 * How a plain close of fd now ends c: by the TCP state (the one the
 * program's shutdown met, if it shut down), unless the program asked for a
 * reset with SO_LINGER {1,0} or leaves unread data behind, which makes the
 * kernel send RST instead of FIN (tcp_close(), TCPAbortOnClose).
 */
static enum tw_end end_if_closed(const struct tw_conn *c, int fd, int state)
{
	if (state == TW_CLOSE)
		return end_of_closed(c);
	if (state == TW_SYN_SENT || state == TW_SYN_RECV || !state)
		return TW_END_RESET;
	if ((c->flags & CONN_LINGER0) || queued(fd, SIOCINQ) > 0)
		return TW_END_ABORT;
	return record_classify((c->flags & CONN_SHUT_WR) ? c->state : state);
}

/*
 * After the close of a shared connection: did it release the last reference?
 * Still held, the kernel's socket keeps its inode. Released, it is orphaned
 * (inode 0) or gone, and when two holders closed at the same instant both
 * see that: the first to claim its cookie records it. Returns true when this
 * process records it, with *end corrected by what the kernel shows now.
 */
static bool shared_released(struct tw_conn *c, uint64_t cookie, enum tw_end *end)
{
	struct diag_sock ds;
	int found = diag_lookup(&c->local, &c->remote, cookie, &ds);

	if (found == 1 && ds.inode != 0)
		return false;
	if (!shared_claim(cookie))
		return false;
	if (found == 1) {
		*end = ds.state == TW_CLOSE ? end_of_closed(c) : record_classify(ds.state);
	} else if (*end == TW_END_ACTIVE ||
		   (*end == TW_END_ABORT && !(c->flags & CONN_LINGER0))) {
		/*
		 * Gone already. What this process last saw (no FIN yet, or
		 * data unread) the other holder may have changed since: it read
		 * the data, the peer closed. A FIN from this side first would
		 * have left FIN_WAIT or TIME_WAIT here for a minute.
		 */
		*end = end_of_closed(c) == TW_END_ACTIVE ? TW_END_ACTIVE : TW_END_PASSIVE;
	}
	return true;
}

/*
 * Who was first, read from the state a FIN of this side's just produced (the
 * library's shutdown before a close, or the program's own): FIN_WAIT or
 * CLOSING, this side (both sides hold TIME_WAIT after a simultaneous close);
 * LAST_ACK, the peer's FIN came first; CLOSE, over already, and a TIME_WAIT
 * socket tells which, unless nothing ever came back: then the socket was
 * still SYN_SENT and the shutdown only gave the connect up (no FIN). When
 * no TIME_WAIT is found, a pending error tells a reset from a passive end,
 * if closing allows reading it (clear_error: SO_ERROR clears it).
 * Sets c->state to the state the FIN met and returns the end, with *acked /
 * *after saying whether our FIN's acknowledgement / the peer's FIN after it
 * are in the counters; or -1 when the state is none a FIN leaves.
 */
static int after_fin(struct tw_conn *c, int fd, const struct tcp_info *ti, socklen_t tl,
		     bool clear_error, bool *acked, bool *after)
{
	int err = 0;
	socklen_t el = sizeof(err);

	*acked = *after = false;
	switch (ti->tcpi_state) {
	case TW_FIN_WAIT1:
		c->state = TW_ESTABLISHED;
		return TW_END_ACTIVE;
	case TW_FIN_WAIT2:
		c->state = TW_ESTABLISHED;
		*acked = true;
		return TW_END_ACTIVE;
	case TW_CLOSING:
		c->state = TW_ESTABLISHED;
		*after = true;
		return TW_END_ACTIVE;
	case TW_LAST_ACK:
		c->state = TW_CLOSE_WAIT;
		return TW_END_PASSIVE;
	case TW_CLOSE:
		if (tl >= offsetof(struct tcp_info, tcpi_segs_in) + sizeof(ti->tcpi_segs_in) &&
		    !ti->tcpi_segs_in) {
			c->state = TW_SYN_SENT;
			return TW_END_RESET;
		}
		c->state = TW_ESTABLISHED;
		if (end_of_closed(c) == TW_END_ACTIVE) {
			*acked = *after = true;
			return TW_END_ACTIVE;
		}
		if (clear_error && getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &el) == 0 && err)
			return TW_END_RESET;
		*acked = true;
		c->state = TW_CLOSE_WAIT;
		return TW_END_PASSIVE;
	default:
		return -1;
	}
}

enum unread { UNREAD_NONE, UNREAD_EOF, UNREAD_DATA, UNREAD_UNKNOWN };

/*
 * What the receive queue holds as the program closes: nothing yet, the end
 * of the stream (the peer's FIN, or the program's own SHUT_RD), or data the
 * close would answer with RST. A one-byte peek says all three at once;
 * after SO_PEEK_OFF, whose offset could hide data from a peek, SIOCINQ
 * (which cannot see the end of the stream) asks instead.
 */
static enum unread unread(const struct tw_conn *c, int fd)
{
	char b;
	long n;

	if (c->flags & CONN_PEEKOFF) {
		n = queued(fd, SIOCINQ);
		return n == 0 ? UNREAD_NONE : n > 0 ? UNREAD_DATA : UNREAD_UNKNOWN;
	}
	/* recvfrom by number: no cancellation point of its own */
	n = syscall(SYS_recvfrom, fd, &b, 1, MSG_PEEK | MSG_DONTWAIT, NULL, NULL);
	if (n > 0)
		return UNREAD_DATA;
	if (n == 0)
		return UNREAD_EOF;
	return errno == EAGAIN ? UNREAD_NONE : UNREAD_UNKNOWN;
}

/*
 * A normal close of a connection only this process holds. Who sent the
 * first FIN is decided in the kernel the moment ours goes out, and the
 * peer's may be on its way: judged from the state before the close, a close
 * racing the peer's FIN would be recorded active with the TIME_WAIT on the
 * peer. So the receive queue first: at the end of the stream the peer's FIN
 * is in and the close is passive (TCP_INFO confirms CLOSE_WAIT); with data
 * unread the close resets (abort). Otherwise the FIN goes out first, with
 * shutdown(SHUT_WR), exactly as the close would send it, and the state it
 * produced says who was first (after_fin()). Not when a FIN went already or
 * the program asked for a reset itself (SO_LINGER {1,0}).
 * Returns 0 with *end set, or -1 when the general path must decide.
 */
static int normal_fin(struct tw_conn *c, int fd, enum tw_end *end)
{
	struct tcp_info ti;
	socklen_t tl = sizeof(ti);
	bool acked = false, after = false;
	enum unread u;
	int e;

	if (c->flags & (CONN_SHUT_WR | CONN_LINGER0))
		return -1;
	u = unread(c, fd);
	if (u == UNREAD_UNKNOWN)
		return -1;
	if (u != UNREAD_NONE) {
		if (getsockopt(fd, IPPROTO_TCP, TCP_INFO, &ti, &tl) < 0)
			return -1;
		if (u == UNREAD_DATA &&
		    (ti.tcpi_state == TW_ESTABLISHED || ti.tcpi_state == TW_CLOSE_WAIT)) {
			c->state = ti.tcpi_state;
			*end = TW_END_ABORT;
			goto counters;
		}
		if (u == UNREAD_EOF && ti.tcpi_state == TW_CLOSE_WAIT) {
			c->state = TW_CLOSE_WAIT;
			*end = TW_END_PASSIVE;
			goto counters;
		}
		/* the program's own SHUT_RD made the end of the stream: no FIN yet */
		if (u != UNREAD_EOF || ti.tcpi_state != TW_ESTABLISHED)
			return -1;
		tl = sizeof(ti);
	}
	if (syscall(SYS_shutdown, fd, SHUT_WR) < 0 ||
	    getsockopt(fd, IPPROTO_TCP, TCP_INFO, &ti, &tl) < 0)
		return -1;
	e = after_fin(c, fd, &ti, tl, true, &acked, &after);
	if (e < 0)
		return -1;
	*end = (enum tw_end)e;
counters:
	/*
	 * The counters as they were at the program's close: without our FIN
	 * once acknowledged, nor a FIN of the peer's that came after it.
	 */
	c->bytes_acked = ti.tcpi_bytes_acked - (acked && ti.tcpi_bytes_acked);
	c->bytes_received = ti.tcpi_bytes_received - (after && ti.tcpi_bytes_received);
	return 0;
}

enum act { ACT_CLOSE, ACT_ABORT_NOW, ACT_HANDOFF };

/*
 * Hands c to the closer: the library keeps a duplicate of the socket, the
 * program's fd is released by op (so its number is free at once), and the
 * closer ends the connection later. Returns op's result, or 1 when nothing
 * was done because the closer cannot take it (c->why says why).
 */
static int handoff(struct tw_conn *c, int fd, conn_close_fn op, void *arg, int *ret)
{
	long libfd;
	int saved;

	if (!closer_running()) {
		c->why = WHY_NO_CLOSER;
		return 1;
	}
	if (closer_count() >= TW_DEFER_CAP) {
		c->why = WHY_CAP;
		return 1;
	}
	libfd = syscall(SYS_fcntl, fd, F_DUPFD_CLOEXEC, rt.libfd_base);
	if (libfd < 0) {
		c->why = WHY_NO_FD;
		return 1;
	}
	fdtab_set((int)libfd, FDT_LIBCONN | (conn_index(c) + 1));
	*ret = op(fd, arg);
	saved = errno;
	c->libfd = (int)libfd;
	stats_defer_begin();
	c->deadline_ns = c->t_close_ns + (uint64_t)c->pol.defer_ms * 1000000u;
	if (!closer_submit(c)) {
		/* the closer went away under us (fork): end it here and now */
		c->why = WHY_NO_CLOSER;
		c->mode = TW_CLOSE_NORMAL;
		conn_record(c, end_if_closed(c, c->libfd, c->state), false, 0);
		libfd_close(c->libfd);
		conn_free(c);
	}
	errno = saved;
	return 0;
}

/*
 * The program lets go of the last fd of c in this process. Decides, from the
 * state the close meets and the policy, what is done now; releases the fd
 * with op; records the end unless the closer will. Returns op's result with
 * its errno.
 */
static int conn_end(struct tw_conn *c, int fd, enum tw_via via, conn_close_fn op, void *arg)
{
	struct tcp_info ti;
	socklen_t tl = sizeof(ti);
	bool shared = c->gen != atomic_load(&rt.forkgen) ||
		      (c->flags & (CONN_SHARED | CONN_INHERITED));
	int state = 0, ret = 0, saved;
	enum act act = ACT_CLOSE;
	enum tw_end end;
	uint64_t cookie = DIAG_ANY_COOKIE;

	c->t_close_ns = clock_mono_ns();
	c->fd = fd;
	c->via = (c->flags & CONN_SHUT_WR) ? TW_VIA_SHUTDOWN : via;
	if (c->pol.close == TW_CLOSE_NORMAL && !shared && normal_fin(c, fd, &end) == 0) {
		ret = op(fd, arg);
		saved = errno;
		conn_record(c, end, false, 0);
		conn_free(c);
		errno = saved;
		return ret;
	}
	memset(&ti, 0, sizeof(ti));
	if (getsockopt(fd, IPPROTO_TCP, TCP_INFO, &ti, &tl) == 0) {
		state = ti.tcpi_state;
	} else if (errno == EBADF || errno == ENOTSOCK) {
		/* not the socket the table says: nothing of ours to end or record */
		ret = op(fd, arg);
		conn_free(c);
		return ret;
	}
	c->bytes_acked = ti.tcpi_bytes_acked;
	c->bytes_received = ti.tcpi_bytes_received;
	if (!(c->flags & CONN_SHUT_WR))
		c->state = (uint8_t)state;
	c->mode = c->pol.close;
	if (c->mode != TW_CLOSE_NORMAL && (c->flags & CONN_LINGER0)) {
		c->mode = TW_CLOSE_NORMAL;	/* the program asked for a reset itself */
		c->why = WHY_LINGER;
	}
	if (c->mode != TW_CLOSE_NORMAL && shared) {
		if (!(c->flags & CONN_SHARED) && !holders_elsewhere(fd)) {
			/*
			 * Open across fork or exec, but ours alone now. The
			 * holder that just let go may be recording it at this
			 * instant: the first to claim its cookie does.
			 */
			socklen_t cl = sizeof(cookie);

			if (getsockopt(fd, SOL_SOCKET, SO_COOKIE, &cookie, &cl) == 0 &&
			    !shared_claim(cookie)) {
				ret = op(fd, arg);
				conn_free(c);
				return ret;
			}
			cookie = DIAG_ANY_COOKIE;
			shared = false;
		} else {
			/* another holder may still use it: change nothing under its feet */
			c->mode = TW_CLOSE_NORMAL;
			c->why = WHY_SHARED;
		}
	}

	if (c->mode == TW_CLOSE_DEFER && state == TW_ESTABLISHED && !(c->flags & CONN_SHUT_WR)) {
		act = ACT_HANDOFF;
	} else if (c->mode == TW_CLOSE_ABORT &&
		   (state == TW_ESTABLISHED || state == TW_FIN_WAIT1 ||
		    state == TW_FIN_WAIT2 || state == TW_CLOSING)) {
		act = queued(fd, SIOCOUTQ) == 0 ? ACT_ABORT_NOW : ACT_HANDOFF;
	}

	if (act == ACT_HANDOFF) {
		if (handoff(c, fd, op, arg, &ret) == 0)
			return ret;
		/* it could not be handed over: the fallback, now, losing no data */
		if (c->mode == TW_CLOSE_DEFER && c->pol.fallback == TW_FALLBACK_ABORT &&
		    queued(fd, SIOCOUTQ) == 0) {
			c->mode = TW_CLOSE_ABORT;
			act = ACT_ABORT_NOW;
		} else {
			c->mode = TW_CLOSE_NORMAL;
			act = ACT_CLOSE;
		}
	}

	if (act == ACT_ABORT_NOW) {
		set_linger0(fd);
		end = TW_END_ABORT;
	} else {
		if (c->mode != TW_CLOSE_NORMAL)
			drain(fd);	/* defer or abort met CLOSE_WAIT, or fell back: close cleanly */
		if (shared || state != TW_ESTABLISHED || normal_fin(c, fd, &end) < 0)
			end = end_if_closed(c, fd, state);
	}
	/*
	 * A FIN already sent though this process did not shut down: another
	 * holder did, and that holder records the end it decided.
	 */
	if (!(c->flags & CONN_SHUT_WR) &&
	    (state == TW_FIN_WAIT1 || state == TW_FIN_WAIT2 || state == TW_CLOSING ||
	     state == TW_LAST_ACK || (state == TW_CLOSE && end == TW_END_ACTIVE))) {
		c->via = TW_VIA_SHUTDOWN;
		if (shared) {
			ret = op(fd, arg);
			conn_free(c);
			return ret;
		}
	}
	/*
	 * Shared and still open both ways: only the close that releases the
	 * last reference sends a FIN. After it the kernel has the socket
	 * orphaned (no inode) or gone; still held, it keeps its inode. A socket
	 * already over (CLOSE) is out of the kernel's lookup table, so this
	 * cannot be asked of it.
	 */
	if (shared && (state == TW_ESTABLISHED || state == TW_CLOSE_WAIT) &&
	    !(c->flags & CONN_SHUT_WR)) {
		socklen_t cl = sizeof(cookie);

		if (getsockopt(fd, SOL_SOCKET, SO_COOKIE, &cookie, &cl) < 0)
			cookie = DIAG_ANY_COOKIE;
		/* a last look, as near the close as can be: the other holder may have moved on */
		tl = sizeof(ti);
		if (getsockopt(fd, IPPROTO_TCP, TCP_INFO, &ti, &tl) == 0) {
			c->state = ti.tcpi_state;
			c->bytes_acked = ti.tcpi_bytes_acked;
			c->bytes_received = ti.tcpi_bytes_received;
			end = end_if_closed(c, fd, c->state);
		}
	}
	ret = op(fd, arg);
	saved = errno;
	if (cookie != DIAG_ANY_COOKIE && !shared_released(c, cookie, &end)) {
		conn_free(c);
		errno = saved;
		return ret;
	}
	conn_record(c, end, false, 0);
	conn_free(c);
	errno = saved;
	return ret;
}

int conn_release(int fd, enum tw_via via, conn_close_fn op, void *arg)
{
	int e0 = errno, ret, cancel;
	uint32_t v;

	if (rt_foreign())
		return op(fd, arg);
	/*
	 * close() and fclose() are cancellation points: a cancel already
	 * pending acts here, before anything is changed, as in libc's own.
	 * None may act further in (op, the record's write and the sock_diag
	 * calls are cancellation points too): it would leave a FIN sent, the
	 * table's entry taken and no record, and fork() held off for good.
	 */
	if (via == TW_VIA_CLOSE || via == TW_VIA_FCLOSE)
		pthread_testcancel();
	pthread_setcancelstate(PTHREAD_CANCEL_DISABLE, &cancel);
	table_enter();
	v = fdtab_take(fd);
	if (!fdt_is_conn(v))
		ret = op(fd, arg);
	else if (atomic_fetch_sub(&conn_at(v - 1)->nfds, 1) > 1)
		ret = op(fd, arg);	/* another fd of this process still holds it */
	else
		ret = conn_end(conn_at(v - 1), fd, via, op, arg);
	table_leave();
	pthread_setcancelstate(cancel, NULL);
	/* what the library did on the way must not show: a call that succeeded keeps errno */
	if (ret >= 0)
		errno = e0;
	return ret;
}

void conn_note_shutdown(int fd, int how)
{
	uint32_t v = fdtab_get(fd);
	struct tcp_info ti;
	socklen_t tl = sizeof(ti);
	struct tw_conn *c;
	bool acked, after;

	if (!fdt_is_conn(v) || (how != SHUT_WR && how != SHUT_RDWR))
		return;
	c = conn_at(v - 1);
	if (c->flags & CONN_SHUT_WR)
		return;
	if (getsockopt(fd, IPPROTO_TCP, TCP_INFO, &ti, &tl) < 0)
		return;
	/*
	 * Read after the FIN went out, as for a close (normal_fin()): the
	 * state it produced says whether the peer's FIN was there first. The
	 * program still holds the socket: its pending error stays for it.
	 */
	if (after_fin(c, fd, &ti, tl, false, &acked, &after) < 0)
		c->state = ti.tcpi_state;
	c->flags |= CONN_SHUT_WR;
}

void conn_note_sockopt(int fd, int name, const void *optval, socklen_t optlen)
{
	uint32_t v = fdtab_get(fd);
	uint8_t f = name == SO_LINGER ? CONN_LINGER0 : CONN_PEEKOFF;
	bool on;

	if ((name != SO_LINGER && name != SO_PEEK_OFF) || !optval)
		return;
	on = opt_sets(name, optval, optlen);
	if (fdt_is_conn(v)) {
		struct tw_conn *c = conn_at(v - 1);

		c->flags = on ? (c->flags | f) : (c->flags & (uint8_t)~f);
	} else if (fdt_is_tcp(v)) {
		/* only while it is still that socket: a concurrent close wins */
		atomic_compare_exchange_strong(&fdtab[fd], &v, on ? (v | f) : (v & ~(uint32_t)f));
	}
}

void conn_note_sent(int fd)
{
	uint32_t v = fdtab_get(fd);

	if (fdt_is_conn(v))
		conn_at(v - 1)->flags |= CONN_SHARED;
}

void conn_note_dup(int oldfd, int newfd)
{
	uint32_t v = fdtab_get(oldfd);

	if (oldfd == newfd || (v == FDT_NONE && fdtab_get(newfd) == FDT_NONE) || rt_foreign())
		return;
	table_enter();
	v = fdtab_get(oldfd);
	if (fdt_is_conn(v)) {
		atomic_fetch_add(&conn_at(v - 1)->nfds, 1);
		note_fd(newfd);
	} else if (fdt_is_tcp(v)) {
		/* a socket with two fds before it connects: connect() links them (link_dups()) */
		uint32_t old = v;

		v |= FDT_TCP_DUPED;
		atomic_compare_exchange_strong(&fdtab[oldfd], &old, v);
		note_fd(oldfd);
		note_fd(newfd);
	} else {
		v = FDT_NONE;
	}
	fdtab_set(newfd, v);
	table_leave();
}

static int op_close(int fd, void *arg)
{
	(void)arg;
	return (int)syscall(SYS_close, fd);
}

/*
 * At exit, every connection the program still holds ends now, with its
 * policy, recorded with via `via`; at exec (only_cloexec) the ones the
 * kernel is about to close, those marked close-on-exec. Then the closer
 * gives each deferred connection at most its exit_wait_ms: its fds close at
 * exec and exit too.
 */
void conn_exit_all(enum tw_via via, bool only_cloexec)
{
	int hi = atomic_load(&fd_hi);

	for (int fd = 0; fd <= hi; fd++) {
		long fl;

		if (!fdt_is_conn(fdtab_get(fd)))
			continue;
		fl = only_cloexec ? syscall(SYS_fcntl, fd, F_GETFD) : FD_CLOEXEC;
		if (fl < 0 || !(fl & FD_CLOEXEC))
			continue;
		conn_release(fd, via, op_close, NULL);
	}
	closer_drain(clock_mono_ns());
}
