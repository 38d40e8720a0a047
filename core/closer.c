// SPDX-License-Identifier: MIT
/*
 * The deferred closer: one helper thread per process that holds the
 * connections the program closed under `defer` or `abort` until they may end.
 *
 * The program's close hands a connection over through a lock-free stack and an
 * eventfd (async-signal-safe, no allocation). The thread waits with epoll on
 * every deferred socket and on the earliest deadline of a binary min-heap, so
 * each event costs O(log n). It never reads the peer's data: a peek tells
 * the peer's FIN from its data, and data is answered with a reset at once,
 * as the kernel's closed socket would answer it. Its fds and its thread come
 * at the first connection that may be deferred, not before.
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <linux/sockios.h>
#include <netinet/in.h>
#include <linux/tcp.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>

#include "closer.h"
#include "decide.h"
#include "diag.h"
#include "diagmsg.h"
#include "observe.h"

#define CLOSER_EVENTS	128
#define ABORT_POLL_MAX	6	/* abort polls SIOCOUTQ after 1, 2, 4 ... 64 ms */

static struct {
	pthread_mutex_t lock;		/* heap, deadlines, fds; held by the thread while it works */
	pthread_mutex_t start_lock;
	pthread_cond_t idle;		/* count reached 0 */
	_Atomic bool running;
	_Atomic int epfd, evfd;
	_Atomic uint32_t subs;		/* handed over, not yet taken: index + 1 */
	_Atomic unsigned count;		/* deferred now, handed over ones included */
	uint32_t *heap;			/* slot indexes ordered by deadline */
	uint32_t heap_n, heap_cap;
	bool exiting;
	uint64_t exit_ns;
} cl = {
	.lock = PTHREAD_MUTEX_INITIALIZER,
	.start_lock = PTHREAD_MUTEX_INITIALIZER,
	.idle = PTHREAD_COND_INITIALIZER,
	.epfd = -1,
	.evfd = -1,
};

bool closer_running(void)
{
	return atomic_load(&cl.running);
}

unsigned closer_count(void)
{
	return atomic_load(&cl.count);
}

static uint64_t key(uint32_t i)
{
	return conn_at(cl.heap[i])->deadline_ns;
}

/*
 * The slot's heap position shares its word with the free-list link, which
 * conn_alloc() may read at any time from a stale list head (and discard):
 * written atomically so that the two never race.
 */
static void heap_put(uint32_t i, uint32_t idx)
{
	cl.heap[i] = idx;
	__atomic_store_n(&conn_at(idx)->heap, i, __ATOMIC_RELAXED);
}

static void heap_up(uint32_t i)
{
	uint32_t idx = cl.heap[i];
	uint64_t k = conn_at(idx)->deadline_ns;

	while (i > 0 && key((i - 1) / 2) > k) {
		heap_put(i, cl.heap[(i - 1) / 2]);
		i = (i - 1) / 2;
	}
	heap_put(i, idx);
}

static void heap_down(uint32_t i)
{
	uint32_t idx = cl.heap[i];
	uint64_t k = conn_at(idx)->deadline_ns;

	for (;;) {
		uint32_t l = 2 * i + 1, m = l;

		if (l >= cl.heap_n)
			break;
		if (l + 1 < cl.heap_n && key(l + 1) < key(l))
			m = l + 1;
		if (key(m) >= k)
			break;
		heap_put(i, cl.heap[m]);
		i = m;
	}
	heap_put(i, idx);
}

/* the key at i changed: move it up or down to its place */
static void heap_fix(uint32_t i)
{
	uint32_t idx = cl.heap[i];

	heap_up(i);
	heap_down(conn_at(idx)->heap);
}

static int heap_push(struct tw_conn *c)
{
	if (cl.heap_n == cl.heap_cap) {
		/* by half: a doubling could leave 4 bytes a connection unused */
		uint32_t cap = cl.heap_cap ? cl.heap_cap + cl.heap_cap / 2 : 1024;
		uint32_t *h = realloc(cl.heap, cap * sizeof(*h));

		if (!h)
			return -ENOMEM;
		cl.heap = h;
		cl.heap_cap = cap;
	}
	heap_put(cl.heap_n, conn_index(c));
	cl.heap_n++;
	heap_up(cl.heap_n - 1);
	return 0;
}

static void heap_remove(struct tw_conn *c)
{
	uint32_t i = c->heap;

	if (i >= cl.heap_n || cl.heap[i] != conn_index(c))
		return;
	cl.heap_n--;
	if (i == cl.heap_n)
		return;
	heap_put(i, cl.heap[cl.heap_n]);
	heap_fix(i);
}

