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
#include <sys/epoll.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/single_threaded.h>
#include <sys/syscall.h>

#include "decide.h"
#include "diag.h"
#include "diagmsg.h"
#include "hold.h"
#include "learn.h"
#include "observe.h"
#include "runtime.h"
#include "stats.h"

static struct tw_conn *slots;
/* free list head: ABA tag in the high 32 bits, slot index + 1 in the low */
static _Atomic uint64_t free_head;
static _Atomic uint32_t slots_used;
/* slots mapped so far (a multiple of CONN_CHUNK), and whether one thread is mapping more */
static _Atomic uint32_t slots_mapped;
static _Atomic bool slots_growing;
/* highest fd that ever held a connection: bounds the walk at exit */
static _Atomic int fd_hi;

_Static_assert(sizeof(struct tw_conn) <= 112, "a deferred connection must stay within 128 bytes");

/* slots mapped at a time: 448 KiB */
#define CONN_CHUNK	4096u
/*
 * Where the slots go on 64-bit: far below the top-down mmap area and far
 * above the heap, so that the addresses after them stay free to grow into.
 */
#define CONN_HINT	((uintptr_t)1 << 44)

/*
 * Maps CONN_CHUNK more slots right after those mapped (the first ones where
 * there is room to grow), so that a slot's index stays its offset. Only
 * what is used is reserved: a program under `ulimit -v` keeps its address
 * space. Returns 0 or -errno (-EEXIST: something else lives there now; the
 * slots stop growing).
 */
static int slots_grow(uint32_t have)
{
	size_t len = (size_t)CONN_CHUNK * sizeof(struct tw_conn);
	int flags = MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE;
	void *want = NULL, *p;

	if (have)
		want = slots + have;
	else if (sizeof(void *) == 8)
		want = (void *)CONN_HINT;
	p = mmap(want, len, PROT_READ | PROT_WRITE, flags | (have ? MAP_FIXED_NOREPLACE : 0), -1, 0);
	if (p == MAP_FAILED)
		return -errno;
	/* kernels before 4.17 take MAP_FIXED_NOREPLACE as a hint */
	if (have && p != want) {
		munmap(p, len);
		return -EEXIST;
	}
	if (!have)
		slots = p;
	atomic_store(&slots_mapped, have + CONN_CHUNK);
	return 0;
}

/* Maps the first slots, at start-up. */
int conn_slots_init(void)
{
	if (slots)
		return 0;
	return slots_grow(0);
}

/*
 * Slot i is mapped, or gets mapped now; false when it cannot be. One thread
 * maps; another that needs a slot meanwhile waits a bounded time (a signal
 * handler may have interrupted the one mapping).
 */
static bool slot_mapped(uint32_t i)
{
	for (int k = 0; k < 1000 && i >= atomic_load(&slots_mapped); k++) {
		bool f = false;

		if (atomic_compare_exchange_strong(&slots_growing, &f, true)) {
			uint32_t have = atomic_load(&slots_mapped);
			int r = i < have ? 0 : slots_grow(have);

			atomic_store(&slots_growing, false);
			if (r < 0)
				return false;
			continue;
		}
		sched_yield();
	}
	return i < atomic_load(&slots_mapped);
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
		if (i >= TW_CONN_MAX || !slot_mapped(i)) {
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
 * shared. A close waits while another thread forks, and a fork waits for
 * the closes under way: both last microseconds. Not a lock: the thread
 * that forks never waits for itself (a signal handler that closes a socket
 * in the middle of its fork, or forks in the middle of its close), and
 * either side gives up after TABLE_WAIT_NS, so that a close in a handler
 * that interrupted a lock the fork needs cannot hang the program, and a
 * close that blocks (SO_LINGER with a time) holds a fork up for that long
 * at most. The bound is in time, not in yields: where fork() is slow (a
 * sanitizer, a large process), closes that went ahead in the middle of it
 * left a child a connection its parent recorded as unshared.
 */
#define TABLE_WAIT_NS	(2 * 1000000000ull)

static _Atomic int table_busy;
static _Atomic bool table_forking;
/* this thread's own part of table_busy, and whether it is the one forking */
static __thread int table_depth __attribute__((tls_model("initial-exec")));
static __thread bool table_forker __attribute__((tls_model("initial-exec")));

/* the process whose threads table_busy counts (0: the first, rt.pid) */
static _Atomic int table_pid;

/*
 * A child made without fork handlers (a raw fork(), _Fork(), clone without
 * CLONE_VM) inherits counts of threads it does not have, and perhaps a fork
 * under way in one of them: they are dropped in its first wait. Not in a
 * vfork child, which shares this memory with its parent.
 */
static void table_adopt(void)
{
	int me = (int)syscall(SYS_getpid), owner = atomic_load(&table_pid);

	if ((owner ? owner : rt.pid) == me ||
	    atomic_load_explicit(&rt_vforks, memory_order_relaxed))
		return;
	atomic_store(&table_pid, me);
	atomic_store(&table_busy, table_depth);
	if (!table_forker)
		atomic_store(&table_forking, false);
}

/* waits until done() or TABLE_WAIT_NS; false when it gave up */
static bool table_wait(bool (*done)(void))
{
	uint64_t until = 0;

	table_adopt();
	while (!done()) {
		uint64_t now = clock_mono_ns();

		if (!until)
			until = now + TABLE_WAIT_NS;
		else if (now > until)
			return false;
		sched_yield();
	}
	return true;
}

static bool fork_over(void)
{
	return !atomic_load(&table_forking);
}

static bool closes_over(void)
{
	return atomic_load(&table_busy) <= table_depth;
}

static void table_enter(void)
{
	for (;;) {
		atomic_fetch_add(&table_busy, 1);
		/* already inside (a nested change): the fork waits for this thread anyway */
		if (table_forker || table_depth || !atomic_load(&table_forking))
			break;
		atomic_fetch_sub(&table_busy, 1);
		if (!table_wait(fork_over)) {
			atomic_fetch_add(&table_busy, 1);
			break;
		}
	}
	table_depth++;
}

static void table_leave(void)
{
	table_depth--;
	atomic_fetch_sub(&table_busy, 1);
}

/*
 * Every TCP socket that is no connection yet is now held by a child too,
 * and either process may connect it while the other's table still says it
 * is none: the table marks it (FDT_TCP_FORKED), so that a connection made
 * on it later counts as shared (CONN_INHERITED), and the process whose close
 * ends it finds the connection (adopt_forked()). The walk goes up to the
 * highest fd that ever held a TCP socket. It takes no lock: an entry that
 * changes under it is read again, a bounded number of times.
 */
static void mark_held(void)
{
	int hi = atomic_load(&fd_hi);

	for (int fd = 0; fd <= hi; fd++) {
		uint32_t v = fdtab_get(fd);

		for (int i = 0; i < 8 && fdt_is_tcp(v) && !(v & FDT_TCP_FORKED); i++) {
			if (fdtab_replace(fd, v, v | FDT_TCP_FORKED))
				break;
			v = fdtab_get(fd);
		}
	}
}

/* fork(): both copies of the table are marked, with its changes held off. */
void conn_fork_prepare(void)
{
	table_forker = true;
	atomic_store(&table_forking, true);
	table_wait(closes_over);
	mark_held();
}

/*
 * A spawn (posix_spawn, system, popen, vfork, clone without CLONE_FILES):
 * no fork handler runs, and a child that shares this memory must find the
 * marks made, so the parent marks before the child exists. A socket the
 * child closes at its exec gets marked too: its connection then counts as
 * shared, which costs its policy, never a wrong packet (the file actions
 * of posix_spawn may dup2 a close-on-exec socket into the child, so
 * FD_CLOEXEC does not tell). The connections open now count as shared
 * (rt_spawns, rt_gen()).
 */
void conn_spawn_prepare(void)
{
	mark_held();
	atomic_fetch_add(&rt_spawns, 1);
}

void conn_fork_parent(void)
{
	table_forker = false;
	atomic_store(&table_forking, false);
}

void conn_fork_child(void)
{
	table_forker = false;
	atomic_store(&table_pid, rt.pid);
	atomic_store(&table_busy, table_depth);
	atomic_store(&table_forking, false);
	observe_fork_child();
}

/*
 * socket() runs between these two, inside the fork barrier: a fork never
 * copies a new TCP socket into a child before the table knows it.
 */
void conn_socket_begin(void)
{
	table_enter();
}

void conn_socket_end(int fd, bool tcp)
{
	if (fd >= 0 && tcp) {
		note_fd(fd);
		fdtab_set(fd, FDT_TCP);
	}
	table_leave();
}

int conn_local(struct tw_conn *c, int fd)
{
	if (c->local.port)
		return 0;
	return addr_of_fd(&c->local, fd, false);
}

static void conn_track(struct tw_conn *c, int fd)
{
	c->fd = fd;
	c->gen = rt_gen();
	atomic_store(&c->nfds, 1);
	stats_open();
	note_fd(fd);
	fdtab_set(fd, fdt_conn(conn_index(c)));
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
		    fdtab_replace(i, v, fdt_conn(conn_index(c))))
			atomic_fetch_add(&c->nfds, 1);
	}
}

