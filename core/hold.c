// SPDX-License-Identifier: MIT
/*
 * The holder process (include/hold.h).
 *
 * A program that ends (exit, _exit, exec) with deferred connections would
 * otherwise wait for their peers' FINs: a short-lived client against a
 * keep-alive server, for the full exit_wait_ms at every run. Instead the
 * process forks a holder, which its parent never sees: an intermediate child
 * without an exit signal (invisible to the program's wait() and SIGCHLD
 * handler), reaped at once, forks the holder and exits, so the holder is
 * adopted by init (or the service's subreaper). The holder starts a session
 * of its own, keeps no fd but the connections and the log (a shell reading
 * the program's output through a pipe is not held), and waits for each peer's
 * FIN for what is left of its defer_ms, at most exit_wait_ms from the hand-off,
 * then applies the fallback. Its records carry the program's pid and comm.
 *
 * It runs in a child of a process that may have had other threads: only
 * async-signal-safe calls, raw system calls, no allocation but mmap.
 */
#include <errno.h>
#include <signal.h>
#include <stdatomic.h>
#include <poll.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "closer.h"
#include "hold.h"
#include "observe.h"
#include "record.h"
#include "settle.h"
#include "sink.h"

static _Atomic uint32_t pending;	/* index + 1, linked through next */
static bool in_holder;
static uint64_t t_handoff;
static volatile sig_atomic_t stop;	/* SIGTERM, SIGINT, SIGHUP: fallbacks now */

bool hold_here(void)
{
	return in_holder;
}

void hold_add(struct tw_conn *c)
{
	uint32_t head = atomic_load(&pending), idx = conn_index(c) + 1;

	do {
		__atomic_store_n(&c->next, head, __ATOMIC_RELAXED);
	} while (!atomic_compare_exchange_weak(&pending, &head, idx));
}

/* the latest moment c may stay open: defer_ms from the program's close, exit_wait_ms from now */
static uint64_t final_ns(const struct tw_conn *c)
{
	uint64_t t = c->t_close_ns + (uint64_t)c->pol.defer_ms * 1000000u;
	uint64_t e = t_handoff + (uint64_t)c->pol.exit_wait_ms * 1000000u;

	return e < t ? e : t;
}

/* close_range(a, b), or one close a number where the kernel has none (< 5.9) */
static void close_span(unsigned a, unsigned b)
{
	struct rlimit rl;

	if (a > b || syscall(SYS_close_range, a, b, 0) == 0)
		return;
	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY &&
	    b >= rl.rlim_cur)
		b = (unsigned)rl.rlim_cur - 1;
	for (unsigned fd = a; fd <= b && fd >= a; fd++)
		syscall(SYS_close, fd);
}

/* sorts n fds in place (Shell's sort: no allocation, no recursion) */
static void fds_sort(int *v, uint32_t n)
{
	for (uint32_t gap = n / 2; gap; gap /= 2)
		for (uint32_t i = gap; i < n; i++) {
			int x = v[i];
			uint32_t j = i;

			for (; j >= gap && v[j - gap] > x; j -= gap)
				v[j] = v[j - gap];
			v[j] = x;
		}
}

/*
 * Closes every fd but those in keep (the connections' copies and the log's),
 * a range at a time between them, wherever the library placed its fds.
 */
static void keep_only(int *keep, uint32_t n)
{
	unsigned next = 0;

	fds_sort(keep, n);
	for (uint32_t i = 0; i < n; i++) {
		if (keep[i] < 0 || (unsigned)keep[i] < next)
			continue;
		if ((unsigned)keep[i] > next)
			close_span(next, (unsigned)keep[i] - 1);
		next = (unsigned)keep[i] + 1;
	}
	close_span(next, ~0u);
}

static void on_stop(int sig)
{
	(void)sig;
	stop = 1;
}

