// SPDX-License-Identifier: MIT
/*
 * The deferred closer: one helper thread per process that holds the
 * connections the program closed under `defer` or `abort` until they may end.
 *
 * The program's close hands a connection over through a lock-free stack, and
 * an eventfd or a futex when the thread must look sooner (async-signal-safe,
 * no allocation). The thread waits with epoll on every deferred socket and on
 * the earliest deadline of a binary min-heap, so each event costs O(log n);
 * while the program keeps closing it naps instead and looks once every
 * CLOSER_NAP_NS, and the program's closes settle what is ready meanwhile
 * (reap()). It never reads the peer's data: a peek tells
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
#include <poll.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <linux/futex.h>
#include <limits.h>

#include "closer.h"
#include "decide.h"
#include "diag.h"
#include "diagmsg.h"
#include "observe.h"
#include "settle.h"
#include "sink.h"

#define CLOSER_EVENTS	128
/*
 * Longest wait in epoll: an epoll closed under a thread waiting in it keeps
 * waiting, deaf to close's wake-ups, until this runs out.
 */
#define CLOSER_IDLE_MS	1000
/*
 * While the program keeps handing connections over (one within the last
 * CLOSER_NAP_NS), the thread naps: it sleeps on a futex, deaf to the sockets,
 * and looks at them every CLOSER_NAP_NS, many at a time; the program's own
 * closes meanwhile settle what is ready (closer_submit()). A peer's FIN then
 * waits at most CLOSER_NAP_NS for its close. When the program goes quiet the
 * thread sleeps in epoll again, woken by each FIN.
 */
#define CLOSER_NAP_NS	1000000ull
/* what a close of the program looks at, at most; after one that settled none it skips up to */
#define REAP_MAX	16
#define REAP_SKIP_MAX	15

static struct {
	pthread_mutex_t lock;		/* heap, deadlines, fds; held by the thread while it works */
	pthread_mutex_t start_lock;
	_Atomic bool running;
	_Atomic bool said_no_start;	/* the failure to start it was reported */
	_Atomic bool deaf;		/* a wake-up failed: the eventfd is gone */
	bool fork_start;		/* a forked child starts its own (not under TSan) */
	bool stop;			/* closer_pause(): the thread is to end */
	pthread_t thread;
	_Atomic int tid;		/* the thread's kernel id, to see it gone */
	_Atomic int epfd, evfd;
	_Atomic uint32_t subs;		/* handed over, not yet taken: index + 1 */
	_Atomic uint64_t wake_ns;	/* when the thread wakes by itself; 0: it is awake */
	_Atomic uint64_t sub_ns;	/* the close time of the latest hand-over */
	_Atomic bool napping;		/* the thread sleeps on nap, deaf to the sockets */
	_Atomic uint32_t nap;		/* futex word of the nap: bumped to end it */
	_Atomic unsigned count;		/* deferred now, handed over ones included */
	uint32_t gone_gen;		/* bumped when a connection leaves the heap */
	_Atomic uint32_t reap_skip;	/* closes that skip reap() */
	uint32_t reap_backoff;		/* how many the next one that finds nothing skips */
	uint32_t *heap;			/* slot indexes ordered by deadline */
	uint32_t heap_n, heap_cap;
} cl = {
	.lock = PTHREAD_MUTEX_INITIALIZER,
	.start_lock = PTHREAD_MUTEX_INITIALIZER,
	.epfd = -1,
	.evfd = -1,
};

/* bumped at every end, and woken when a connect waits for one (closer_wait_end()) */
static _Atomic uint32_t ends;
static _Atomic int end_waiters;

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
		/*
		 * mmap, not malloc: glibc would give the thread an arena of its
		 * own, 64 MiB of address space reserved (128 MiB mapped, then
		 * trimmed) that a program under `ulimit -v` misses.
		 */
		uint32_t *h = cl.heap ?
			      mremap(cl.heap, cl.heap_cap * sizeof(*h), cap * sizeof(*h),
				     MREMAP_MAYMOVE) :
			      mmap(NULL, cap * sizeof(*h), PROT_READ | PROT_WRITE,
				   MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);

		if (h == MAP_FAILED)
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

/* the latest moment c may stay deferred */
static uint64_t final_ns(const struct tw_conn *c)
{
	return c->t_close_ns + (uint64_t)c->pol.defer_ms * 1000000u;
}