/* the latest moment c may stay deferred: defer_ms, or at exit exit_wait_ms */
static uint64_t final_ns(const struct tw_conn *c)
{
	uint64_t t = c->t_close_ns + (uint64_t)c->pol.defer_ms * 1000000u;
	uint64_t e = cl.exit_ns + (uint64_t)c->pol.exit_wait_ms * 1000000u;

	return cl.exiting && e < t ? e : t;
}

/*
 * Acts on the verdict for c: a reset (SO_LINGER {1,0}) or a close of the
 * library's copy, and, when the close sent the FIN, the kernel asked who was
 * first. A copy held while the exiting program keeps its fd only leaves
 * epoll and goes: the kernel's close at the end of the process ends it.
 * Records, and gives the slot back. Holds cl.lock.
 */
static void finish(struct tw_conn *c, struct observed *o, struct verdict v)
{
	heap_remove(c);
	if (c->flags & CONN_HELD)
		epoll_ctl(atomic_load(&cl.epfd), EPOLL_CTL_DEL, c->libfd, NULL);
	if (v.act == DO_RESET) {
		struct linger l = { .l_onoff = 1, .l_linger = 0 };

		syscall(SYS_setsockopt, c->libfd, SOL_SOCKET, SO_LINGER, &l, sizeof(l));
	}
	libfd_close(c->libfd);	/* its last reference: epoll forgets it too */
	if (v.act == DO_CLOSE_ASK) {
		struct verdict a;
		uint64_t found;

		o->after = observe_after(&c->local, &c->remote, DIAG_ANY_COOKIE, &o->after_state,
					 &found);
		a = decide(o);
		v.end = a.end;
	}
	if (v.why)
		c->why = v.why;
	if (v.record)
		conn_record(c, (enum tw_end)v.end, v.timeout, clock_mono_ns());
	conn_free(c);
	atomic_fetch_sub(&cl.count, 1);
}

/*
 * Looks at c (now: a peek; at a deadline also SIOCOUTQ) and acts on what
 * decide() makes of it. Returns true when c is over.
 */
static bool look(struct tw_conn *c, enum obs_who who, uint64_t now)
{
	struct observed o = {
		.who = (uint8_t)who,
		.mode = c->mode,
		.fallback = c->pol.fallback,
		.before = TW_ESTABLISHED,
		.held = (c->flags & CONN_HELD) != 0,
		.linger0 = false,
	};
	struct verdict v;

	o.unread = observe_unread(c->libfd, c->flags & CONN_PEEKOFF);
	if (who == WHO_DEADLINE && o.unread == UNREAD_NONE) {
		o.final = now >= final_ns(c);
		o.outq_empty = observe_outq(c->libfd) == 0;
	}
	v = decide(&o);
	if (v.act == DO_KEEP)
		return false;
	finish(c, &o, v);
	return true;
}

static void on_event(struct tw_conn *c, uint32_t events)
{
	if (look(c, WHO_EVENT, 0))
		return;
	if (events & (EPOLLERR | EPOLLHUP)) {
		struct observed o = { .who = WHO_EVENT, .mode = c->mode, .unread = UNREAD_ERROR,
				      .held = (c->flags & CONN_HELD) != 0 };

		finish(c, &o, decide(&o));
	}
}

/*
 * A deadline passed. `abort` resets once the peer has acknowledged all the
 * program wrote (SIOCOUTQ = 0), backing off while it waits; `defer` applies
 * its fallback at defer_ms: the peer's FIN did not come. A reset that would
 * lose data is not made: a close instead (why: unacked).
 */
static void on_deadline(struct tw_conn *c, uint64_t now)
{
	uint64_t fin = final_ns(c);

	if (look(c, WHO_DEADLINE, now))
		return;
	if (c->mode == TW_CLOSE_ABORT) {
		c->deadline_ns = now + (1000000ull << c->backoff);
		if (c->backoff < ABORT_POLL_MAX)
			c->backoff++;
		if (c->deadline_ns > fin)
			c->deadline_ns = fin;
	} else {
		c->deadline_ns = fin;
	}
	heap_fix(c->heap);
}