/* the program's handlers are not the holder's: defaults, and a clean stop */
static void signals_reset(void)
{
	struct sigaction dfl = { .sa_handler = SIG_DFL }, ign = { .sa_handler = SIG_IGN };
	struct sigaction st = { .sa_handler = on_stop };
	sigset_t none;

	for (int s = 1; s < NSIG; s++)
		if (s != SIGKILL && s != SIGSTOP)
			sigaction(s, &dfl, NULL);
	/* a log whose reader is gone, or a full one, must not kill it */
	sigaction(SIGPIPE, &ign, NULL);
	sigaction(SIGXFSZ, &ign, NULL);
	sigaction(SIGTERM, &st, NULL);
	sigaction(SIGINT, &st, NULL);
	sigaction(SIGHUP, &st, NULL);
	sigemptyset(&none);
	sigprocmask(SIG_SETMASK, &none, NULL);
}

/* poll(), not epoll: the holder keeps no fd of its own */
struct held {
	uint32_t *idx;		/* slot indexes */
	struct pollfd *pfd;	/* pfd[i] is idx[i]'s */
	uint32_t n;
};

/*
 * What is unread on c, as poll's revents and SIOCINQ show it, for a
 * connection the exiting program still holds (CONN_HELD): its exit
 * handlers, or the program a failed exec left, may still read it, and a
 * peek would take a pending error (ECONNRESET) that is theirs to read,
 * leaving them 0. SIOCINQ counts nothing from an urgent byte at the head
 * on (tcp_inq()): one there is data too, which the kernel's close resets
 * for. -1 for the others: a peek.
 */
static int held_unread(const struct tw_conn *c, short revents)
{
	uint8_t u;

	if (!(c->flags & CONN_HELD))
		return -1;
	if (revents & POLLERR)
		return UNREAD_ERROR;
	u = observe_unread(c->libfd, true);
	if (u == UNREAD_NONE && (revents & (POLLIN | POLLRDHUP)) && observe_urgent(c->libfd))
		return UNREAD_DATA;
	return u == UNREAD_NONE && (revents & POLLRDHUP) ? UNREAD_EOF : u;
}

/*
 * settle_look() at the last deadline, nowhere left to wait: what poll
 * shows of c now, for a FIN or a reset already in.
 */
static struct verdict look_final(struct tw_conn *c, struct observed *o)
{
	static const struct timespec now;
	struct pollfd p = { .fd = c->libfd, .events = POLLIN | POLLRDHUP };

	/* by number: it may run in the exiting program, where poll() is a cancellation point */
	if (!(c->flags & CONN_HELD) || syscall(SYS_ppoll, &p, 1, &now, NULL, 8) != 1)
		p.revents = 0;
	return settle_look_as(c, WHO_DEADLINE, true, false, held_unread(c, p.revents), o);
}

/* Looks at the connection at position i and acts; true when it is over (and gone from h). */
static bool step(struct held *h, uint32_t i, enum obs_who who, short revents, uint64_t now)
{
	struct tw_conn *c = conn_at(h->idx[i]);
	uint64_t fin = final_ns(c);
	struct observed o;
	struct verdict v = settle_look_as(c, who, stop || now >= fin,
					  (revents & (POLLERR | POLLHUP)) != 0,
					  held_unread(c, revents), &o);

	if (v.act == DO_KEEP) {
		if (who == WHO_DEADLINE)
			c->deadline_ns = settle_next(c, now, fin);
		return false;
	}
	h->n--;
	h->idx[i] = h->idx[h->n];
	h->pfd[i] = h->pfd[h->n];
	settle_act(c, &o, v);
	return true;
}

static int timeout_ms(const struct held *h, uint64_t now)
{
	uint64_t k = UINT64_MAX;

	for (uint32_t i = 0; i < h->n; i++)
		if (conn_at(h->idx[i])->deadline_ns < k)
			k = conn_at(h->idx[i])->deadline_ns;
	if (stop || k <= now)
		return 0;
	k = (k - now + 999999) / 1000000;
	return k > 3600000 ? 3600000 : (int)k;
}