/* Out of the heap, then settle_act(). Holds cl.lock. */
static void finish(struct tw_conn *c, struct observed *o, struct verdict v)
{
	heap_remove(c);
	cl.gone_gen++;
	settle_act(c, o, v);
	atomic_fetch_sub(&cl.count, 1);
	atomic_fetch_add(&ends, 1);
	if (atomic_load(&end_waiters))
		syscall(SYS_futex, &ends, FUTEX_WAKE_PRIVATE, INT_MAX, NULL, NULL, 0);
}

/*
 * Looks at c and acts on what decide() makes of it; true when c is over.
 * events: what epoll said (0 at a deadline). Unrecorded, the event says
 * enough: a FIN (with data before it or not: the close then resets, as
 * decide() would), data alone (reset now), or an error; only a record needs
 * the peek's precision.
 */
static bool look(struct tw_conn *c, enum obs_who who, uint64_t now, uint32_t events)
{
	bool err = events & (EPOLLERR | EPOLLHUP);
	struct observed o;
	struct verdict v;

	if (who == WHO_EVENT && !conn_recorded(c))
		v = settle_look_as(c, who, false, err,
				   err ? UNREAD_ERROR : (events & EPOLLRDHUP) ? UNREAD_EOF :
				   UNREAD_DATA, &o);
	else
		v = settle_look(c, who, now >= final_ns(c), err, &o);

	if (v.act == DO_KEEP)
		return false;
	finish(c, &o, v);
	return true;
}

static void on_event(struct tw_conn *c, uint32_t events)
{
	look(c, WHO_EVENT, 0, events);
}

/*
 * A deadline passed: `defer` applies its fallback at defer_ms, `abort`
 * resets once everything is acknowledged (settle_next()). A reset that
 * would lose data is not made: a close instead (why: unacked).
 */
static void on_deadline(struct tw_conn *c, uint64_t now)
{
	if (look(c, WHO_DEADLINE, now, 0))
		return;
	c->deadline_ns = settle_next(c, now, final_ns(c));
	heap_fix(c->heap);
}

/* onto the lock-free stack of what close hands over; async-signal-safe */
static void push_sub(struct tw_conn *c)
{
	uint32_t head = atomic_load(&cl.subs), idx = conn_index(c) + 1;

	do {
		__atomic_store_n(&c->next, head, __ATOMIC_RELAXED);
	} while (!atomic_compare_exchange_weak(&cl.subs, &head, idx));
}

/*
 * Takes what close handed over into the heap; close has put it into epoll
 * already, or left it out (c->unwatched) while the thread napped or when
 * its epoll_ctl failed: it goes in here (failing again: its fallback now).
 * Returns how many went into epoll here. Holds cl.lock.
 */
static int take_submissions(void)
{
	uint32_t idx = atomic_exchange(&cl.subs, 0);
	int added = 0;

	while (idx) {
		struct tw_conn *c = conn_at(idx - 1);
		struct epoll_event ev = { .events = EPOLLIN | EPOLLRDHUP, .data.u32 = idx };

		idx = c->next;
		if (c->deadline_ns > final_ns(c))
			c->deadline_ns = final_ns(c);
		if (heap_push(c) < 0) {
			struct observed o;
			struct verdict v = settle_look(c, WHO_DEADLINE, true, false, &o);

			c->heap = UINT32_MAX;
			finish(c, &o, v);
			continue;
		}
		if (!c->unwatched)
			continue;
		if (epoll_ctl(atomic_load(&cl.epfd), EPOLL_CTL_ADD, c->libfd, &ev) < 0 &&
		    errno != EEXIST) {
			on_deadline(c, final_ns(c));
			continue;
		}
		c->unwatched = 0;
		added++;
	}
	return added;
}

/*
 * The top of the stack, taken off it. Only the holder of cl.lock takes, so
 * the top it read cannot go and come back (ABA) before its swap.
 */
static uint32_t pop_sub(void)
{
	uint32_t head = atomic_load(&cl.subs);

	while (head && !atomic_compare_exchange_weak(&cl.subs, &head,
			__atomic_load_n(&conn_at(head - 1)->next, __ATOMIC_RELAXED)))
		;
	return head;
}

/* look() reads poll's revents as epoll's events: the same bits */
_Static_assert(POLLIN == EPOLLIN && POLLRDHUP == EPOLLRDHUP && POLLERR == EPOLLERR &&
	       POLLHUP == EPOLLHUP, "poll and epoll events differ");