/*
 * Starts tracking fd after connect or accept. remote is what the program
 * connected to or what accept returned. Resolves the policy here, once, and
 * starts the closer if this connection may need it: the close path must not
 * create a thread. Runs inside the fork barrier (table_enter()), which
 * conn_open() holds for it.
 */
static void conn_begin(int fd, uint32_t mark, enum tw_role role, const struct sockaddr *remote,
		       socklen_t len, bool up)
{
	struct tw_conn *c;
	uint32_t now = fdtab_get(fd);
	bool server = role == TW_ROLE_SERVER;

	if (fdt_is_conn(now))
		return;
	/*
	 * The caller read the mark before the barrier: a fork since may have
	 * marked the socket FDT_TCP_FORKED (an accepted socket is new, and
	 * inherits the listener's options only).
	 */
	if (role == TW_ROLE_CLIENT && fdt_is_tcp(now))
		mark = now;
	c = conn_alloc();
	if (!c) {
		SHIM_WARN("no connection slot left: fd %d is not tracked", fd);
		return;
	}
	c->t_open_ns = clock_mono_ns();
	/* a server's policy may depend on its local port: read before it is resolved */
	if (addr_from_sockaddr(&c->remote, remote, len) < 0 ||
	    (server && conf_port_matters(rt.conf, role) && conn_local(c, fd) < 0)) {
		conn_free(c);
		return;
	}
	c->flags = (server ? CONN_SERVER : 0) | (uint8_t)(mark & FDT_TCP_OPTS);
	/* a socket open across a fork before it connected: the other process holds it */
	if (role == TW_ROLE_CLIENT && (mark & FDT_TCP_FORKED))
		c->flags |= CONN_INHERITED;
	conf_resolve(rt.conf, role, remote, len, server ? c->local.port : c->remote.port,
		     rnd_next(), &c->pol);
	/*
	 * The local address now for a log line, which may be written when the
	 * program has given its fd up; counters alone need none, and a close
	 * that asks sock_diag reads it then, from the program's fd or the
	 * library's copy (both still open).
	 */
	if (c->pol.sink != TW_SINK_NONE && conn_local(c, fd) < 0) {
		conn_free(c);
		return;
	}
	/* connect() returned 0, or accept(): a peek that finds nothing means ESTABLISHED */
	c->state = up ? TW_ESTABLISHED : 0;
	if (c->pol.close != TW_CLOSE_NORMAL && !closer_running())
		closer_start();
	if (c->pol.close == TW_CLOSE_DEFER && c->pol.learn)
		learn_init();
	conn_track(c, fd);
	/* (an accepted socket is new: the listener's fds are not its) */
	if (role == TW_ROLE_CLIENT && (mark & FDT_TCP_DUPED))
		link_dups(c, fd);
}

