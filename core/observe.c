// SPDX-License-Identifier: MIT
/*
 * Observing connections without changing them (include/observe.h).
 *
 * The sock_diag question after a close goes over one netlink socket the
 * process keeps (high-numbered, close-on-exec, opened at the first question):
 * two system calls a question instead of four. A thread that finds it in use
 * (another thread, or a signal handler interrupting a question) opens a
 * socket of its own for that one question, so nobody ever waits.
 */
#include <errno.h>
#include <fcntl.h>
#include <linux/sockios.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "decide.h"
#include "diag.h"
#include "fdtab.h"
#include "observe.h"
#include "record.h"

static _Atomic int nl_fd = -1;
static _Atomic bool nl_busy;
static _Atomic uint32_t nl_seq;

uint8_t observe_unread(int fd, bool quiet)
{
	char b;
	long n;

	if (quiet) {
		int q = 0;

		if (syscall(SYS_ioctl, fd, SIOCINQ, &q) < 0)
			return UNREAD_ERROR;
		return q > 0 ? UNREAD_DATA : UNREAD_NONE;
	}
	/*
	 * recvfrom by number: no cancellation point of its own. A pending
	 * error is taken (tcp_recvmsg(): sock_error()), as the program's own
	 * read would: only where nobody else can read it (observe.h).
	 */
	n = syscall(SYS_recvfrom, fd, &b, 1, MSG_PEEK | MSG_DONTWAIT, NULL, NULL);
	if (n > 0)
		return UNREAD_DATA;
	if (n == 0)
		return UNREAD_EOF;
	return errno == EAGAIN || errno == EINTR ? UNREAD_NONE : UNREAD_ERROR;
}

bool observe_urgent(int fd)
{
	int at = 0;

	return syscall(SYS_ioctl, fd, SIOCATMARK, &at) == 0 && at;
}

int observe_outq(int fd)
{
	int q = 0;

	if (syscall(SYS_ioctl, fd, SIOCOUTQ, &q) < 0)
		return -1;
	return q;
}

/* The kept socket if free (*kept), else one for this question only. */
static int nl_take(bool *kept)
{
	bool f = false;
	int fd;

	if (atomic_compare_exchange_strong(&nl_busy, &f, true)) {
		fd = atomic_load(&nl_fd);
		/* a vfork child's new fd would be in its own table, not in the parent's */
		if (fd < 0 && !rt_foreign()) {
			fd = diag_socket();
			if (fd >= 0) {
				fd = libfd_move(fd, FDT_LIB);
				atomic_store(&nl_fd, fd);
			}
		}
		if (fd >= 0) {
			*kept = true;
			return fd;
		}
		atomic_store(&nl_busy, false);
	}
	*kept = false;
	return diag_socket();
}

/* After a failed question the socket may hold a late answer: it is dropped. */
static void nl_give(int fd, bool kept, bool ok)
{
	if (!kept) {
		syscall(SYS_close, fd);
		return;
	}
	if (!ok) {
		atomic_store(&nl_fd, -1);
		libfd_close(fd);
	}
	atomic_store(&nl_busy, false);
}

/* One question: 1 and *ds when the kernel has a socket of exactly this 4-tuple. */
static int ask_once(const struct tw_addr *local, const struct tw_addr *remote, uint64_t cookie,
		    struct diag_sock *ds)
{
	bool kept;
	int fd = nl_take(&kept), r;

	if (fd < 0)
		return fd;
	r = diag_lookup_on(fd, atomic_fetch_add(&nl_seq, 1) + 1, local, remote, cookie, ds);
	nl_give(fd, kept, r >= 0);
	/* with the connection gone, the kernel's lookup falls back to a listener */
	if (r == 1 && (ds->state == TW_LISTEN || ds->remote.port != remote->port))
		r = 0;
	return r;
}

/*
 * A socket caught as it leaves the tables shows CLOSE (found on its way to
 * TIME_WAIT, or out): where it went is what the next question finds.
 */