/*
 * A program's close settles what close handed over without epoll and is
 * ready now, among the newest REAP_MAX on the stack: one poll, and each
 * ready one goes to look() as on an epoll event in the thread. The rest
 * stays on the stack for the thread: no allocation (the heap's growth), no
 * epoll_ctl and no deadline here. Returns how many were settled. Holds
 * cl.lock.
 */
static int reap_some(void)
{
	static const struct timespec now;
	struct pollfd pf[REAP_MAX];
	uint32_t who[REAP_MAX], idx;
	int n = 0, k = 0, r, settled = 0;

	while (n + k < REAP_MAX && (idx = pop_sub())) {
		struct tw_conn *c = conn_at(idx - 1);

		if (!c->unwatched) {
			who[REAP_MAX - ++k] = idx - 1;
			continue;
		}
		/* in no heap: finish() must not take it for the one at c->heap */
		__atomic_store_n(&c->heap, UINT32_MAX, __ATOMIC_RELAXED);
		pf[n] = (struct pollfd){ .fd = c->libfd, .events = POLLIN | POLLRDHUP };
		who[n++] = idx - 1;
	}
	r = n ? (int)syscall(SYS_ppoll, pf, (nfds_t)n, &now, NULL, 8) : 0;
	for (int i = 0; i < n; i++) {
		struct tw_conn *c = conn_at(who[i]);

		if (r > 0 && pf[i].revents && !(pf[i].revents & POLLNVAL) &&
		    look(c, WHO_EVENT, 0, pf[i].revents))
			settled++;
		else
			push_sub(c);
	}
	while (k)
		push_sub(conn_at(who[REAP_MAX - k--]));
	return settled;
}

/* Is the program handing connections over now (one within CLOSER_NAP_NS)? */
static bool busy(uint64_t now)
{
	return atomic_load(&cl.sub_ns) + CLOSER_NAP_NS > now;
}

/*
 * Before the thread sleeps: it says whether it naps (busy()) and tells close
 * when it will wake, then looks at the stack once more, so that a connection
 * handed over meanwhile is either taken now or seen by its submitter, who
 * then wakes the thread if it must be looked at sooner. *seen: the nap's
 * futex word, read before that last look. Returns true to nap. Holds cl.lock.
 */
static bool before_sleep(uint32_t *seen)
{
	uint64_t now = clock_mono_ns(), wake;
	bool nap = busy(now);

	atomic_store(&cl.napping, nap);
	*seen = atomic_load(&cl.nap);
	do {
		take_submissions();
		wake = cl.heap_n ? key(0) : UINT64_MAX;
		if (nap && wake > now + CLOSER_NAP_NS)
			wake = now + CLOSER_NAP_NS;
		atomic_store(&cl.wake_ns, wake);
	} while (atomic_load(&cl.subs));
	return nap;
}

/* how long the thread may sleep, in ns: until wake_ns, at most CLOSER_IDLE_MS */
static uint64_t sleep_ns(void)
{
	uint64_t now = clock_mono_ns(), k = atomic_load(&cl.wake_ns);

	if (k <= now)
		return 0;
	if (k - now >= CLOSER_IDLE_MS * 1000000ull)
		return CLOSER_IDLE_MS * 1000000ull;
	return k - now;
}

/* Ends the thread's nap, if it naps. Async-signal-safe. */
static void wake_nap(void)
{
	atomic_fetch_add(&cl.nap, 1);
	syscall(SYS_futex, &cl.nap, FUTEX_WAKE_PRIVATE, 1, NULL, NULL, 0);
}

/*
 * Wakes the thread before wake_ns: from its nap (the futex) or from epoll
 * (the eventfd). A submitter that reads napping false has pushed before the
 * thread's last look at the stack, or the thread sleeps in epoll: either way
 * the right one is woken. Async-signal-safe.
 */
static void kick(void)
{
	uint64_t one = 1;

	if (atomic_load(&cl.napping)) {
		wake_nap();
		return;
	}
	/* EAGAIN: the counter is full of wake-ups already; else it is gone */
	if (write(atomic_load(&cl.evfd), &one, sizeof(one)) < 0 && errno != EAGAIN)
		atomic_store(&cl.deaf, true);
}

/*
 * What epoll reported ready, settled: first what was handed over is taken,
 * then each event goes to its connection (one reported twice finds it gone
 * the second time). Holds cl.lock, and the events were collected under it,
 * or no connection left the heap since (gone_gen).
 */