/* Takes what close handed over: into epoll and the heap. Holds cl.lock. */
static void take_submissions(void)
{
	uint32_t idx = atomic_exchange(&cl.subs, 0);

	while (idx) {
		struct tw_conn *c = conn_at(idx - 1);
		struct epoll_event ev = { .events = EPOLLIN | EPOLLRDHUP, .data.u32 = idx };

		idx = c->next;
		if (c->mode == TW_CLOSE_ABORT)
			c->deadline_ns = clock_mono_ns() + 1000000u;
		if (c->deadline_ns > final_ns(c))
			c->deadline_ns = final_ns(c);
		if (heap_push(c) < 0) {
			struct observed o = { .who = WHO_DEADLINE, .mode = c->mode,
					      .before = TW_ESTABLISHED, .final = true,
					      .held = (c->flags & CONN_HELD) != 0 };

			c->heap = UINT32_MAX;
			finish(c, &o, decide(&o));
			continue;
		}
		if (epoll_ctl(atomic_load(&cl.epfd), EPOLL_CTL_ADD, c->libfd, &ev) < 0)
			on_deadline(c, final_ns(c));
	}
}

static int timeout_ms(void)
{
	uint64_t now, k;

	if (!cl.heap_n)
		return -1;
	now = clock_mono_ns();
	k = key(0);
	if (k <= now)
		return 0;
	return (int)((k - now + 999999) / 1000000);
}

static void *closer_main(void *arg)
{
	struct epoll_event ev[CLOSER_EVENTS];
	uint64_t junk;

	(void)arg;
	pthread_mutex_lock(&cl.lock);
	for (;;) {
		int tmo = timeout_ms(), n;
		uint64_t now;

		pthread_mutex_unlock(&cl.lock);
		n = epoll_wait(atomic_load(&cl.epfd), ev, CLOSER_EVENTS, tmo);
		pthread_mutex_lock(&cl.lock);
		take_submissions();
		for (int i = 0; i < n; i++) {
			uint32_t idx = ev[i].data.u32, h;

			if (!idx) {
				if (read(atomic_load(&cl.evfd), &junk, sizeof(junk)) < 0) {
					/* EAGAIN: another wake-up took it */
				}
				continue;
			}
			/*
			 * A connection finished earlier in this batch is out of
			 * the heap, and its slot may be anyone's by now.
			 */
			h = __atomic_load_n(&conn_at(idx - 1)->heap, __ATOMIC_RELAXED);
			if (h >= cl.heap_n || cl.heap[h] != idx - 1)
				continue;
			on_event(conn_at(idx - 1), ev[i].events);
		}
		now = clock_mono_ns();
		while (cl.heap_n && key(0) <= now)
			on_deadline(conn_at(cl.heap[0]), now);
		if (!atomic_load(&cl.count))
			pthread_cond_broadcast(&cl.idle);
	}
	return NULL;
}

/*
 * The closer's epoll and eventfd, in the library's fd range. Made with the
 * thread, at the first connection that may be deferred. Holds start_lock.
 */
static int closer_fds(void)
{
	struct epoll_event ev = { .events = EPOLLIN, .data.u32 = 0 };
	int ep, efd, err;

	if (atomic_load(&cl.epfd) >= 0)
		return 0;
	ep = epoll_create1(EPOLL_CLOEXEC);
	if (ep < 0)
		return -errno;
	ep = libfd_move(ep, FDT_LIB);
	efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (efd < 0) {
		err = -errno;
		goto fail;
	}
	efd = libfd_move(efd, FDT_LIB);
	if (epoll_ctl(ep, EPOLL_CTL_ADD, efd, &ev) < 0) {
		err = -errno;
		libfd_close(efd);
		goto fail;
	}
	atomic_store(&cl.evfd, efd);
	atomic_store(&cl.epfd, ep);
	return 0;
fail:
	libfd_close(ep);
	return err;
}

/*
 * Starts the closer thread, created with every signal blocked so that no
 * handler of the program ever runs on it. Called from connect/accept, never
 * from close, which must not allocate.
 */
int closer_start(void)
{
	sigset_t all, old;
	pthread_attr_t attr;
	pthread_t tid;
	int err = 0;

	pthread_mutex_lock(&cl.start_lock);
	if (atomic_load(&cl.running))
		goto out;
	err = closer_fds();
	if (err < 0)
		goto fail;
	sigfillset(&all);
	pthread_attr_init(&attr);
	pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
	pthread_attr_setstacksize(&attr, 128 * 1024);
	pthread_sigmask(SIG_SETMASK, &all, &old);
	err = -pthread_create(&tid, &attr, closer_main, NULL);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	pthread_attr_destroy(&attr);
	if (err < 0)
		goto fail;
	atomic_store(&cl.running, true);
out:
	pthread_mutex_unlock(&cl.start_lock);
	return 0;
fail:
	SHIM_ERR("cannot start the deferred closer: %s; deferred closes fall back", strerror(-err));
	pthread_mutex_unlock(&cl.start_lock);
	return err;
}