/* Waits on every connection of h until each is over. */
static void hold_loop(struct held *h)
{
	while (h->n) {
		int n = poll(h->pfd, h->n, timeout_ms(h, clock_mono_ns()));
		uint64_t now = clock_mono_ns();

		/* a connection that ends takes the last one's place, and its revents */
		for (uint32_t i = 0; n > 0 && i < h->n;)
			if (!(h->pfd[i].revents && step(h, i, WHO_EVENT, h->pfd[i].revents, now)))
				i++;
		for (uint32_t i = 0; i < h->n;)
			if (!((stop || conn_at(h->idx[i])->deadline_ns <= now) &&
			      step(h, i, WHO_DEADLINE, 0, now)))
				i++;
	}
}

/* The holder itself: never returns. */
static void __attribute__((noreturn)) holder_main(uint32_t head, uint32_t count)
{
	struct held h = { 0 };

	in_holder = true;
	syscall(SYS_setsid);
	signals_reset();
	if (syscall(SYS_chdir, "/") < 0) {
		/* only keeps a mount busy */
	}
	h.pfd = mmap(NULL, count * (sizeof(*h.pfd) + sizeof(*h.idx) + sizeof(int)) +
			   TW_SINK_FDS * sizeof(int), PROT_READ | PROT_WRITE,
		     MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (h.pfd == MAP_FAILED) {
		h.pfd = NULL;	/* nowhere to wait: every fallback now */
	} else {
		int *keep = (int *)(h.pfd + count);
		uint32_t nkeep = 0;

		h.idx = (uint32_t *)(keep + count + TW_SINK_FDS);
		for (uint32_t i = head; i; i = conn_at(i - 1)->next)
			keep[nkeep++] = conn_at(i - 1)->libfd;
		nkeep += (uint32_t)sink_fds_all(keep + nkeep, TW_SINK_FDS);
		keep_only(keep, nkeep);
	}
	while (head) {
		struct tw_conn *c = conn_at(head - 1);
		uint32_t next = c->next;

		if (c->mode == TW_CLOSE_ABORT)
			c->deadline_ns = t_handoff + 1000000u;
		if (c->deadline_ns > final_ns(c))
			c->deadline_ns = final_ns(c);
		if (h.idx) {
			h.pfd[h.n] = (struct pollfd){ .fd = c->libfd, .events = POLLIN | POLLRDHUP };
			h.idx[h.n++] = head - 1;
		} else {
			struct observed o;

			settle_act(c, &o, look_final(c, &o));
		}
		head = next;
	}
	if (h.idx)
		hold_loop(&h);
	syscall(SYS_exit_group, 0);
	__builtin_unreachable();
}

/* fork() without its handlers and, with exit signal 0, without a SIGCHLD */
static long clone_quiet(int exit_signal)
{
	return syscall(SYS_clone, (unsigned long)exit_signal, NULL, NULL, NULL, 0);
}

static void take(struct tw_conn *c)
{
	hold_add(c);
}

void hold_all(void)
{
	uint32_t head, count = 0;
	int st = 0;
	long pid, r;
	bool ok = false;

	closer_take_all(take);
	head = atomic_exchange(&pending, 0);
	if (!head)
		return;
	for (uint32_t i = head; i; i = conn_at(i - 1)->next)
		count++;
	sink_open_pending();
	t_handoff = clock_mono_ns();
	pid = clone_quiet(0);
	if (pid == 0) {
		/*
		 * The holder is its child, adopted by init (or a subreaper) when
		 * this one exits now; named before, so that it has its name from
		 * the first instant anyone can see it.
		 */
		prctl(PR_SET_NAME, "twshim-hold", 0, 0, 0);
		r = clone_quiet(SIGCHLD);
		if (r == 0)
			holder_main(head, count);
		syscall(SYS_exit_group, r < 0);
	}
	if (pid > 0) {
		do {
			r = syscall(SYS_wait4, pid, &st, __WALL, NULL);
		} while (r < 0 && errno == EINTR);
		ok = r == pid && WIFEXITED(st) && WEXITSTATUS(st) == 0;
	}
	while (head) {
		struct tw_conn *c = conn_at(head - 1);
		struct observed o;

		head = c->next;
		if (ok) {
			/* the holder has its copy: this one goes, the slot too */
			libfd_close(c->libfd);
			conn_free(c);
		} else {
			settle_act(c, &o, look_final(c, &o));
		}
	}
}