void conn_open(int fd, uint32_t mark, enum tw_role role, const struct sockaddr *remote,
	       socklen_t len, bool up)
{
	table_enter();
	conn_begin(fd, mark, role, remote, len, up);
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

struct listener_q {
	uint16_t port;
	bool found;
};

static int listens_on(const struct diag_sock *s, void *arg)
{
	struct listener_q *q = arg;

	q->found = s->local.port == q->port;
	return q->found;
}

/*
 * The role of an inherited connection: accepted when some socket of this
 * network namespace listens on its local port (inetd and socket activation
 * keep their listener), else connected. A server's port may lie in the
 * ephemeral range too: the ports alone would call its clients servers.
 * Only when sock_diag cannot be asked do the ports decide: a local port in
 * the ephemeral range and a remote one outside it make a client.
 */
static enum tw_role adopted_role(const struct tw_conn *c)
{
	struct listener_q q = { .port = c->local.port };

	if (diag_dump(1u << TW_LISTEN, listens_on, &q) == 0)
		return q.found ? TW_ROLE_SERVER : TW_ROLE_CLIENT;
	return port_ephemeral(c->local.port) && !port_ephemeral(c->remote.port) ?
	       TW_ROLE_CLIENT : TW_ROLE_SERVER;
}

/*
 * Tracks fd, a connected TCP socket another process may hold too (flag
 * CONN_INHERITED: shared until its close finds that nobody else holds it).
 * role < 0: adopted_role() says. mark: the socket's FDT_TCP value, with its
 * options. NULL when it is no connection (never connected, or over).
 */
static struct tw_conn *take_over(int fd, int role, uint32_t mark)
{
	struct sockaddr_storage ls, ps;
	socklen_t ll = sizeof(ls), pl = sizeof(ps);
	struct tw_conn *c;

	if (getpeername(fd, (struct sockaddr *)&ps, &pl) < 0 ||
	    getsockname(fd, (struct sockaddr *)&ls, &ll) < 0)
		return NULL;
	c = conn_alloc();
	if (!c)
		return NULL;
	if (addr_from_sockaddr(&c->local, (struct sockaddr *)&ls, ll) < 0 ||
	    addr_from_sockaddr(&c->remote, (struct sockaddr *)&ps, pl) < 0) {
		conn_free(c);
		return NULL;
	}
	if (role < 0)
		role = adopted_role(c);
	c->t_open_ns = clock_mono_ns();
	c->flags = CONN_INHERITED | (role == TW_ROLE_SERVER ? CONN_SERVER : 0) |
		   (uint8_t)(mark & FDT_TCP_OPTS);
	conf_resolve(rt.conf, (enum tw_role)role, (struct sockaddr *)&ps, pl,
		     role == TW_ROLE_SERVER ? c->local.port : c->remote.port, rnd_next(), &c->pol);
	conn_track(c, fd);
	return c;
}

/*
 * Takes over a connected TCP socket the process inherited across exec
 * (inetd-style servers, socket passing). The parent may still hold it.
 */
void conn_adopt(int fd)
{
	take_over(fd, -1, conn_probe_mark(fd));
}

/*
 * fd is a socket that was open across a fork before it connected (mark v):
 * the other process may have connected it since, and this one's close may
 * be the one that ends the connection. Tracked as a client connection open
 * across the fork when the kernel shows it connected; the other fds of this
 * process that share it (dup) are linked to it. Runs inside the barrier.
 */
static void adopt_forked(int fd, uint32_t v)
{
	struct tw_conn *c = take_over(fd, TW_ROLE_CLIENT, v);

	if (!c)
		return;
	c->flags |= CONN_TAKEN;
	if (v & FDT_TCP_DUPED)
		link_dups(c, fd);
}

bool conn_recorded(const struct tw_conn *c)
{
	return c->pol.sink != TW_SINK_NONE || stats_on();
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
		.held = hold_here(),
		.connect_waited = c->waited,
		.why = decide_why_name(c->why),
		.local = c->local,
		.remote = c->remote,
		.bytes_acked = c->bytes_acked,
		.bytes_received = c->bytes_received,
		.fd = c->fd,
	};
	char buf[TW_RECORD_MAX];
	size_t n;

	stats_end(r.role, r.policy, c->pol.arm, end, timeout, c->libfd >= 0);
	if (c->why == WHY_LEARNED)
		stats_learned();
	if (c->waited)
		stats_connect_wait();
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

static bool same_tuple(const struct tw_conn *c, const struct tw_addr *l, const struct tw_addr *r)
{
	return !memcmp(&c->local, l, sizeof(*l)) && !memcmp(&c->remote, r, sizeof(*r));
}

/*
 * Does another socket of this process have c's 4-tuple: a connection made
 * since, tracked already or still on its way (FDT_TCP)? A scan, paid only
 * when the kernel shows the 4-tuple held after an unshared close. The
 * addresses are the kernel's: the table's entry of another thread's
 * connection may be filled in, or taken for a new one, at this moment.
 */
static bool tuple_taken_here(const struct tw_conn *c)
{
	int hi = atomic_load(&fd_hi);

	for (int fd = 0; fd <= hi; fd++) {
		uint32_t v = fdtab_get(fd);
		struct tw_addr l, r;

		if (!fdt_is_conn(v) && !fdt_is_tcp(v))
			continue;
		if (addr_of_fd(&l, fd, false) == 0 && addr_of_fd(&r, fd, true) == 0 &&
		    same_tuple(c, &l, &r))
			return true;
	}
	return false;
}

bool conn_tuple_free_here(void *look)
{
	struct conn_tuple_look *t = look;

	t->taken = tuple_taken_here(t->c);
	return !t->taken;
}

/* What a verdict does before the close: the policy and why the record names, a reset. */
static void act_before_close(struct tw_conn *c, int fd, const struct verdict *v)
{
	c->mode = v->mode;
	c->why = v->why;
	if (v->act == DO_RESET)
		set_linger0(fd);
}

/*
 * The program's own shutdown(SHUT_WR) just sent its FIN: the state it
 * produced says which FIN was first. FIN_WAIT or CLOSING, this side's (both
 * hold TIME_WAIT after a simultaneous close); LAST_ACK, the peer's; CLOSE,
 * over already: a TIME_WAIT socket says this side's, nothing ever received
 * says the connect was still SYN_SENT and the shutdown only gave it up.
 * Returns the state the FIN met, or 0 for a state no FIN leaves.
 */
static uint8_t met_by_fin(struct tw_conn *c, int fd, const struct tcp_info *ti, socklen_t tl)
{
	uint64_t found;
	uint8_t st = 0;

	switch (ti->tcpi_state) {
	case TW_FIN_WAIT1:
	case TW_FIN_WAIT2:
	case TW_CLOSING:
		return TW_ESTABLISHED;
	case TW_LAST_ACK:
		return TW_CLOSE_WAIT;
	case TW_CLOSE:
		if (tl >= offsetof(struct tcp_info, tcpi_segs_in) + sizeof(ti->tcpi_segs_in) &&
		    !ti->tcpi_segs_in)
			return TW_SYN_SENT;
		if (conn_local(c, fd) == 0 &&
		    observe_after(&c->local, &c->remote, DIAG_ANY_COOKIE, NULL, NULL, &st,
				  &found) == AFTER_ORPHAN &&
		    st == TW_TIME_WAIT)
			return TW_ESTABLISHED;
		return TW_CLOSE_WAIT;
	default:
		return 0;
	}
}

/*
 * What the program's close (or the end of the process) meets first: the
 * receive queue (a peek, unless the program asked for a reset or nothing
 * keeps the end). Fills o and c.
 */
static void observe_close(struct tw_conn *c, int fd, enum tw_via via, struct observed *o)
{
	c->t_close_ns = clock_mono_ns();
	c->fd = fd;
	c->via = o->shut_wr ? TW_VIA_SHUTDOWN : via;
	o->at_shutdown = c->state;
	/*
	 * Nothing kept, no peek: the state decides, and data left unread makes
	 * the kernel's close reset (or, deferred, the closer's, at once). A
	 * peek would take a pending error (a reset not yet read) that another
	 * holder, or at exit the program's other threads and later exit
	 * handlers, may still read: SIOCINQ then, with TCP_INFO for the rest.
	 */
	if (!o->linger0 && o->kept != KEPT_NONE)
		o->unread = observe_unread(fd, (c->flags & CONN_PEEKOFF) || o->shared ||
					   o->who == WHO_EXIT);
}

/* The state and the counters the record keeps (TCP_INFO); for `defer`, what was learned. */
static void observe_info(struct tw_conn *c, int fd, struct observed *o)
{
	struct tcp_info ti;
	socklen_t tl = sizeof(ti);

	memset(&ti, 0, sizeof(ti));
	if (getsockopt(fd, IPPROTO_TCP, TCP_INFO, &ti, &tl) == 0)
		o->before = ti.tcpi_state;
	else if (errno != EBADF && errno != ENOTSOCK)
		o->before = TW_CLOSE;
	else
		o->before = 0;
	c->bytes_acked = ti.tcpi_bytes_acked;
	c->bytes_received = ti.tcpi_bytes_received;
	if (!o->shut_wr)
		c->state = o->before;
	/* a peer that lately let defer_ms pass gets the fallback now (learn.h) */
	if (o->mode == TW_CLOSE_DEFER && c->pol.learn && o->before == TW_ESTABLISHED &&
	    o->unread == UNREAD_NONE && !o->shut_wr && !o->linger0)
		o->learned = learn_skip(&c->remote, c->t_close_ns);
}

static void observe_at_close(struct tw_conn *c, int fd, enum tw_via via, struct observed *o)
{
	observe_close(c, fd, via, o);
	observe_info(c, fd, o);
}

/*
 * DO_SHUT: the program's FIN goes now, by shutdown(SHUT_WR) (by number: the
 * program's shutdown wrapper must not see it), and TCP_INFO right after it
 * shows what it met (decide.c, fin_by_shutdown(), says why the peer sees
 * what the close alone would have sent).
 */
static void observe_fin(struct tw_conn *c, int fd, struct observed *o)
{
	struct tcp_info ti;
	socklen_t tl = sizeof(ti);

	if (syscall(SYS_shutdown, fd, SHUT_WR) < 0) {
		o->fin_failed = true;
		return;
	}
	memset(&ti, 0, sizeof(ti));
	if (getsockopt(fd, IPPROTO_TCP, TCP_INFO, &ti, &tl) < 0) {
		o->fin = OBS_UNSEEN;	/* no state: decide() asks after the close */
		return;
	}
	o->fin = ti.tcpi_state;
	o->nothing_in = tl >= offsetof(struct tcp_info, tcpi_segs_in) + sizeof(ti.tcpi_segs_in) &&
			!ti.tcpi_segs_in;
	/*
	 * The kernel reads the state before it locks the socket for the
	 * counters (tcp_get_info()): an acknowledgement of the FIN in between
	 * is in bytes_acked with the state still FIN_WAIT1 or LAST_ACK. What
	 * is in flight, read with the counters, says whether it is.
	 */
	if (tl >= offsetof(struct tcp_info, tcpi_notsent_bytes) + sizeof(ti.tcpi_notsent_bytes))
		o->fin_acked = !ti.tcpi_unacked && !ti.tcpi_notsent_bytes;
	else
		o->fin_acked = o->fin == TW_FIN_WAIT2;
	c->bytes_acked = ti.tcpi_bytes_acked;
	c->bytes_received = ti.tcpi_bytes_received;
}

/*
 * The record's counters are those at the program's close. Read after the
 * library's shutdown, TCP_INFO may count more: this side's FIN once it is
 * acknowledged (fin_acked, or CLOSE after both FINs), and, when this side's
 * FIN was first, the peer's FIN that came after it (CLOSING, or CLOSE).
 */
static void fin_uncount(struct tw_conn *c, const struct observed *o, uint8_t end)
{
	bool over = o->fin == TW_CLOSE && !o->nothing_in;
	bool acked = o->fin == TW_CLOSE ? over : o->fin_acked;

	if (acked && c->bytes_acked)
		c->bytes_acked--;
	if (end == TW_END_ACTIVE && (o->fin == TW_CLOSING || over) && c->bytes_received)
		c->bytes_received--;
}

/* Another process may hold c: open across a fork or exec, or sent away. */
static bool maybe_shared(const struct tw_conn *c)
{
	return c->gen != rt_gen() ||
	       (c->flags & (CONN_SHARED | CONN_INHERITED));
}

/*
 * A connection open across fork or exec, found ours alone now. The holder
 * that just let go may be recording it at this instant: the first to claim
 * its cookie does. False when the other holder did.
 */
static bool claim_alone(int fd)
{
	uint64_t cookie;
	socklen_t cl = sizeof(cookie);

	return getsockopt(fd, SOL_SOCKET, SO_COOKIE, &cookie, &cl) < 0 || shared_claim(cookie);
}

/*
 * The program's epoll instances (epoll_create wrappers), by fd number: a
 * number closed since, or reused by another file, is dropped at the first
 * EPOLL_CTL_DEL that finds it no epoll (EBADF, EINVAL). Past PROGRAM_EPOLLS
 * at once, the newest go unseen (README, Limits). A slot holds the fd + 1
 * and, above it, the count of the note that put it there: a new epoll
 * noted under a number that a DEL is just finding closed changes the count,
 * and that DEL's drop then fails instead of dropping the new one.
 */
#define PROGRAM_EPOLLS	64
static _Atomic uint64_t program_epolls[PROGRAM_EPOLLS];
static _Atomic uint32_t epoll_notes;

static int epoll_slot_fd(uint64_t v)
{
	return (int)(uint32_t)v - 1;
}

void conn_note_epoll(int epfd)
{
	uint64_t v = (uint64_t)(atomic_fetch_add(&epoll_notes, 1) + 1) << 32 | (uint32_t)(epfd + 1);

	for (int i = 0; i < PROGRAM_EPOLLS; i++) {
		uint64_t old = atomic_load(&program_epolls[i]);

		if (old && epoll_slot_fd(old) == epfd &&
		    atomic_compare_exchange_strong(&program_epolls[i], &old, v))
			return;
	}
	for (int i = 0; i < PROGRAM_EPOLLS; i++) {
		uint64_t free = 0;

		if (atomic_compare_exchange_strong(&program_epolls[i], &free, v))
			return;
	}
}

/*
 * Before the library keeps a copy of what the program closes: what the
 * close of its last fd would have done to the program's own watchers,
 * which the copy would keep on. Its epoll instances forget the socket
 * (the kernel's eventpoll_release() at the last close; an epoll_wait
 * would report the peer's data or FIN on an fd number the program may
 * have reused), and an O_ASYNC owner gets no SIGIO from it (its fasync
 * entry goes, as __fput() takes it). Raw calls. At exit or exec, only the
 * latter (unwatch_async()): the holder's copy would otherwise signal a pid
 * that is gone, or reused, or the exec'd image, whose SIGIO ends it.
 */
static void unwatch_async(const struct tw_conn *c, int fd)
{
	long fl;

	/*
	 * No owner, no SIGIO: a connection that has none pays nothing (README,
	 * Limits). One another process held (open across a fork or a spawn,
	 * sent away, inherited) may have been given one there.
	 */
	if (!(__atomic_load_n(&c->watch, __ATOMIC_RELAXED) & CONN_W_OWNER) &&
	    !atomic_load_explicit(&rt_owner_set, memory_order_relaxed) && !maybe_shared(c))
		return;
	fl = syscall(SYS_fcntl, fd, F_GETFL);
	if (fl >= 0 && (fl & O_ASYNC))
		syscall(SYS_fcntl, fd, F_SETFL, fl & ~(long)O_ASYNC);
}

static void unwatch(const struct tw_conn *c, int fd)
{
	for (int i = 0; i < PROGRAM_EPOLLS; i++) {
		uint64_t v = atomic_load(&program_epolls[i]);

		if (v && syscall(SYS_epoll_ctl, epoll_slot_fd(v), EPOLL_CTL_DEL, fd, NULL) < 0 &&
		    (errno == EBADF || errno == EINVAL))
			atomic_compare_exchange_strong(&program_epolls[i], &v, 0);
	}
	unwatch_async(c, fd);
}

/* The library's copy of c's socket for the closer (marked in the table), or -1. */
static int closer_copy(struct tw_conn *c, int fd)
{
	int libfd = libfd_dup(fd);

	if (libfd < 0)
		return -1;
	fdtab_set(libfd, fdt_libconn(conn_index(c)));
	return libfd;
}

/*
 * Hands c, with the library's copy libfd, to the closer, which waits under
 * mode until defer_ms. Counted as deferred from here on, until its record
 * (c->libfd >= 0 then). False when the closer went away under us (fork):
 * the caller ends it.
 */
static bool closer_handoff(struct tw_conn *c, int libfd, uint8_t mode)
{
	c->libfd = libfd;
	c->mode = mode;
	c->deadline_ns = c->t_close_ns + (uint64_t)c->pol.defer_ms * 1000000u;
	stats_defer_begin();
	return closer_submit(c);
}

/*
 * A vfork child let go of its copy of fd: the entry goes back into the
 * parent's table as it was. Closes fd with op first unless op is NULL.
 */
static int give_back(struct tw_conn *c, int fd, conn_close_fn op, void *arg)
{
	int ret = op ? op(fd, arg) : 0;

	atomic_fetch_add(&c->nfds, 1);
	fdtab_set(fd, fdt_conn(conn_index(c)));
	return ret;
}

/* What keeps c's end: a log line, the counters alone, or nothing. */
static uint8_t conn_kept(const struct tw_conn *c)
{
	if (c->pol.sink != TW_SINK_NONE)
		return KEPT_LINE;
	return stats_on() ? KEPT_COUNT : KEPT_NONE;
}

/*
 * Nothing but this thread can act on a socket between two of its calls:
 * one thread (glibc's __libc_single_threaded turns false at the first
 * pthread_create(), the library's closer's too, and stays false), no child
 * sharing this memory that the library counts (vfork, clone with CLONE_VM)
 * and none sharing the fds (clone with CLONE_FILES). Children with copies
 * of the fds are maybe_shared()'s.
 */
static bool rt_single(void)
{
	return __libc_single_threaded && !atomic_load_explicit(&rt_vforks, memory_order_relaxed) &&
	       !atomic_load_explicit(&rt_cloned, memory_order_relaxed);
}

/* The program's call lets go of its fd whatever happens (fclose flushes first, dup2 may fail). */
static bool via_plain(enum tw_via via)
{
	return via == TW_VIA_CLOSE || via == TW_VIA_CLOSE_RANGE || via == TW_VIA_CLOSEFROM ||
	       via == TW_VIA_EXEC;
}

/*
 * The program lets go of the last fd of c in this process: observe what is
 * needed (a peek; TCP_INFO where decide() asks for it; SIOCOUTQ when a reset
 * is at stake), decide, act. A normal close that sends the FIN learns who
 * was first either from its FIN sent by shutdown just before the close
 * (DO_SHUT) or from sock_diag after it (DO_CLOSE_ASK). The library sends
 * nothing the program's close would not. Returns op's result with its errno.
 */
static int conn_end(struct tw_conn *c, int fd, enum tw_via via, conn_close_fn op, void *arg)
{
	struct observed o = {
		.who = WHO_CLOSE,
		.mode = c->pol.close,
		.fallback = c->pol.fallback,
		.before = OBS_UNSEEN,
		.kept = conn_kept(c),
		.shut_wr = (c->flags & CONN_SHUT_WR) != 0,
		.linger0 = (c->flags & CONN_LINGER0) != 0,
		.up = c->state == TW_ESTABLISHED,
		.plain = via_plain(via),
	};
	bool shared = maybe_shared(c);
	uint64_t cookie = DIAG_ANY_COOKIE;
	socklen_t cl = sizeof(cookie);
	struct verdict v;
	int ret, saved;
	int libfd;

	o.shared = shared;
	o.single = rt_single();
	observe_close(c, fd, via, &o);
	v = decide(&o);
	if (v.act == DO_LOOK) {
		observe_info(c, fd, &o);
		if (shared && o.mode != TW_CLOSE_NORMAL && !(c->flags & CONN_SHARED) &&
		    !holders_elsewhere(fd)) {
			if (!claim_alone(fd))
				o.before = 0;
			shared = false;
		}
		o.shared = shared;
		if (shared && getsockopt(fd, SOL_SOCKET, SO_COOKIE, &cookie, &cl) < 0)
			cookie = DIAG_ANY_COOKIE;
		if (o.before == TW_ESTABLISHED && o.unread == UNREAD_NONE && !shared &&
		    !o.shut_wr && (o.mode == TW_CLOSE_ABORT ||
				   (o.mode == TW_CLOSE_DEFER && o.fallback == TW_FALLBACK_ABORT)))
			o.outq_empty = observe_outq(fd) == 0;
		if (!closer_running())
			o.closer_why = WHY_NO_CLOSER;
		else if (closer_count() >= TW_DEFER_CAP)
			o.closer_why = WHY_CAP;
		v = decide(&o);
	}
	if (v.act != DO_CLOSE_ASK && rt_foreign())
		return give_back(c, fd, op, arg);
	if (v.act == DO_DEFER || v.act == DO_WAIT_ACKED) {
		/* the library keeps a copy; the program's number is free at once */
		unwatch(c, fd);
		libfd = closer_copy(c, fd);
		if (libfd >= 0) {
			ret = op(fd, arg);
			saved = errno;
			if (!closer_handoff(c, libfd, v.mode)) {
				/* the closer went away under us (fork): a plain close */
				c->why = WHY_NO_CLOSER;
				c->mode = TW_CLOSE_NORMAL;
				libfd_close(c->libfd);
				conn_record(c, TW_END_ACTIVE, false, 0);
				conn_free(c);
			}
			errno = saved;
			return ret;
		}
		o.closer_why = WHY_NO_FD;
		v = decide(&o);
	}
	/* an urgent byte unread, which the peek skips, makes the close a reset: it goes alone */
	if (v.act == DO_SHUT && observe_urgent(fd)) {
		o.unread = UNREAD_DATA;
		if (o.before == OBS_UNSEEN)
			observe_info(c, fd, &o);
		v = decide(&o);
	}
	if (v.act == DO_SHUT) {
		observe_fin(c, fd, &o);
		v = decide(&o);
	}
	if (v.state)
		c->state = v.state;
	act_before_close(c, fd, &v);
	/* the question goes by 4-tuple: the local address while the fd is open */
	if (v.act == DO_CLOSE_ASK)
		conn_local(c, fd);
	ret = op(fd, arg);
	saved = errno;
	if (v.act == DO_CLOSE_ASK) {
		struct conn_tuple_look look = { .c = c };
		struct verdict a;
		uint64_t found;

		o.after = observe_after(&c->local, &c->remote, cookie,
					shared ? NULL : conn_tuple_free_here, &look, &o.after_state,
					&found);
		/*
		 * Asked by 4-tuple alone, the kernel may show a newer
		 * connection of this process that took it once ours was gone
		 * (a passive end leaves the port free at once): found before
		 * the retries, or looked for now.
		 */
		if (o.after == AFTER_HELD && cookie == DIAG_ANY_COOKIE &&
		    (look.taken || tuple_taken_here(c)))
			o.after = AFTER_GONE;
		if (o.after == AFTER_HELD && rt_foreign()) {
			give_back(c, fd, NULL, NULL);
			errno = saved;
			return ret;
		}
		a = decide(&o);
		v.record = a.record;
		if (a.state) {
			/* the peer's FIN crossed ours: TCP_INFO before the close did not count it */
			c->state = a.state;
			if (!o.fin)
				c->bytes_received += c->bytes_received != 0;
		}
		v.end = a.end;
		/* another holder may be recording this end at the same instant: the first claim does */
		if (v.record && cookie != DIAG_ANY_COOKIE && !shared_claim(cookie))
			v.record = false;
	}
	if (v.record) {
		if (o.fin)
			fin_uncount(c, &o, v.end);
		conn_record(c, (enum tw_end)v.end, false, 0);
	}
	conn_free(c);
	errno = saved;
	return ret;
}

/*
 * The program lets go of fd. The table entry is taken only by the process
 * the table belongs to: a child made by vfork() shares this memory, not the
 * fds (rt_foreign(): a getpid() only while such a child may run).
 */
int conn_release(int fd, enum tw_via via, conn_close_fn op, void *arg)
{
	int e0 = errno, ret, cancel;
	uint32_t v;

	/*
	 * close() is a cancellation point: a cancel already pending acts
	 * here, before anything is changed, as in libc's own. glibc's fclose()
	 * is not one (it closes with __close_nocancel()). None may act further
	 * in (op, the record's write and the sock_diag calls are cancellation
	 * points too): it would leave the table's entry taken and no record,
	 * and fork() held off for good.
	 */
	if (via == TW_VIA_CLOSE)
		pthread_testcancel();
	pthread_setcancelstate(PTHREAD_CANCEL_DISABLE, &cancel);
	table_enter();
	v = fdtab_get(fd);
	if ((!fdt_is_conn(v) || atomic_load(&conn_at(fdt_index(v))->nfds) > 1) && rt_foreign()) {
		ret = op(fd, arg);
		goto out;
	}
	if (fdt_is_forked_tcp(v))
		adopt_forked(fd, v);
	v = fdtab_take(fd);
	if (!fdt_is_conn(v))
		ret = op(fd, arg);
	else if (atomic_fetch_sub(&conn_at(fdt_index(v))->nfds, 1) > 1)
		ret = op(fd, arg);	/* another fd of this process still holds it */
	else
		ret = conn_end(conn_at(fdt_index(v)), fd, via, op, arg);
out:
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
	uint8_t met;

	if (!fdt_is_conn(v) || (how != SHUT_WR && how != SHUT_RDWR))
		return;
	c = conn_at(fdt_index(v));
	if (c->flags & CONN_SHUT_WR)
		return;
	if (getsockopt(fd, IPPROTO_TCP, TCP_INFO, &ti, &tl) < 0)
		return;
	/* read after the program's FIN went out: whether the peer's was there first */
	met = met_by_fin(c, fd, &ti, tl);
	c->state = met ? met : ti.tcpi_state;
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
		struct tw_conn *c = conn_at(fdt_index(v));

		c->flags = on ? (c->flags | f) : (c->flags & (uint8_t)~f);
	} else if (fdt_is_tcp(v)) {
		/* only while it is still that socket: a concurrent close wins */
		fdtab_replace(fd, v, on ? (v | f) : (v & ~(uint32_t)f));
	}
}