static void settle_events(const struct epoll_event *ev, int n)
{
	take_submissions();
	for (int i = 0; i < n; i++) {
		uint32_t idx = ev[i].data.u32, h;

		/* the eventfd (edge-triggered: each write is one event, nothing to read) */
		if (!idx)
			continue;
		/*
		 * A connection finished earlier in this batch is out of the
		 * heap, and its slot may be anyone's by now (not in the heap
		 * before the next take). One whose close is between its
		 * epoll_ctl and its push is not in it yet: its event comes
		 * again (level-triggered).
		 */
		h = __atomic_load_n(&conn_at(idx - 1)->heap, __ATOMIC_RELAXED);
		if (h >= cl.heap_n || cl.heap[h] != idx - 1)
			continue;
		on_event(conn_at(idx - 1), ev[i].events);
	}
}

/* epoll_wait() that no cancellation acts in */
static int ready(struct epoll_event *ev, int max, int tmo)
{
	return (int)syscall(SYS_epoll_pwait, atomic_load(&cl.epfd), ev, max, tmo, NULL, 8);
}

/*
 * A close of the program while the thread naps: what was handed over
 * before and is ready now (the peer's FIN, data or reset) is settled here
 * (reap_some()), only on such events, never at a deadline, which may need
 * a question to sock_diag. One that found nothing ready makes the next
 * closes skip it, up to REAP_SKIP_MAX (a program that closes faster than
 * its peers answer). Signals are blocked while the program's thread holds
 * the closer's lock: a handler that exits, execs or forks takes that lock
 * (closer_take_all(), closer_fork_prepare()) and would wait for ever on
 * its own thread. A close in a handler that interrupted this thread out
 * of that window only tries the lock. Keeps errno.
 */
static void reap(void)
{
	int saved = errno;
	uint32_t skip = atomic_load(&cl.reap_skip);
	sigset_t all, old;

	if (!atomic_load(&cl.napping))
		return;
	if (skip) {
		/* a lost decrement only skips one close fewer */
		atomic_compare_exchange_strong(&cl.reap_skip, &skip, skip - 1);
		return;
	}
	sigfillset(&all);
	pthread_sigmask(SIG_BLOCK, &all, &old);
	if (pthread_mutex_trylock(&cl.lock) == 0) {
		if (reap_some()) {
			cl.reap_backoff = 0;
		} else {
			cl.reap_backoff = cl.reap_backoff * 2 + 1 < REAP_SKIP_MAX ?
					  cl.reap_backoff * 2 + 1 : REAP_SKIP_MAX;
			atomic_store(&cl.reap_skip, cl.reap_backoff);
		}
		pthread_mutex_unlock(&cl.lock);
	}
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	errno = saved;
}

/*
 * Is fd still the socket of c (the program may have reused its number)?
 * Still marked as c's copy (a socket the program made or accepted there
 * since is marked as its own), with c's addresses: the local one compared
 * when it was read (a log line needs it), else the peer's alone.
 */
static bool still_ours(const struct tw_conn *c, int fd)
{
	struct tw_addr a;

	/* the table ends at TW_FD_MAX: a copy above it (a limit past fs.nr_open's default) has no mark */
	return ((unsigned)fd >= TW_FD_MAX || fdtab_get(fd) == fdt_libconn(conn_index(c))) &&
	       addr_of_fd(&a, fd, false) == 0 &&
	       (!c->local.port || !memcmp(&a, &c->local, sizeof(a))) &&
	       addr_of_fd(&a, fd, true) == 0 && !memcmp(&a, &c->remote, sizeof(a));
}

/* fd is no longer the library's: its mark goes, unless someone re-marked it */
static void unmark(int fd, uint32_t mark)
{
	if (fd >= 0 && fdtab_get(fd) == mark)
		fdtab_replace(fd, mark, FDT_NONE);
}

static int closer_fds(void);

/*
 * The epoll instance is gone: the program closed it behind the library's
 * back (the raw close_range system call), and epoll_wait fails at once, for
 * ever. The old numbers are let go (they may be the program's, or another
 * fd's of the library, by now), a new epoll and eventfd made, and every
 * deferred socket still held goes into the new epoll. One whose fd went too
 * (or is something else now) ended at that close: the kernel is asked how,
 * and it is recorded. Returns false when no new fds could be made (tried
 * again later). Holds cl.lock.
 */