/* Lock-free push and a wake-up: all close may do. Async-signal-safe. */
bool closer_submit(struct tw_conn *c)
{
	uint32_t head, idx = conn_index(c) + 1;
	uint64_t one = 1;

	if (!atomic_load(&cl.running))
		return false;
	atomic_fetch_add(&cl.count, 1);
	head = atomic_load(&cl.subs);
	do {
		__atomic_store_n(&c->next, head, __ATOMIC_RELAXED);
	} while (!atomic_compare_exchange_weak(&cl.subs, &head, idx));
	if (write(atomic_load(&cl.evfd), &one, sizeof(one)) < 0) {
		/* EAGAIN: the counter is full of wake-ups already */
	}
	return true;
}

/*
 * The program is about to dup2/dup3 onto fd, one of the closer's: move ours
 * to another number first. The epoll registration of a moved socket stays
 * keyed on the old number, which is harmless: the closer never deletes
 * registrations; closing the last reference does.
 */
void closer_evict(int fd)
{
	uint32_t mark = fdtab_get(fd);
	long nfd;

	pthread_mutex_lock(&cl.lock);
	nfd = syscall(SYS_fcntl, fd, F_DUPFD_CLOEXEC, rt.libfd_base);
	if (nfd >= 0) {
		fdtab_set((int)nfd, mark);
		if (fdt_is_libconn(mark))
			conn_at(fdt_index(mark))->libfd = (int)nfd;
		if (atomic_load(&cl.epfd) == fd)
			atomic_store(&cl.epfd, (int)nfd);
		if (atomic_load(&cl.evfd) == fd)
			atomic_store(&cl.evfd, (int)nfd);
	}
	fdtab_set(fd, FDT_NONE);
	pthread_mutex_unlock(&cl.lock);
}

/*
 * At exit: every deferred connection gets at most its exit_wait_ms from now,
 * then its fallback; waits until the closer has ended them all.
 */
void closer_drain(uint64_t now_ns)
{
	struct timespec until;
	uint64_t one = 1;

	if (!atomic_load(&cl.running) || !atomic_load(&cl.count))
		return;
	pthread_mutex_lock(&cl.lock);
	cl.exiting = true;
	cl.exit_ns = now_ns;
	for (uint32_t i = 0; i < cl.heap_n; i++) {
		struct tw_conn *c = conn_at(cl.heap[i]);

		if (c->deadline_ns > final_ns(c))
			c->deadline_ns = final_ns(c);
	}
	for (uint32_t i = cl.heap_n / 2 + 1; i-- > 0;)
		if (i < cl.heap_n)
			heap_down(i);
	if (write(atomic_load(&cl.evfd), &one, sizeof(one)) < 0) {
		/* already woken */
	}
	clock_gettime(CLOCK_REALTIME, &until);
	until.tv_sec += TW_MS_MAX / 1000 + 2;
	while (atomic_load(&cl.count))
		if (pthread_cond_timedwait(&cl.idle, &cl.lock, &until) == ETIMEDOUT)
			break;
	pthread_mutex_unlock(&cl.lock);
}

void closer_fork_prepare(void)
{
	pthread_mutex_lock(&cl.start_lock);
	pthread_mutex_lock(&cl.lock);
}

void closer_fork_parent(void)
{
	pthread_mutex_unlock(&cl.lock);
	pthread_mutex_unlock(&cl.start_lock);
}

static void forget(struct tw_conn *c)
{
	libfd_close(c->libfd);
	conn_free(c);
}

/*
 * In a forked child: the thread did not come along, and the child's copies
 * of the deferred sockets must not keep the parent's connections open. Close
 * them all and start again empty, with an epoll instance of its own.
 */
void closer_fork_child(void)
{
	uint32_t idx = atomic_exchange(&cl.subs, 0);

	while (idx) {
		struct tw_conn *c = conn_at(idx - 1);

		idx = c->next;
		forget(c);
	}
	for (uint32_t i = 0; i < cl.heap_n; i++)
		forget(conn_at(cl.heap[i]));
	cl.heap_n = 0;
	if (atomic_load(&cl.epfd) >= 0)
		libfd_close(atomic_load(&cl.epfd));
	if (atomic_load(&cl.evfd) >= 0)
		libfd_close(atomic_load(&cl.evfd));
	atomic_store(&cl.epfd, -1);
	atomic_store(&cl.evfd, -1);
	atomic_store(&cl.count, 0);
	atomic_store(&cl.running, false);
	cl.exiting = false;
	/* locked by closer_fork_prepare() in this very thread: released as in the parent */
	pthread_mutex_unlock(&cl.lock);
	pthread_mutex_unlock(&cl.start_lock);
	pthread_cond_init(&cl.idle, NULL);
	/* the epoll instance was the parent's: the child makes its own when it defers */
}