void conn_note_sent(int fd)
{
	uint32_t v = fdtab_get(fd);

	if (fdt_is_conn(v))
		conn_at(fdt_index(v))->flags |= CONN_SHARED;
	else if (fdt_is_tcp(v))
		/* not connected yet: the receiver holds it as a forked child would */
		fdtab_replace(fd, v, v | FDT_TCP_FORKED);
}

void conn_note_dup(int oldfd, int newfd)
{
	uint32_t v = fdtab_get(oldfd);

	if (oldfd == newfd || (v == FDT_NONE && fdtab_get(newfd) == FDT_NONE) || rt_foreign())
		return;
	table_enter();
	v = fdtab_get(oldfd);
	if (fdt_is_conn(v)) {
		atomic_fetch_add(&conn_at(fdt_index(v))->nfds, 1);
		note_fd(newfd);
	} else if (fdt_is_tcp(v)) {
		/* a socket with two fds before it connects: connect() links them (link_dups()) */
		uint32_t old = v;

		v |= FDT_TCP_DUPED;
		fdtab_replace(oldfd, old, v);
		note_fd(oldfd);
		note_fd(newfd);
	} else {
		v = FDT_NONE;
	}
	fdtab_set(newfd, v);
	table_leave();
}

static void conn_watch_set(int fd, uint8_t bit)
{
	uint32_t v = fdtab_get(fd);

	if (fdt_is_conn(v))
		__atomic_fetch_or(&conn_at(fdt_index(v))->watch, bit, __ATOMIC_RELAXED);
}