static bool recover(void)
{
	int ep = atomic_load(&cl.epfd);

	unmark(ep, FDT_LIB);
	unmark(atomic_load(&cl.evfd), FDT_LIB);
	atomic_store(&cl.evfd, -1);
	atomic_store(&cl.epfd, -1);
	if (closer_fds() < 0)
		return false;
	ep = atomic_load(&cl.epfd);
	SHIM_WARN("the deferred closer's fds were closed under it; it goes on with new ones");
	for (uint32_t i = cl.heap_n; i-- > 0;) {
		struct tw_conn *c;
		struct epoll_event ev;
		struct observed o = { .who = WHO_CLOSE, .mode = TW_CLOSE_NORMAL,
				      .before = TW_ESTABLISHED };

		c = conn_at(cl.heap[i]);
		ev.events = EPOLLIN | EPOLLRDHUP;
		ev.data.u32 = cl.heap[i] + 1;
		if (still_ours(c, c->libfd) &&
		    (epoll_ctl(ep, EPOLL_CTL_ADD, c->libfd, &ev) == 0 || errno == EEXIST))
			continue;
		unmark(c->libfd, fdt_libconn(conn_index(c)));
		c->libfd = -1;
		c->why = WHY_NO_FD;
		finish(c, &o, decide(&o));
		/* the heap moved around the hole: from the top again (EEXIST: done) */
		i = cl.heap_n;
	}
	return true;
}

/*
 * A wake-up failed: the eventfd is gone (closed behind the library's back,
 * or by a dup2 when no number was left to move it to). A new one goes into
 * the epoll; false when the epoll is gone too. Holds cl.lock.
 */
static bool renew_evfd(void)
{
	struct epoll_event ev = { .events = EPOLLIN | EPOLLET, .data.u32 = 0 };
	int efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);

	if (efd >= 0)
		efd = libfd_move(efd, FDT_LIB);
	if (efd < 0) {
		atomic_store(&cl.deaf, true);	/* no fd now: again at the next turn */
		return true;
	}
	if (epoll_ctl(atomic_load(&cl.epfd), EPOLL_CTL_ADD, efd, &ev) < 0) {
		libfd_close(efd);
		return false;
	}
	SHIM_WARN("the deferred closer's eventfd went; it goes on with a new one");
	unmark(atomic_load(&cl.evfd), FDT_LIB);
	atomic_store(&cl.evfd, efd);
	return true;
}

/*
 * Is this thread the process's last? The program's main thread left with
 * pthread_exit() (the leader is a zombie until the group ends) and no
 * other thread of the program is left: glibc ends the process with exit(0)
 * when its last thread ends, and with this one counted, it never would.
 */
static bool last_thread(void)
{
	bool leader_gone;

	return atomic_load(&rt_main_gone) && rt_threads(&leader_gone) == 2 && leader_gone;
}

static void *closer_main(void *arg)
{
	struct epoll_event ev[CLOSER_EVENTS];
	uint64_t alone_check = 0;
	uint32_t seen;
	bool gone, nap;

	(void)arg;
	atomic_store(&cl.tid, (int)syscall(SYS_gettid));
	pthread_mutex_lock(&cl.lock);
	nap = before_sleep(&seen);
	while (!cl.stop) {
		uint64_t tmo = sleep_ns(), now;
		uint32_t gen = cl.gone_gen;
		int n = 0;

		pthread_mutex_unlock(&cl.lock);
		if (nap) {
			struct timespec ts = { (time_t)(tmo / 1000000000u),
					       (long)(tmo % 1000000000u) };

			syscall(SYS_futex, &cl.nap, FUTEX_WAIT_PRIVATE, seen, &ts, NULL, 0);
		} else {
			n = ready(ev, CLOSER_EVENTS, (int)((tmo + 999999) / 1000000));
		}
		pthread_mutex_lock(&cl.lock);
		/* awake: what is handed over now is taken before it sleeps again */
		atomic_store(&cl.wake_ns, 0);
		atomic_store(&cl.napping, false);
		/*
		 * After a nap, or when a program's close settled connections
		 * meanwhile (their slots may be others' now): look again, under
		 * the lock.
		 */
		if (nap || gen != cl.gone_gen)
			n = ready(ev, CLOSER_EVENTS, 0);
		gone = n < 0 && (errno == EBADF || errno == EINVAL);
		if (!gone && atomic_exchange(&cl.deaf, false) && !renew_evfd())
			gone = true;
		if (gone && !recover()) {
			struct timespec pause = { 0, 10000000 };

			pthread_mutex_unlock(&cl.lock);
			nanosleep(&pause, NULL);
			pthread_mutex_lock(&cl.lock);
		}
		if (gone || n < 0)
			n = 0;
		/* what close left out of epoll goes in now, and what of it is ready shows */
		if (take_submissions() && n < CLOSER_EVENTS) {
			int more = ready(ev + n, CLOSER_EVENTS - n, 0);

			if (more > 0)
				n += more;
		}
		settle_events(ev, n);
		now = clock_mono_ns();
		while (cl.heap_n && key(0) <= now)
			on_deadline(conn_at(cl.heap[0]), now);
		/* once a second: the program's threads all gone, this one ends it as glibc would */
		if (now >= alone_check) {
			alone_check = now + CLOSER_IDLE_MS * 1000000ull;
			if (last_thread()) {
				sigset_t none;

				/* the exit handlers run here: with signals, as in the program's */
				sigemptyset(&none);
				pthread_mutex_unlock(&cl.lock);
				pthread_sigmask(SIG_SETMASK, &none, NULL);
				exit(0);
			}
		}
		nap = before_sleep(&seen);
	}
	atomic_store(&cl.napping, false);
	pthread_mutex_unlock(&cl.lock);
	return NULL;
}