static int ask(const struct tw_addr *local, const struct tw_addr *remote, uint64_t cookie,
	       struct diag_sock *ds)
{
	int r = ask_once(local, remote, cookie, ds);

	for (int i = 0; i < 3 && r == 1 && ds->state == TW_CLOSE; i++)
		r = ask_once(local, remote, cookie, ds);
	return r == 1 && ds->state == TW_CLOSE ? 0 : r;
}

/*
 * A TIME_WAIT socket is a new kernel object with a cookie of its own: when
 * the socket of that cookie is gone, the 4-tuple alone may still find it.
 * The 4-tuple is asked twice before the answer is "gone": the kernel's
 * lookup gives up on a socket whose last reference is being dropped
 * (__inet_lookup_established(): refcount_inc_not_zero() fails, and it
 * returns nothing rather than look on), which is the instant a closed
 * socket hands its 4-tuple to its TIME_WAIT socket: "gone" then would
 * record a passive end beside this side's own TIME_WAIT.
 */
static uint8_t after_once(const struct tw_addr *local, const struct tw_addr *remote,
			  uint64_t cookie, uint8_t *state, uint64_t *found)
{
	struct diag_sock ds;
	int r = ask(local, remote, cookie, &ds);
	int tries = cookie == DIAG_ANY_COOKIE ? 1 : 2;

	for (int i = 0; i < tries && r == 0; i++) {
		r = ask(local, remote, DIAG_ANY_COOKIE, &ds);
		/* another connection on the 4-tuple: ours is gone */
		if (r == 1 && cookie != DIAG_ANY_COOKIE && ds.state != TW_TIME_WAIT) {
			r = 0;
			break;
		}
	}
	if (r < 0)
		return AFTER_FAILED;
	if (r == 0)
		return AFTER_GONE;
	*state = ds.state;
	*found = ds.cookie;
	/* a TIME_WAIT socket has no inode, and an orphan none either */
	return ds.inode ? AFTER_HELD : AFTER_ORPHAN;
}

/*
 * Held, or orphaned but not closed: a close under way. For a socket this
 * process was the last to hold, a reference taken for an instant elsewhere
 * (a reader of /proc/PID/fd: ss -p, or a forked child of this program
 * looking for its holders) made the program's close not the last; the
 * release, and the FIN, come when that reader lets go, microseconds later.
 * Asked again for up to about a millisecond before the answer stands,
 * when ours() says the socket found may be the one closed (not a new
 * connection of this process on the same 4-tuple).
 */
static bool mid_close(uint8_t after, uint8_t state)
{
	return after == AFTER_HELD ||
	       (after == AFTER_ORPHAN && (state == TW_ESTABLISHED || state == TW_CLOSE_WAIT));
}

uint8_t observe_after(const struct tw_addr *local, const struct tw_addr *remote,
		      uint64_t cookie, obs_ours_fn ours, void *arg, uint8_t *state,
		      uint64_t *found)
{
	uint8_t after = after_once(local, remote, cookie, state, found);

	if (!ours || !mid_close(after, *state) || !ours(arg))
		return after;
	for (long ns = 16000; mid_close(after, *state) && ns <= 512000; ns *= 2) {
		struct timespec ts = { 0, ns };

		syscall(SYS_nanosleep, &ts, NULL);
		after = after_once(local, remote, cookie, state, found);
	}
	return after;
}

void observe_fork_child(void)
{
	int fd = atomic_exchange(&nl_fd, -1);

	if (fd >= 0)
		libfd_close(fd);
	atomic_store(&nl_busy, false);
}

bool observe_evict(int fd)
{
	long nfd;

	if (fd < 0 || atomic_load(&nl_fd) != fd)
		return false;
	nfd = libfd_dup(fd);
	if (nfd >= 0)
		fdtab_set((int)nfd, FDT_LIB);
	atomic_store(&nl_fd, (int)nfd);
	fdtab_set(fd, FDT_NONE);
	return true;
}