void conn_note_stream(int fd)
{
	conn_watch_set(fd, CONN_W_STDIO);
}

/*
 * An owner is a file's: an accepted socket gets none from its listener,
 * and dups share it. On a connection, only that connection's close looks at
 * O_ASYNC. On a file that is no TCP socket (a pipe, a unix socket: nginx's
 * channel to its master), none ever does. On a TCP socket not yet
 * connected, or one the library does not know (made by raw system call,
 * received), every connection's close does from then on (rt_owner_set).
 */
void conn_note_owner(int fd)
{
	uint32_t v = fdtab_get(fd);
	int proto = 0, e0 = errno;
	socklen_t l = sizeof(proto);

	if (fdt_is_conn(v)) {
		conn_watch_set(fd, CONN_W_OWNER);
		return;
	}
	if (v == FDT_OTHER || (v == FDT_NONE &&
			       (syscall(SYS_getsockopt, fd, SOL_SOCKET, SO_PROTOCOL, &proto, &l) < 0 ||
				proto != IPPROTO_TCP))) {
		errno = e0;
		return;
	}
	errno = e0;
	atomic_store(&rt_owner_set, true);
}

static int op_close(int fd, void *arg)
{
	(void)arg;
	return (int)syscall(SYS_close, fd);
}

/*
 * The process is ending and still holds c on fd. Nothing is closed, shut
 * down or reset under the feet of its other threads and of the exit
 * handlers that run after this one: the kernel closes the fd when the
 * process ends, and the record says what that close does (a FIN from here
 * first, or the peer's already in, or a reset for data left unread). Under
 * `defer` (and `abort` with data not yet acknowledged) the holder takes a
 * copy and waits for the peer's FIN (hold.h); a reset is only asked for
 * (SO_LINGER {1,0}), and happens at that same close.
 */