/*
 * The closer's epoll and eventfd, in the library's fd range. Made with the
 * thread, at the first connection that may be deferred. Holds start_lock.
 */
static int closer_fds(void)
{
	struct epoll_event ev = { .events = EPOLLIN | EPOLLET, .data.u32 = 0 };
	int ep, efd, err;

	if (atomic_load(&cl.epfd) >= 0)
		return 0;
	/* by the system call: not one of the program's (shim/epoll.c) */
	ep = (int)syscall(SYS_epoll_create1, EPOLL_CLOEXEC);
	if (ep < 0)
		return -errno;
	ep = libfd_move(ep, FDT_LIB);
	if (ep < 0)
		return ep;
	efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (efd < 0) {
		err = -errno;
		goto fail;
	}
	efd = libfd_move(efd, FDT_LIB);
	if (efd < 0) {
		err = efd;
		goto fail;
	}
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
 * Creates the thread, with every signal blocked so that no handler of the
 * program ever runs on it. Holds start_lock.
 */
static int start_thread(void)
{
	sigset_t all, old;
	pthread_attr_t attr;
	int err;

	err = closer_fds();
	if (err < 0)
		return err;
	sigfillset(&all);
	pthread_attr_init(&attr);
	pthread_attr_setstacksize(&attr, 128 * 1024);
	pthread_sigmask(SIG_SETMASK, &all, &old);
	err = -pthread_create(&cl.thread, &attr, closer_main, NULL);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	pthread_attr_destroy(&attr);
	return err;
}

/*
 * Defined where a ThreadSanitizer runtime is loaded. A weak reference, not
 * dlsym(): a failed dlsym() leaves its error, allocated, in the thread,
 * which LeakSanitizer reports when that thread is the main thread and
 * leaves with pthread_exit().
 */
extern void __tsan_init(void) __attribute__((weak));

/*
 * Starts the closer thread. Called from connect/accept, never from close,
 * which must not allocate.
 */
int closer_start(void)
{
	int err = 0;

	if (atomic_load(&cl.running))
		return 0;
	if (atomic_load(&rt_threadless))
		return -EAGAIN;
	pthread_mutex_lock(&cl.start_lock);
	if (atomic_load(&cl.running))
		goto out;
	/*
	 * The log first: where fds above the program's limit are few, the
	 * deferred copies must not take the one its records need.
	 */
	sink_open_pending();
	err = start_thread();
	if (err < 0)
		goto fail;
	/*
	 * ThreadSanitizer kills a child of a threaded process that starts a
	 * thread (its die_after_fork): under it, children get no closer.
	 */
	cl.fork_start = !__tsan_init;
	atomic_store(&cl.running, true);
out:
	pthread_mutex_unlock(&cl.start_lock);
	return 0;
fail:
	/* tried again at each connection that may defer: said once */
	if (!atomic_exchange(&cl.said_no_start, true))
		SHIM_ERR("cannot start the deferred closer: %s; deferred closes fall back "
			 "until it can", strerror(-err));
	pthread_mutex_unlock(&cl.start_lock);
	return err;
}

/*
 * Stops the thread, for a call that needs the process to have one thread
 * (unshare(CLONE_NEWUSER), setns into a user or mount namespace). What
 * close hands over meanwhile waits on the submission stack; what is
 * deferred stays in epoll and the heap. Returns true when the thread was
 * running and is gone now (the kernel no longer finds its id: joined is not
 * enough, the thread leaves its group a little after). Then start_lock stays
 * held until closer_resume().
 */
bool closer_pause(void)
{
	uint64_t one = 1;
	int tid;

	pthread_mutex_lock(&cl.start_lock);
	if (!atomic_load(&cl.running)) {
		pthread_mutex_unlock(&cl.start_lock);
		return false;
	}
	pthread_mutex_lock(&cl.lock);
	cl.stop = true;
	pthread_mutex_unlock(&cl.lock);
	/* from epoll or from its nap, whichever it sleeps in */
	if (write(atomic_load(&cl.evfd), &one, sizeof(one)) < 0) {
		/* already woken */
	}
	wake_nap();
	pthread_join(cl.thread, NULL);
	tid = atomic_load(&cl.tid);
	for (int i = 0; i < 10000; i++) {
		struct timespec pause = { 0, 100000 };

		if (syscall(SYS_tgkill, (pid_t)syscall(SYS_getpid), tid, 0) < 0 && errno == ESRCH)
			break;
		nanosleep(&pause, NULL);
	}
	return true;
}

/*
 * The thread could not come back: what it held ends now, each as at its
 * last deadline, in the calling thread. Holds cl.lock.
 */
static void abandon(void)
{
	take_submissions();
	while (cl.heap_n && look(conn_at(cl.heap[0]), WHO_DEADLINE, UINT64_MAX, 0))
		;
	atomic_store(&cl.running, false);
}

/* After closer_pause() returned true: the thread again, on what it held. */
void closer_resume(void)
{
	int err;

	pthread_mutex_lock(&cl.lock);
	cl.stop = false;
	pthread_mutex_unlock(&cl.lock);
	err = start_thread();
	if (err < 0) {
		SHIM_ERR("cannot restart the deferred closer: %s; what it held ends now",
			 strerror(-err));
		pthread_mutex_lock(&cl.lock);
		abandon();
		pthread_mutex_unlock(&cl.lock);
	}
	pthread_mutex_unlock(&cl.start_lock);
}

/*
 * Puts c into the thread's epoll set (its FIN wakes the thread, which takes
 * c then) unless the thread naps, pushes it on a lock-free stack, and wakes
 * the thread only when c must be looked at before the thread would wake by
 * itself: one wake-up for many connections. Then settles what is ready
 * among those handed over before (reap()). Allocation-free and
 * async-signal-safe.
 */
bool closer_submit(struct tw_conn *c)
{
	struct epoll_event ev = { .events = EPOLLIN | EPOLLRDHUP,
				  .data.u32 = conn_index(c) + 1 };
	uint64_t due, t = c->t_close_ns;
	bool unwatched;

	if (!atomic_load(&cl.running))
		return false;
	if (c->mode == TW_CLOSE_ABORT)
		c->deadline_ns = c->t_close_ns + 1000000u;
	/* while the thread naps: taken without epoll if ready by then (reap(), its next look) */
	unwatched = atomic_load(&cl.napping) ||
		    epoll_ctl(atomic_load(&cl.epfd), EPOLL_CTL_ADD, c->libfd, &ev) < 0;
	c->unwatched = unwatched;
	/* once pushed, c is the thread's: it may be over and reused before the next line */
	due = c->deadline_ns;
	atomic_fetch_add(&cl.count, 1);
	push_sub(c);
	/*
	 * Not in epoll: the thread takes it within CLOSER_NAP_NS if it naps
	 * (read after the push: else it saw c before it stopped napping).
	 */
	if ((unwatched && !atomic_load(&cl.napping)) || due < atomic_load(&cl.wake_ns))
		kick();
	if (t > atomic_load(&cl.sub_ns))
		atomic_store(&cl.sub_ns, t);
	reap();
	return true;
}

/*
 * No number left to move fd to: the program's call closes it. A deferred
 * connection ends now with that close (recorded); the epoll or eventfd is
 * closed and the thread makes new ones when it can. Holds cl.lock.
 */
static void evict_fail(int fd, uint32_t mark)
{
	if (fdt_is_libconn(mark)) {
		struct tw_conn *c = conn_at(fdt_index(mark));
		struct observed o = { .who = WHO_CLOSE, .mode = TW_CLOSE_NORMAL,
				      .before = TW_ESTABLISHED };
		uint32_t h = c->heap;

		c->why = WHY_NO_FD;
		if (h < cl.heap_n && cl.heap[h] == fdt_index(mark)) {
			finish(c, &o, decide(&o));
			return;
		}
		c->libfd = -1;	/* not taken yet: the closer finds it gone */
	} else if (atomic_load(&cl.evfd) == fd) {
		atomic_store(&cl.evfd, -1);
		atomic_store(&cl.deaf, true);
	} else if (atomic_load(&cl.epfd) == fd) {
		atomic_store(&cl.epfd, -1);
	}
	libfd_close(fd);
}

/*
 * The program is about to dup2/dup3 onto fd, one of the closer's: move ours
 * to another number first. The epoll registration of a moved socket stays
 * keyed on the old number, which is harmless: the closer never deletes
 * registrations; closing the last reference does. The library never writes
 * to the number once it is the program's.
 */
void closer_evict(int fd)
{
	uint32_t mark = fdtab_get(fd);
	long nfd;

	pthread_mutex_lock(&cl.lock);
	nfd = libfd_dup(fd);
	if (nfd < 0) {
		evict_fail(fd, mark);
		pthread_mutex_unlock(&cl.lock);
		return;
	}
	fdtab_set((int)nfd, mark);
	if (fdt_is_libconn(mark))
		conn_at(fdt_index(mark))->libfd = (int)nfd;
	if (atomic_load(&cl.epfd) == fd)
		atomic_store(&cl.epfd, (int)nfd);
	if (atomic_load(&cl.evfd) == fd)
		atomic_store(&cl.evfd, (int)nfd);
	fdtab_set(fd, FDT_NONE);
	pthread_mutex_unlock(&cl.lock);
}

/*
 * At exit or exec: takes every deferred connection away from the closer
 * (out of epoll and the heap) and passes each to fn, for the holder.
 */
void closer_take_all(void (*fn)(struct tw_conn *c))
{
	uint32_t idx;

	if (!atomic_load(&cl.running))
		return;
	pthread_mutex_lock(&cl.lock);
	cl.gone_gen++;	/* out of the heap: the thread's events of them are stale */
	idx = atomic_exchange(&cl.subs, 0);
	while (idx) {
		struct tw_conn *c = conn_at(idx - 1);

		idx = c->next;
		atomic_fetch_sub(&cl.count, 1);
		fn(c);
	}
	while (cl.heap_n) {
		struct tw_conn *c = conn_at(cl.heap[--cl.heap_n]);

		/* the program may go on (a failed exec): its epoll must forget the socket */
		epoll_ctl(atomic_load(&cl.epfd), EPOLL_CTL_DEL, c->libfd, NULL);
		atomic_fetch_sub(&cl.count, 1);
		fn(c);
	}
	pthread_mutex_unlock(&cl.lock);
}

void closer_wait_end(uint64_t until_ns)
{
	uint32_t seen = atomic_load(&ends);
	uint64_t now = clock_mono_ns();
	struct timespec ts;

	if (now >= until_ns || !atomic_load(&cl.count))
		return;
	ts.tv_sec = (time_t)((until_ns - now) / 1000000000u);
	ts.tv_nsec = (long)((until_ns - now) % 1000000000u);
	atomic_fetch_add(&end_waiters, 1);
	syscall(SYS_futex, &ends, FUTEX_WAIT_PRIVATE, seen, &ts, NULL, 0);
	atomic_fetch_sub(&end_waiters, 1);
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
	bool was_running = atomic_load(&cl.running);
	int saved = errno;

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
	atomic_store(&cl.napping, false);
	atomic_store(&cl.sub_ns, 0);
	/* locked by closer_fork_prepare() in this very thread: released as in the parent */
	pthread_mutex_unlock(&cl.lock);
	pthread_mutex_unlock(&cl.start_lock);
	/*
	 * The epoll instance was the parent's: the child makes its own. A
	 * forking server's children close what the parent accepted, and their
	 * close may not start a thread: a parent that had a closer gives its
	 * child one now. glibc has reset its allocator and loader locks in the
	 * child before this handler runs.
	 */
	cl.stop = false;
	if (was_running && cl.fork_start && !atomic_load(&rt_threadless) && start_thread() == 0)
		atomic_store(&cl.running, true);
	errno = saved;
}