static void exit_one(struct tw_conn *c, int fd, enum tw_via via)
{
	struct observed o = {
		.who = WHO_EXIT,
		.mode = c->pol.close,
		.fallback = c->pol.fallback,
		.kept = conn_kept(c),
		.shut_wr = (c->flags & CONN_SHUT_WR) != 0,
		.linger0 = (c->flags & CONN_LINGER0) != 0,
	};
	struct verdict v;
	int libfd;

	bool shared = maybe_shared(c);

	if ((c->flags & CONN_TAKEN) ||
	    (shared && ((c->flags & CONN_SHARED) || holders_elsewhere(fd)))) {
		/*
		 * Another process holds it too. This one lets go now, as a
		 * close: left to the end of the process, its reference would
		 * outlive the other holder's close, which then saw it still
		 * held and recorded nothing, and nobody would record the end.
		 * So does one the program here never used as a connection
		 * (CONN_TAKEN), whose other holder has just let go: what its
		 * end will be is then known, not foretold.
		 */
		conn_end(c, fd, via, op_close, NULL);
		return;
	}
	observe_at_close(c, fd, via, &o);
	if (shared && !claim_alone(fd))
		o.before = 0;
	if (o.before == TW_ESTABLISHED && o.unread == UNREAD_NONE && o.mode != TW_CLOSE_NORMAL)
		o.outq_empty = observe_outq(fd) == 0;
	/*
	 * What a stdio stream on it still buffers (stdin, stdout and stderr
	 * for an inetd-style program; a stream from fdopen()), exit() writes
	 * after this pass: no reset may be armed before it, nor in the holder,
	 * which cannot see it. Not known to be all acknowledged: a close.
	 */
	if (o.mode == TW_CLOSE_ABORT && ((c->watch & CONN_W_STDIO) || fd <= STDERR_FILENO)) {
		o.outq_empty = false;
		o.closer_why = WHY_UNACKED;
	}
	v = decide(&o);
	if (v.act == DO_HOLD) {
		/* the fd may stay the program's a while (exit handlers, a failed exec) */
		unwatch_async(c, fd);
		libfd = closer_copy(c, fd);
		if (libfd >= 0) {
			c->libfd = libfd;
			c->flags |= CONN_HELD;
			c->mode = v.mode;
			c->deadline_ns = c->t_close_ns + (uint64_t)c->pol.defer_ms * 1000000u;
			stats_defer_begin();
			hold_add(c);
			return;
		}
		o.closer_why = WHY_NO_FD;
		v = decide(&o);
	}
	act_before_close(c, fd, &v);
	if (v.record)
		conn_record(c, (enum tw_end)v.end, false, 0);
	conn_free(c);
}

/*
 * A forked child is ending and holds a copy of a socket that was open at
 * the fork and is no connection here, nor a listener: one the other process
 * may be connecting at this moment. Left to the end of the process, the
 * child's reference could outlive that connection's close there, which
 * then saw it still held and recorded nothing, and nobody would record the
 * end. Nothing here uses it: it goes now.
 */
static void let_go_unconnected(int fd, uint32_t v)
{
	int on = 1;
	socklen_t l = sizeof(on);

	if (getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &on, &l) < 0 || on)
		return;
	if (fdtab_replace(fd, v, FDT_NONE))
		syscall(SYS_close, fd);
}

/*
 * The process is ending (exit), or its image is (exec: only the fds marked
 * close-on-exec, which the exec closes unseen): every connection it holds
 * is recorded as that close will end it (exit_one()), out of the table, its
 * fd left open; then every deferred connection goes to the holder, as the
 * closer's thread and fds end too. Should an exec fail, the program has its
 * fds as they were and goes on with its closer: their records stand, and
 * their later closes pass untouched. Whether the parent or a child holds
 * them is read from their fds once for all (holders_begin()).
 */
static void let_go_all(enum tw_via via)
{
	int hi = atomic_load(&fd_hi), cancel;
	bool exec = via == TW_VIA_EXEC;

	pthread_setcancelstate(PTHREAD_CANCEL_DISABLE, &cancel);
	holders_begin();
	for (int fd = 0; fd <= hi; fd++) {
		uint32_t v = fdtab_get(fd);
		long fl;

		if (!fdt_may_be_conn(v))
			continue;
		if (exec && ((fl = syscall(SYS_fcntl, fd, F_GETFD)) < 0 || !(fl & FD_CLOEXEC)))
			continue;
		table_enter();
		v = fdtab_get(fd);
		if (fdt_is_forked_tcp(v)) {
			adopt_forked(fd, v);
			if (!exec && rt.forked && !fdt_is_conn(fdtab_get(fd)))
				let_go_unconnected(fd, v);
		}
		/* out of the table: a close of it after this passes through untouched */
		if (fdt_is_conn(fdtab_get(fd)))
			v = fdtab_take(fd);
		if (fdt_is_conn(v) && atomic_fetch_sub(&conn_at(fdt_index(v))->nfds, 1) == 1)
			exit_one(conn_at(fdt_index(v)), fd, via);
		table_leave();
	}
	holders_end();
	pthread_setcancelstate(cancel, NULL);
	hold_all();
}

void conn_exit_all(enum tw_via via)
{
	let_go_all(via);
}

void conn_exec_all(void)
{
	let_go_all(TW_VIA_EXEC);
}
