// SPDX-License-Identifier: MIT
/*
 * tw-scenario: one TCP scenario between a program and its peer, told as a
 * transcript that does not depend on timing, so that a run with the preload
 * library can be compared line by line with a run without it
 * (tests/integration/test_differential.c).
 *
 *   tw-scenario [--netns] [--defer-ms MS] [--exit-lib PATH] SCENARIO
 *   tw-scenario --list
 *
 * The process started this way is the coordinator. It starts two processes
 * of this same program, the program and the peer, joined by an AF_UNIX
 * control channel that the library does not look at, waits for both, and
 * prints what each saw, one line each, prefixed "program: " or "peer: ",
 * then how each ended. The program keeps the environment (LD_PRELOAD,
 * TWSHIM_OPTIONS); the peer runs without the library, except in the
 * scenarios named both_*, where both sides have it.
 *
 * A line holds calls and their results (the return value, or -1 and the
 * errno name), byte counts, how a stream ended (EOF, a reset, nothing within
 * the wait) and how soon: "now" when it came within half of --defer-ms of
 * what set it off (the program's close or exit, or the last data byte read,
 * whichever is later), "late" otherwise. Byte counts that depend on timing
 * are printed as "some" or compared with what the other side reports.
 *
 * --netns runs the scenario in a network namespace of its own (root), with
 * loopback up. --exit-lib names the shared library that the scenario
 * exit_handler_in_library loads (tests/programs/lib/tw-exit-writer.c).
 * Every wait is bounded. Exit status: 0 when the transcript was printed, 2
 * on a usage error or when the lab could not be set up.
 */
#include <arpa/inet.h>
#include <dirent.h>
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/close_range.h>
#include <net/if.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <spawn.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define PROG		"tw-scenario"
#define REQ_LEN		100
#define EXIT_RUNS	10	/* exit_while_thread_writes: programs started */

extern char **environ;

/* what both sides know of the run */
static struct {
	int ctl;		/* control channel to the other side */
	long defer_ms;		/* the library's defer_ms: the time buckets */
	const char *exit_lib;
	char self[4096];	/* this program, for the processes it starts */
} g = { .ctl = -1, .defer_ms = 1000 };

/* the longest any side waits for anything */
static int wait_ms(void)
{
	return (int)(2 * g.defer_ms + 3000);
}

static double now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

static void sleep_ms(long ms)
{
	struct timespec ts = { ms / 1000, (ms % 1000) * 1000000L };

	while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
		;
}

/* One transcript line on stdout, with one write(): children share it. */
__attribute__((format(printf, 1, 2))) static void say(const char *fmt, ...)
{
	char buf[512];
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(buf, sizeof(buf) - 1, fmt, ap);
	va_end(ap);
	if (n < 0)
		return;
	if (n > (int)sizeof(buf) - 2)
		n = (int)sizeof(buf) - 2;
	buf[n++] = '\n';
	if (write(1, buf, (size_t)n) < 0)
		_exit(3);
}

static const char *ename(int err)
{
	const char *n = strerrorname_np(err);

	return n ? n : "E?";
}

/* "= 5" or "= -1 ECONNRESET": the result of a call as the transcript shows it */
static const char *result(long ret, int err)
{
	static char buf[64];

	if (ret < 0)
		snprintf(buf, sizeof(buf), "= -1 %s", ename(err));
	else
		snprintf(buf, sizeof(buf), "= %ld", ret);
	return buf;
}

/* the result of expr, a call that sets errno on failure */
#define RESULT(expr) ({ long r_ = (long)(expr); result(r_, errno); })

static const char *bucket(double ms)
{
	return ms < g.defer_ms / 2.0 ? "now" : "late";
}

static __attribute__((noreturn)) void fail(const char *what)
{
	say("setup failed: %s: %s", what, ename(errno));
	exit(3);
}

/* --- the control channel: small tagged messages, each wait bounded --- */

struct msg {
	char tag[16];
	double value;
};

static void ctl_send(const char *tag, double value)
{
	struct msg m = { .value = value };

	snprintf(m.tag, sizeof(m.tag), "%s", tag);
	if (send(g.ctl, &m, sizeof(m), MSG_NOSIGNAL) != sizeof(m))
		fail("control send");
}

/*
 * Waits for the message tag from the other side and returns its value. When
 * the other side is gone or says something else, says so and exits: the
 * transcript then shows where the scenario broke off.
 */
static double ctl_wait(const char *tag)
{
	struct pollfd p = { .fd = g.ctl, .events = POLLIN };
	struct msg m;
	ssize_t n;

	if (poll(&p, 1, wait_ms() + 2000) != 1) {
		say("no '%s' from the other side", tag);
		exit(3);
	}
	n = recv(g.ctl, &m, sizeof(m), 0);
	if (n != sizeof(m)) {
		say("the other side is gone before '%s'", tag);
		exit(3);
	}
	m.tag[sizeof(m.tag) - 1] = 0;
	if (strcmp(m.tag, tag)) {
		say("expected '%s' from the other side, got '%s'", tag, m.tag);
		exit(3);
	}
	return m.value;
}

/* --- connections --- */

static int listener(void)
{
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	socklen_t len = sizeof(a);
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

	if (fd < 0 || bind(fd, (struct sockaddr *)&a, sizeof(a)) < 0 || listen(fd, 16) < 0 ||
	    getsockname(fd, (struct sockaddr *)&a, &len) < 0)
		fail("listener");
	ctl_send("port", ntohs(a.sin_port));
	return fd;
}

/* accept() without flags: the spawn scenarios hand the fd to a child */
static int accept_one(int lfd)
{
	struct pollfd p = { .fd = lfd, .events = POLLIN };
	int fd;

	if (poll(&p, 1, wait_ms()) != 1)
		fail("no connection to accept");
	fd = accept(lfd, NULL, NULL);
	if (fd < 0)
		fail("accept");
	return fd;
}

static int connect_to(int port)
{
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port),
				 .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	int fd = socket(AF_INET, SOCK_STREAM, 0);

	if (fd < 0 || connect(fd, (struct sockaddr *)&a, sizeof(a)) < 0)
		fail("connect");
	return fd;
}

/* The server's side: listen, tell the port, take one connection. */
static int serve_one(void)
{
	int lfd = listener(), fd = accept_one(lfd);

	close(lfd);
	return fd;
}

static int connect_peer(void)
{
	return connect_to((int)ctl_wait("port"));
}

/* --- what a side does and sees --- */

/* send() all of len bytes of pattern, blocking; says "LABEL = N" */
static long send_all(int fd, const char *label, size_t len)
{
	static char buf[65536];
	size_t done = 0;
	ssize_t n = 0;

	memset(buf, 'x', sizeof(buf));
	while (done < len) {
		size_t chunk = len - done < sizeof(buf) ? len - done : sizeof(buf);

		n = send(fd, buf, chunk, MSG_NOSIGNAL);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			break;
		done += (size_t)n;
	}
	say("%s %s", label, n < 0 && !done ? result(-1, errno) : result((long)done, 0));
	return (long)done;
}

/* recv() exactly len bytes (bounded in time); says "LABEL = N" or the error */
static void recv_exact(int fd, const char *label, size_t len)
{
	char buf[4096];
	size_t got = 0;
	double end = now_ms() + wait_ms();

	while (got < len && now_ms() < end) {
		struct pollfd p = { .fd = fd, .events = POLLIN };
		size_t want = len - got < sizeof(buf) ? len - got : sizeof(buf);
		ssize_t n;

		if (poll(&p, 1, (int)(end - now_ms()) + 1) != 1)
			break;
		n = recv(fd, buf, want, 0);
		if (n <= 0) {
			say("%s %s after %zu bytes", label, n < 0 ? result(-1, errno) : "= 0 (EOF)",
			    got);
			return;
		}
		got += (size_t)n;
	}
	say("%s = %zu%s", label, got, got < len ? " (short: nothing more within the wait)" : "");
}

/* How a stream ended, as read_to_end() saw it. */
struct ending {
	long bytes;
	const char *event;	/* "EOF", an errno name, or NULL: nothing within the wait */
	double t_end, t_last;	/* when it ended; when the last data byte came */
};

/*
 * Reads until EOF, an error or the wait is over; chunk and gap_ms make a
 * slow reader (0: read all there is at once).
 */
static struct ending read_to_end(int fd, size_t chunk, long gap_ms)
{
	static char buf[65536];
	struct ending e = { .t_last = 0 };
	double end = now_ms() + wait_ms() + (gap_ms ? 60000 : 0);

	if (!chunk || chunk > sizeof(buf))
		chunk = sizeof(buf);
	while (now_ms() < end) {
		struct pollfd p = { .fd = fd, .events = POLLIN };
		ssize_t n;

		if (poll(&p, 1, (int)(end - now_ms()) + 1) != 1)
			break;
		n = recv(fd, buf, chunk, 0);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			e.event = n ? ename(errno) : "EOF";
			break;
		}
		e.bytes += n;
		e.t_last = now_ms();
		if (gap_ms)
			sleep_ms(gap_ms);
	}
	e.t_end = now_ms();
	return e;
}

/*
 * "LABEL: N bytes, EOF, now". t0 is what set the end off (the other side's
 * close); the bucket counts from t0 or the last data byte, whichever is
 * later. expect >= 0: print whether all of it came instead of the count;
 * expect -2: print "some" for a count that depends on timing.
 */
static void say_ending(const char *label, const struct ending *e, double t0, long expect)
{
	char count[64];
	double from = e->t_last > t0 ? e->t_last : t0;

	if (expect >= 0)
		snprintf(count, sizeof(count), "%s",
			 e->bytes == expect ? "all written" : "not all");
	else if (expect == -2)
		snprintf(count, sizeof(count), "%s", e->bytes ? "some" : "0");
	else
		snprintf(count, sizeof(count), "%ld", e->bytes);
	if (!e->event)
		say("%s: %s bytes, no end within the wait", label, count);
	else
		say("%s: %s bytes, %s, %s", label, count, e->event, bucket(e->t_end - from));
}

/*
 * Sends len bytes every gap_ms without blocking until a send fails or the
 * wait is over. Returns the errno of the failure (0: none) and when it came.
 */
static int send_until_error(int fd, size_t len, long gap_ms, double *when)
{
	static char buf[16384];
	double end = now_ms() + wait_ms();

	while (now_ms() < end) {
		ssize_t n = send(fd, buf, len, MSG_NOSIGNAL | MSG_DONTWAIT);

		if (n < 0 && errno != EAGAIN && errno != EINTR) {
			*when = now_ms();
			return errno;
		}
		sleep_ms(gap_ms);
	}
	return 0;
}

static void say_send_error(const char *label, int err, double when, double t0)
{
	if (err)
		say("%s: %s, %s", label, ename(err), bucket(when - t0));
	else
		say("%s: no error within the wait", label);
}

static void closed(int fd, const char *label)
{
	int r = close(fd);

	say("%s %s", label, RESULT(r));
	ctl_send("closed", now_ms());
}

/* Waits (bounded) until data can be read, without reading it. */
static void wait_readable(int fd)
{
	struct pollfd p = { .fd = fd, .events = POLLIN };

	if (poll(&p, 1, wait_ms()) != 1)
		fail("nothing to read");
}

/*
 * The peer's end of most scenarios: reads to the end (chunk and gap_ms as
 * in read_to_end()), says how it ended counting from the program's close,
 * closes. expect as in say_ending().
 */
static void end_of_stream(int fd, const char *label, size_t chunk, long gap_ms, long expect)
{
	struct ending e = read_to_end(fd, chunk, gap_ms);

	say_ending(label, &e, ctl_wait("closed"), expect);
	say("close %s", RESULT(close(fd)));
}

/* --- the scenarios --- */

/* The program connects, asks, reads the answer and closes; the peer reads to the end. */
static void client_closes_first_program(void)
{
	int fd = connect_peer();

	send_all(fd, "send request", REQ_LEN);
	recv_exact(fd, "recv answer", REQ_LEN);
	closed(fd, "close");
}

static void server_reads_to_end_peer(void)
{
	int fd = serve_one();

	recv_exact(fd, "recv request", REQ_LEN);
	send_all(fd, "send answer", REQ_LEN);
	end_of_stream(fd, "read to the end after program close", 0, 0, -1);
}

/*
 * dup3() and dup2() onto the connection's fd fail and leave it open (flags
 * dup3 does not know; a number at or above a soft fd limit lowered since);
 * the program then goes on as client_closes_first.
 */
static void dup_onto_connection_fails_program(void)
{
	int fd = connect_peer();
	struct rlimit rl, low;

	say("dup3 with unknown flags onto it %s", RESULT(dup3(0, fd, 0x40000000)));
	if (getrlimit(RLIMIT_NOFILE, &rl) < 0)
		fail("getrlimit");
	low = rl;
	low.rlim_cur = (rlim_t)fd;
	if (setrlimit(RLIMIT_NOFILE, &low) < 0)
		fail("setrlimit");
	say("dup2 onto it above the soft fd limit %s", RESULT(dup2(0, fd)));
	if (setrlimit(RLIMIT_NOFILE, &rl) < 0)
		fail("setrlimit");
	send_all(fd, "send request", REQ_LEN);
	recv_exact(fd, "recv answer", REQ_LEN);
	closed(fd, "close");
}

/*
 * An exec that fails: the program's close-on-exec connection is as it was,
 * and the program goes on with it (one more byte, then its close).
 */
static void exec_fails_program(void)
{
	int fd = connect_peer();

	say("FD_CLOEXEC %s", RESULT(fcntl(fd, F_SETFD, FD_CLOEXEC)));
	send_all(fd, "send request", REQ_LEN);
	recv_exact(fd, "recv answer", REQ_LEN);
	say("execl of a missing file %s", RESULT(execl("/nonexistent/tw-scenario", "x", NULL)));
	say("fcntl(F_GETFD) after it %s", RESULT(fcntl(fd, F_GETFD)));
	send_all(fd, "send a byte after it", 1);
	closed(fd, "close");
}

static void *close_range_unshared(void *arg)
{
	int fd = *(int *)arg;

	say("thread: close_range(fd, fd, CLOSE_RANGE_UNSHARE) %s",
	    RESULT(close_range((unsigned)fd, (unsigned)fd, CLOSE_RANGE_UNSHARE)));
	return NULL;
}

/*
 * close_range() calls that leave the program's connection open: flags the
 * kernel does not know (EINVAL), and CLOSE_RANGE_UNSHARE from a second
 * thread, which closes the fd in that thread's own copy of the fd table
 * only. The program then goes on as client_closes_first, and closes with
 * CLOSE_RANGE_UNSHARE, alone again.
 */
static void close_range_ends_nothing_program(void)
{
	int fd = connect_peer();
	pthread_t t;

	say("close_range with unknown flags %s", RESULT(close_range((unsigned)fd, (unsigned)fd,
								     0x40000000)));
	if (pthread_create(&t, NULL, close_range_unshared, &fd) || pthread_join(t, NULL))
		fail("pthread");
	send_all(fd, "send request", REQ_LEN);
	recv_exact(fd, "recv answer", REQ_LEN);
	/* one thread again: the table is not shared, and the fd closes in place */
	say("close_range(fd, fd, CLOSE_RANGE_UNSHARE) %s",
	    RESULT(close_range((unsigned)fd, (unsigned)fd, CLOSE_RANGE_UNSHARE)));
	ctl_send("closed", now_ms());
}

/*
 * The peer resets; the program writes into a stdio stream on the
 * connection and closes it: fclose() reports the write's ECONNRESET.
 */
static void fclose_after_reset_program(void)
{
	int fd = connect_peer();
	FILE *f;

	send_all(fd, "send request", REQ_LEN);
	ctl_wait("reset");
	wait_readable(fd);
	if (!(f = fdopen(fd, "w")))
		fail("fdopen");
	say("fputs into the stream %s", RESULT(fputs("after the reset", f)));
	say("fclose %s", RESULT(fclose(f)));
	ctl_send("closed", now_ms());
}

static struct {
	int fd;
	_Atomic int ready, cancelled;
	int ret;
	bool returned;
} fc;

static void *fclose_cancelled(void *arg)
{
	FILE *f;
	int old;

	(void)arg;
	pthread_setcancelstate(PTHREAD_CANCEL_DISABLE, &old);
	f = fdopen(fc.fd, "r+");
	fc.ready = 1;
	if (!f)
		return NULL;
	while (!fc.cancelled)
		sleep_ms(1);
	pthread_setcancelstate(PTHREAD_CANCEL_ENABLE, &old);
	fc.ret = fclose(f);
	fc.returned = true;
	pthread_testcancel();
	return NULL;
}

/*
 * A thread with a cancel pending closes the connection's stdio stream:
 * glibc's fclose() is no cancellation point, so it returns, and the
 * cancel acts after it.
 */
static void fclose_with_a_cancel_pending_program(void)
{
	pthread_t t;

	fc.fd = connect_peer();
	send_all(fc.fd, "send request", REQ_LEN);
	recv_exact(fc.fd, "recv answer", REQ_LEN);
	if (pthread_create(&t, NULL, fclose_cancelled, NULL))
		fail("pthread_create");
	while (!fc.ready)
		sleep_ms(1);
	pthread_cancel(t);
	fc.cancelled = 1;
	pthread_join(t, NULL);
	say("fclose in the cancelled thread: %s %s", fc.returned ? "returned" : "did not return",
	    result(fc.ret, errno));
	say("the fd after it %s", RESULT(fcntl(fc.fd, F_GETFD)));
	ctl_send("closed", now_ms());
}

static void wait_child(pid_t pid);

/*
 * Calls the kernel refuses for their arguments (a pointer to memory that
 * cannot be read, a negative address length) fail as they would; then the
 * program goes on as client_closes_first.
 */
static void bad_arguments_program(void)
{
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	void *none = mmap(NULL, 4096, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	struct msghdr m = { .msg_control = none, .msg_controllen = 64 };
	struct iovec iov = { .iov_base = (void *)"x", .iov_len = 1 };
	socklen_t len = sizeof(a), bad = (socklen_t)-1;
	int s = socket(AF_INET, SOCK_STREAM, 0), l = socket(AF_INET, SOCK_STREAM, 0), sp[2], c, fd;
	char b;

	if (none == MAP_FAILED || s < 0 || l < 0 || socketpair(AF_UNIX, SOCK_STREAM, 0, sp) < 0 ||
	    bind(l, (struct sockaddr *)&a, sizeof(a)) < 0 || listen(l, 4) < 0 ||
	    getsockname(l, (struct sockaddr *)&a, &len) < 0)
		fail("setup");
	say("connect to an address that cannot be read %s", RESULT(connect(s, none, 16)));
	say("sendmsg of a message that cannot be read %s", RESULT(sendmsg(sp[0], none, 0)));
	m.msg_iov = &iov;
	m.msg_iovlen = 1;
	say("sendmsg with control data that cannot be read %s", RESULT(sendmsg(sp[0], &m, 0)));
	c = socket(AF_INET, SOCK_STREAM, 0);
	if (c < 0 || connect(c, (struct sockaddr *)&a, sizeof(a)) < 0)
		fail("connect to self");
	say("accept with a negative address length %s",
	    RESULT(accept(l, (struct sockaddr *)&a, &bad)));
	say("recv on the side it would have accepted %s", RESULT(recv(c, &b, 1, 0)));
	close(c);
	close(l);
	close(s);
	fd = connect_peer();
	send_all(fd, "send request", REQ_LEN);
	recv_exact(fd, "recv answer", REQ_LEN);
	closed(fd, "close");
}

/*
 * A socket sent with SCM_RIGHTS to another process before it connects: the
 * program connects it, sends its request and closes its copy; the other
 * process, which holds the connection still, then sends its own.
 */
static void sent_before_connect_program(void)
{
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	char cbuf[CMSG_SPACE(sizeof(int))] = { 0 }, go;
	struct iovec iov = { .iov_base = &go, .iov_len = 1 };
	struct msghdr m = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = cbuf,
			    .msg_controllen = sizeof(cbuf) };
	struct cmsghdr *cm;
	int sp[2], fd;
	pid_t pid;

	if (socketpair(AF_UNIX, SOCK_STREAM, 0, sp) < 0)
		fail("socketpair");
	pid = fork();
	if (pid < 0)
		fail("fork");
	if (pid == 0) {
		int held = -1;

		close(sp[0]);
		if (recvmsg(sp[1], &m, 0) != 1 || !(cm = CMSG_FIRSTHDR(&m)))
			_exit(3);
		memcpy(&held, CMSG_DATA(cm), sizeof(int));
		if (read(sp[1], &go, 1) != 1)
			_exit(3);
		send_all(held, "other process: send its request", REQ_LEN);
		say("other process: close %s", RESULT(close(held)));
		_exit(0);
	}
	close(sp[1]);
	fd = socket(AF_INET, SOCK_STREAM, 0);
	if (fd < 0)
		fail("socket");
	cm = CMSG_FIRSTHDR(&m);
	cm->cmsg_level = SOL_SOCKET;
	cm->cmsg_type = SCM_RIGHTS;
	cm->cmsg_len = CMSG_LEN(sizeof(int));
	memcpy(CMSG_DATA(cm), &fd, sizeof(int));
	go = 's';
	say("send the unconnected socket away %s", RESULT(sendmsg(sp[0], &m, 0)));
	a.sin_port = htons((uint16_t)ctl_wait("port"));
	say("connect %s", RESULT(connect(fd, (struct sockaddr *)&a, sizeof(a))));
	send_all(fd, "send request", REQ_LEN);
	say("close own copy %s", RESULT(close(fd)));
	if (write(sp[0], "g", 1) != 1)
		fail("write");
	wait_child(pid);
	ctl_send("closed", now_ms());
}

static void two_requests_peer(void)
{
	int fd = serve_one();

	recv_exact(fd, "recv request", REQ_LEN);
	recv_exact(fd, "recv the other process's request", REQ_LEN);
	end_of_stream(fd, "read to the end after program close", 0, 0, -1);
}

/* As client_closes_first, closing with close_range(fd, ~0U, 0), as a daemon closes all. */
static void close_range_over_a_connection_program(void)
{
	int fd = connect_peer();

	send_all(fd, "send request", REQ_LEN);
	recv_exact(fd, "recv answer", REQ_LEN);
	say("close_range(fd, ~0U, 0) %s", RESULT(close_range((unsigned)fd, ~0U, 0)));
	ctl_send("closed", now_ms());
}

/* The program serves one request and closes; the peer reads the answer to the end. */
static void server_closes_first_program(void)
{
	int fd = serve_one();

	recv_exact(fd, "recv request", REQ_LEN);
	send_all(fd, "send answer", REQ_LEN);
	closed(fd, "close");
}

static void client_reads_to_end_peer(void)
{
	int fd = connect_peer();

	send_all(fd, "send request", REQ_LEN);
	end_of_stream(fd, "read to the end after program close", 0, 0, -1);
}

/* The program asks, and closes with the answer unread. */
static void unread_at_close_client_program(void)
{
	int fd = connect_peer();

	send_all(fd, "send request", REQ_LEN);
	wait_readable(fd);
	closed(fd, "close with the answer unread");
}

static void unread_at_close_client_peer(void)
{
	int fd = serve_one();
	struct ending e;
	double t0, when = 0;
	int err;

	recv_exact(fd, "recv request", REQ_LEN);
	send_all(fd, "send answer", 1000);
	t0 = ctl_wait("closed");
	e = read_to_end(fd, 0, 0);
	say_ending("read to the end after program close", &e, t0, -1);
	err = send_until_error(fd, 1000, 10, &when);
	say_send_error("send every 10 ms after program close", err, when, t0);
	say("close %s", RESULT(close(fd)));
}

/* The peer sends all the time; the program reads none of it and closes. */
static void unread_at_close_server_program(void)
{
	int fd = serve_one();

	wait_readable(fd);
	sleep_ms(100);
	closed(fd, "close with data unread");
}

static void unread_at_close_server_peer(void)
{
	int fd = connect_peer(), err;
	double when = 0, t0;

	err = send_until_error(fd, 10000, 5, &when);
	t0 = ctl_wait("closed");
	say_send_error("send 10 kB every 5 ms", err, when, t0);
	say("close %s", RESULT(close(fd)));
}

/* After the program's close, the peer writes a byte every 10 ms. */
static void writes_after_close_peer(int fd)
{
	double t0 = ctl_wait("closed"), when = 0;
	int err = send_until_error(fd, 1, 10, &when);

	say_send_error("send a byte every 10 ms after program close", err, when, t0);
	say("close %s", RESULT(close(fd)));
}

static void data_after_close_client_peer(void)
{
	int fd = serve_one();

	recv_exact(fd, "recv request", REQ_LEN);
	send_all(fd, "send answer", REQ_LEN);
	writes_after_close_peer(fd);
}

static void data_after_close_server_peer(void)
{
	int fd = connect_peer();

	send_all(fd, "send request", REQ_LEN);
	recv_exact(fd, "recv answer", REQ_LEN);
	writes_after_close_peer(fd);
}

static int sigios;
static void on_sigio(int sig);

/*
 * The program's own epoll (level-triggered) and O_ASYNC owner watch the
 * connection when it closes it without EPOLL_CTL_DEL, as most event loops
 * do; the peer's data after the close must reach neither.
 */
static void epoll_and_sigio_after_close_program(void)
{
	int fd = connect_peer(), ep = epoll_create1(EPOLL_CLOEXEC), n = 0;
	struct epoll_event ev = { .events = EPOLLIN | EPOLLRDHUP, .data.fd = fd }, out[4];
	double until;

	send_all(fd, "send request", REQ_LEN);
	recv_exact(fd, "recv answer", REQ_LEN);
	signal(SIGIO, on_sigio);
	if (ep < 0 || epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev) < 0 ||
	    fcntl(fd, F_SETOWN, getpid()) < 0 ||
	    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_ASYNC) < 0)
		fail("epoll, O_ASYNC");
	closed(fd, "close, still in the epoll set");
	for (until = now_ms() + 300; now_ms() < until;) {
		int k = epoll_wait(ep, out, 4, 50);

		n += k > 0 ? k : 0;
	}
	say("epoll events in the 300 ms after the close: %d", n);
	say("SIGIO in the 300 ms after the close: %d", sigios);
	close(ep);
}

/* SIGIO in the 300 ms after the close of fd, whose owner is set */
static void sigios_after_close(int fd, const char *label)
{
	double until;

	closed(fd, label);
	for (until = now_ms() + 300; now_ms() < until;)
		poll(NULL, 0, 50);
	say("SIGIO in the 300 ms after the close: %d", sigios);
}

/* The owner and O_ASYNC are set on the socket before it connects. */
static void sigio_owner_set_before_connect_program(void)
{
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	int fd = socket(AF_INET, SOCK_STREAM, 0);

	signal(SIGIO, on_sigio);
	if (fd < 0 || fcntl(fd, F_SETOWN, getpid()) < 0 ||
	    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_ASYNC) < 0)
		fail("O_ASYNC");
	a.sin_port = htons((uint16_t)ctl_wait("port"));
	if (connect(fd, (struct sockaddr *)&a, sizeof(a)) < 0)
		fail("connect");
	send_all(fd, "send request", REQ_LEN);
	recv_exact(fd, "recv answer", REQ_LEN);
	sigios_after_close(fd, "close");
}

/* The owner and O_ASYNC are set through a dup, which is closed first. */
static void sigio_owner_set_on_a_dup_program(void)
{
	int fd = connect_peer(), d;

	send_all(fd, "send request", REQ_LEN);
	recv_exact(fd, "recv answer", REQ_LEN);
	signal(SIGIO, on_sigio);
	d = dup(fd);
	if (d < 0 || fcntl(d, F_SETOWN, getpid()) < 0 ||
	    fcntl(d, F_SETFL, fcntl(d, F_GETFL) | O_ASYNC) < 0)
		fail("dup, O_ASYNC");
	say("close the dup %s", RESULT(close(d)));
	sigios_after_close(fd, "close");
}

/*
 * A forked child sets itself the owner of the connection with O_ASYNC and
 * closes its copy; then the parent closes: the peer's data after that
 * reaches no one, and the child gets no SIGIO.
 */
static void sigio_owner_set_in_a_child_program(void)
{
	int fd = connect_peer(), done[2];
	pid_t pid;
	char c;

	send_all(fd, "send request", REQ_LEN);
	recv_exact(fd, "recv answer", REQ_LEN);
	if (pipe(done) < 0)
		fail("pipe");
	pid = fork();
	if (pid < 0)
		fail("fork");
	if (pid == 0) {
		double until;

		signal(SIGIO, on_sigio);
		if (fcntl(fd, F_SETOWN, getpid()) < 0 ||
		    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_ASYNC) < 0)
			_exit(3);
		close(fd);
		if (write(done[1], "c", 1) != 1)
			_exit(3);
		for (until = now_ms() + 500; now_ms() < until;)
			poll(NULL, 0, 50);
		say("child: SIGIO in the 500 ms after its close: %d", sigios);
		_exit(0);
	}
	close(done[1]);
	if (read(done[0], &c, 1) != 1)
		fail("read");
	closed(fd, "close after the child closed its copy");
	if (waitpid(pid, NULL, 0) != pid)
		fail("waitpid");
}

/* The program shuts down writing first, reads the answer to the end, closes. */
static void half_close_program_program(void)
{
	int fd = connect_peer();
	struct ending e;
	double t0;

	send_all(fd, "send request", REQ_LEN);
	say("shutdown(SHUT_WR) %s", RESULT(shutdown(fd, SHUT_WR)));
	ctl_send("shut", now_ms());
	t0 = ctl_wait("answered");
	e = read_to_end(fd, 0, 0);
	say_ending("read to the end after peer close", &e, t0, -1);
	closed(fd, "close");
}

static void half_close_program_peer(void)
{
	int fd = serve_one();
	struct ending e;

	e = read_to_end(fd, 0, 0);
	say_ending("read to the end after program shutdown", &e, ctl_wait("shut"), -1);
	send_all(fd, "send answer", REQ_LEN);
	say("close %s", RESULT(close(fd)));
	ctl_send("answered", now_ms());
	ctl_wait("closed");
}

/* The peer shuts down writing first; the program reads to the end, answers, closes. */
static void half_close_peer_program(void)
{
	int fd = serve_one();
	struct ending e;

	e = read_to_end(fd, 0, 0);
	say_ending("read to the end after peer shutdown", &e, ctl_wait("shut"), -1);
	send_all(fd, "send answer", REQ_LEN);
	closed(fd, "close");
}

static void half_close_peer_peer(void)
{
	int fd = connect_peer();

	send_all(fd, "send request", REQ_LEN);
	say("shutdown(SHUT_WR) %s", RESULT(shutdown(fd, SHUT_WR)));
	ctl_send("shut", now_ms());
	end_of_stream(fd, "read to the end after own shutdown and program close", 0, 0, -1);
}

/* The peer resets the connection; the program reads, writes, closes. */
static void peer_reset_program(void)
{
	int fd = connect_peer();
	char c;

	send_all(fd, "send request", REQ_LEN);
	ctl_wait("reset");
	wait_readable(fd);
	say("recv after peer reset %s", RESULT(recv(fd, &c, 1, 0)));
	say("send after peer reset %s", RESULT(send(fd, "x", 1, MSG_NOSIGNAL)));
	closed(fd, "close");
}

static void peer_reset_peer(void)
{
	int fd = serve_one();
	struct linger l = { 1, 0 };

	recv_exact(fd, "recv request", REQ_LEN);
	setsockopt(fd, SOL_SOCKET, SO_LINGER, &l, sizeof(l));
	say("close with SO_LINGER {1,0} %s", RESULT(close(fd)));
	ctl_send("reset", now_ms());
	ctl_wait("closed");
}

/*
 * The program writes 1 MB and closes; the peer starts reading 1.5 x
 * defer_ms after the connection came up, all of it then in the buffers.
 */
static void large_write_before_close_program(void)
{
	int fd = serve_one();

	send_all(fd, "send 1 MB", 1 << 20);
	closed(fd, "close");
}

static void large_write_before_close_peer(void)
{
	int fd = connect_peer();

	sleep_ms(g.defer_ms * 3 / 2);
	end_of_stream(fd, "read from 1.5 x defer_ms on, to the end", 0, 0, -1);
}

/* The program writes 256 kB and closes; the peer reads 8 kB every 50 ms. */
static void slow_reader_program(void)
{
	int fd = serve_one();

	send_all(fd, "send 256 kB", 256 << 10);
	closed(fd, "close");
}

static void slow_reader_peer(void)
{
	int fd = connect_peer();

	end_of_stream(fd, "read 8 kB every 50 ms to the end", 8192, 50, -1);
}

/* The program asks for a reset itself: SO_LINGER {1,0}, then close. */
static void linger_zero_program(void)
{
	int fd = connect_peer();
	struct linger l = { 1, 0 };

	send_all(fd, "send request", REQ_LEN);
	recv_exact(fd, "recv answer", REQ_LEN);
	say("setsockopt(SO_LINGER {1,0}) %s",
	    RESULT(setsockopt(fd, SOL_SOCKET, SO_LINGER, &l, sizeof(l))));
	closed(fd, "close");
}

/* SO_LINGER {1,5}: a close that waits until what was sent is acknowledged. */
static void linger_on_program(void)
{
	int fd = connect_peer();
	struct linger l = { 1, 5 };

	say("setsockopt(SO_LINGER {1,5}) %s",
	    RESULT(setsockopt(fd, SOL_SOCKET, SO_LINGER, &l, sizeof(l))));
	send_all(fd, "send 64 kB", 64 << 10);
	closed(fd, "close");
}

static void reads_late_to_end_peer(void)
{
	int fd = serve_one();

	sleep_ms(200);
	end_of_stream(fd, "read from 200 ms on, to the end after program close", 0, 0, -1);
}

/* Non-blocking: queue up to 512 kB, as much as goes in, and close. */
static void nonblocking_close_queued_program(void)
{
	static char buf[65536];
	int fd = connect_peer();
	long sent = 0;

	say("fcntl(O_NONBLOCK) %s", RESULT(fcntl(fd, F_SETFL, O_NONBLOCK)));
	while (sent < 512 << 10) {
		ssize_t n = send(fd, buf, sizeof(buf), MSG_NOSIGNAL);

		if (n < 0) {
			if (errno != EAGAIN)
				say("send %s", result(-1, errno));
			break;
		}
		sent += n;
	}
	say("send until EAGAIN or 512 kB: %s", sent ? "some queued" : "nothing queued");
	ctl_send("sent", (double)sent);
	closed(fd, "close");
}

static void nonblocking_close_queued_peer(void)
{
	int fd = serve_one();
	long sent = (long)ctl_wait("sent");

	sleep_ms(300);
	end_of_stream(fd, "read from 300 ms on, to the end after program close", 0, 0, sent);
}

/* Starts argv[0] by posix_spawn or vfork + exec (how), saying how it went; the pid or -1. */
static pid_t start_child(const char *how, char **argv)
{
	pid_t pid = -1;
	int r;

	if (!strcmp(how, "posix_spawn")) {
		r = posix_spawn(&pid, argv[0], NULL, NULL, argv, environ);
		say("posix_spawn %s", result(r ? -1 : 0, r));
		return r ? -1 : pid;
	}
	pid = vfork();
	if (pid == 0) {
		execve(argv[0], argv, environ);
		_exit(127);
	}
	say("vfork + exec %s", pid < 0 ? result(-1, errno) : "= child");
	return pid;
}

/* Waits for the child pid (none when pid <= 0) and says how it ended. */
static void wait_child(pid_t pid)
{
	int status = -1;

	if (pid <= 0)
		return;
	if (waitpid(pid, &status, 0) != pid)
		say("child: no status");
	else if (WIFSIGNALED(status))
		say("child killed by SIG%s", sigabbrev_np(WTERMSIG(status)));
	else
		say("child exit %d", WEXITSTATUS(status));
}

/*
 * A forked child holds the connection when the peer resets it; the program
 * closes its copy after the reset came in, then the child reads: the error
 * is the child's to read (a peek at the close would have taken it).
 */
static void reset_read_by_forked_holder_program(void)
{
	int fd = connect_peer(), go[2];
	pid_t pid;
	char c;

	send_all(fd, "send request", REQ_LEN);
	if (pipe(go) < 0)
		fail("pipe");
	pid = fork();
	if (pid < 0)
		fail("fork");
	if (pid == 0) {
		int err = -1;
		socklen_t len = sizeof(err);

		close(go[1]);
		if (read(go[0], &c, 1) != 1)
			_exit(3);
		say("child: recv after the parent's close %s", RESULT(recv(fd, &c, 1, 0)));
		say("child: SO_ERROR %s, error %s",
		    RESULT(getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len)), err ? ename(err) : "0");
		say("child: close %s", RESULT(close(fd)));
		_exit(0);
	}
	close(go[0]);
	ctl_wait("reset");
	wait_readable(fd);
	closed(fd, "close while a child holds it, the reset unread");
	if (write(go[1], "g", 1) != 1)
		fail("write");
	close(go[1]);
	wait_child(pid);
}

/*
 * inetd: the program hands the accepted socket to a child (posix_spawn,
 * vfork + exec, or system() with the child in the background), closes its
 * own copy and, when it can, waits for the child; the child reads the
 * request and answers (--child FD), saying how its write went.
 */
static void spawn_program(const char *how)
{
	int fd = serve_one();
	char fdarg[16], cmd[4200];
	char *argv[] = { g.self, (char *)"--child", fdarg, NULL };
	pid_t pid = -1;

	snprintf(fdarg, sizeof(fdarg), "%d", fd);
	if (strcmp(how, "system")) {
		pid = start_child(how, argv);
	} else {
		snprintf(cmd, sizeof(cmd), "exec '%s' --child %d &", g.self, fd);
		say("system(\"child &\") %s", RESULT(system(cmd)));
	}
	closed(fd, "close own copy");
	wait_child(pid);
}

static void spawn_posix_spawn_program(void)
{
	spawn_program("posix_spawn");
}

static void spawn_vfork_program(void)
{
	spawn_program("vfork");
}

static void spawn_system_program(void)
{
	spawn_program("system");
}

/*
 * A socket made before a spawn (not close-on-exec) and connected after it:
 * the child (--hold MS) holds it for defer_ms without knowing, as a child
 * that inherits every fd does. The program sends its request and closes;
 * the peer's stream ends only when the child exits.
 */
static void spawn_before_connect_program(const char *how)
{
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	int fd = socket(AF_INET, SOCK_STREAM, 0);
	char ms[16];
	char *argv[] = { g.self, (char *)"--hold", ms, NULL };
	pid_t pid;

	if (fd < 0)
		fail("socket");
	a.sin_port = htons((uint16_t)ctl_wait("port"));
	snprintf(ms, sizeof(ms), "%ld", g.defer_ms);
	pid = start_child(how, argv);
	say("connect %s", RESULT(connect(fd, (struct sockaddr *)&a, sizeof(a))));
	send_all(fd, "send request", REQ_LEN);
	closed(fd, "close while the child holds the socket");
	wait_child(pid);
}

static void spawn_before_connect_posix_spawn_program(void)
{
	spawn_before_connect_program("posix_spawn");
}

static void spawn_before_connect_vfork_program(void)
{
	spawn_before_connect_program("vfork");
}

static void spawn_before_connect_peer(void)
{
	int fd = serve_one();

	recv_exact(fd, "recv request", REQ_LEN);
	end_of_stream(fd, "read to the end after program close (the child holds it)", 0, 0, -1);
}

/* the child of the spawn scenarios: exit 0 when the answer was written whole */
static int child_main(int fd)
{
	static const char answer[] = "answer from the child\n";
	struct pollfd p = { .fd = fd, .events = POLLIN };
	char buf[REQ_LEN];
	size_t got = 0;

	while (got < sizeof(buf) && poll(&p, 1, 5000) == 1) {
		ssize_t n = read(fd, buf, sizeof(buf) - got);

		if (n <= 0)
			return 2;
		got += (size_t)n;
	}
	sleep_ms(200);	/* the parent has closed its copy by now */
	say("child: write answer %s", RESULT(write(fd, answer, sizeof(answer) - 1)));
	return 0;
}

static void spawn_peer(void)
{
	int fd = connect_peer();
	struct ending e;

	send_all(fd, "send request", REQ_LEN);
	e = read_to_end(fd, 0, 0);
	/* the child's answer is 22 bytes; its exit ends the stream */
	say_ending("read the child's answer, to the end after program close", &e,
		   ctl_wait("closed"), -1);
	say("close %s", RESULT(close(fd)));
}

/*
 * A program whose thread is writing when the main thread calls exit(); the
 * peer reads nothing until it has exited, so the writer is blocked in
 * write(). Run EXIT_RUNS times (--exit-writer PORT).
 */
static void *writer_thread(void *arg)
{
	static char buf[256];
	int fd = *(int *)arg;

	for (;;)
		if (write(fd, buf, sizeof(buf)) < 0 && errno != EINTR)
			return NULL;
}

static int exit_writer_main(int port)
{
	static int fd;
	pthread_t t;

	fd = connect_to(port);
	pthread_create(&t, NULL, writer_thread, &fd);
	sleep_ms(100);
	exit(0);
}

static void exit_while_thread_writes_program(void)
{
	int port = (int)ctl_wait("port");
	char parg[16];
	char *argv[] = { g.self, (char *)"--exit-writer", parg, NULL };

	snprintf(parg, sizeof(parg), "%d", port);
	for (int i = 0; i < EXIT_RUNS; i++) {
		pid_t pid;
		int status = 0, r = posix_spawn(&pid, g.self, NULL, NULL, argv, environ);

		if (r || waitpid(pid, &status, 0) != pid) {
			say("run %d: could not start", i + 1);
			exit(3);
		}
		ctl_send("exited", now_ms());
		if (WIFSIGNALED(status))
			say("run %d: killed by SIG%s", i + 1, sigabbrev_np(WTERMSIG(status)));
		else
			say("run %d: exit %d", i + 1, WEXITSTATUS(status));
		ctl_wait("next");
	}
}

static void exit_while_thread_writes_peer(void)
{
	int lfd = listener();

	for (int i = 0; i < EXIT_RUNS; i++) {
		int fd = accept_one(lfd);
		struct ending e = read_to_end(fd, 0, 0);

		say_ending("read to the end after program exit", &e, ctl_wait("exited"), -2);
		close(fd);
		ctl_send("next", 0);
	}
	close(lfd);
}

/* An exit handler of the program's that writes its last words and closes. */
static int last_words_fd = -1;

static void last_words(void)
{
	int fd = last_words_fd;

	say("exit handler: send bye %s", RESULT(send(fd, "bye\n", 4, MSG_NOSIGNAL)));
	say("exit handler: close %s", RESULT(close(fd)));
}

static void exits_after_answer(void)
{
	int fd = connect_peer();

	send_all(fd, "send request", REQ_LEN);
	recv_exact(fd, "recv answer", REQ_LEN);
	last_words_fd = fd;
	ctl_send("closed", now_ms());	/* the exit is what ends it */
	exit(0);
}

static void *read_stream(void *arg)
{
	char buf[64];

	while (fgets(buf, sizeof(buf), arg))
		;
	return NULL;
}

/*
 * A thread is blocked in fgets() on a pipe nobody writes to (it holds the
 * stream's lock) when the program exits: exit() flushes without taking it.
 */
static void exit_while_a_thread_reads_a_stream_program(void)
{
	FILE *f;
	pthread_t t;
	int p[2];

	if (pipe(p) < 0 || !(f = fdopen(p[0], "r")))
		fail("pipe");
	if (pthread_create(&t, NULL, read_stream, f))
		fail("pthread_create");
	sleep_ms(50);
	exits_after_answer();
}

/*
 * The program's answer is in a fully buffered stdio stream on the
 * connection when it exits: exit() writes it after the library's pass,
 * and the peer gets every byte before the end.
 */
static void stream_flushed_at_exit_program(void)
{
	int fd = connect_peer();
	FILE *f = fdopen(fd, "w");
	static char buf[8192];

	if (!f || setvbuf(f, buf, _IOFBF, sizeof(buf)))
		fail("fdopen");
	send_all(fd, "send request", REQ_LEN);
	recv_exact(fd, "recv answer", REQ_LEN);
	for (int i = 0; i < 100; i++)
		fputs("forty bytes of a buffered last word....\n", f);
	ctl_send("closed", now_ms());
	exit(0);
}

static void stream_flushed_at_exit_peer(void)
{
	int fd = serve_one();

	recv_exact(fd, "recv request", REQ_LEN);
	send_all(fd, "send answer", REQ_LEN);
	end_of_stream(fd, "read to the end after program exit", 0, 0, 4000);
}

static void atexit_writes_program(void)
{
	atexit(last_words);
	exits_after_answer();
}

/*
 * The same exit handler, in a shared library the program loads: its
 * destructor runs after those of the libraries loaded before it, the
 * preload library among them.
 */
/* tests/programs/lib/tw-exit-writer.c's function name, loaded with --exit-lib */
static void (*exit_lib_fn(const char *name))(int)
{
	void *h = g.exit_lib ? dlopen(g.exit_lib, RTLD_NOW) : NULL;
	void (*fn)(int);

	if (!h) {
		say("setup failed: dlopen: %s", g.exit_lib ? dlerror() : "no --exit-lib");
		exit(3);
	}
	*(void **)&fn = dlsym(h, name);
	if (!fn) {
		say("setup failed: dlsym %s", name);
		exit(3);
	}
	return fn;
}

static void exit_handler_in_library_program(void)
{
	void (*arm)(int) = exit_lib_fn("tw_exit_writer_arm");
	int fd;

	fd = connect_peer();
	send_all(fd, "send request", REQ_LEN);
	recv_exact(fd, "recv answer", REQ_LEN);
	arm(fd);
	ctl_send("closed", now_ms());
	exit(0);
}

/*
 * The peer resets the connection; the program exits with the reset unread,
 * and an exit handler that runs after the library's reads it.
 */
static void reset_read_in_exit_handler_program(void)
{
	void (*arm)(int) = exit_lib_fn("tw_exit_reader_arm");
	int fd = connect_peer();

	send_all(fd, "send request", REQ_LEN);
	ctl_wait("reset");
	wait_readable(fd);
	arm(fd);
	ctl_send("closed", now_ms());
	exit(0);
}

/*
 * The program exits holding the connection; the peer resets it 100 ms
 * later, and an exit handler that runs after the library's reads the reset
 * 300 ms into the exit. Under defer the holder process has its copy by then.
 */
static void reset_after_exit_read_in_exit_handler_program(void)
{
	void (*arm)(int) = exit_lib_fn("tw_exit_late_reader_arm");
	int fd = connect_peer();

	send_all(fd, "send request", REQ_LEN);
	recv_exact(fd, "recv answer", REQ_LEN);
	arm(fd);
	ctl_send("closed", now_ms());
	exit(0);
}

/* The program exits holding the connection, which the peer then writes to. */
static void urgent_after_exit_program(void)
{
	int fd = connect_peer();

	send_all(fd, "send request", REQ_LEN);
	recv_exact(fd, "recv answer", REQ_LEN);
	ctl_send("closed", now_ms());
	exit(0);
}

/*
 * 100 ms after the program began to exit, an urgent byte (MSG_OOB), then a
 * byte every 10 ms until a send fails: the exited program's socket, or the
 * holder's copy of it, resets at the first.
 */
static void urgent_after_exit_peer(void)
{
	int fd = serve_one();
	double t0, when = 0;
	int err;

	recv_exact(fd, "recv request", REQ_LEN);
	send_all(fd, "send answer", REQ_LEN);
	t0 = ctl_wait("closed");
	sleep_ms(100);
	say("send an urgent byte %s", RESULT(send(fd, "!", 1, MSG_OOB | MSG_NOSIGNAL)));
	err = send_until_error(fd, 1, 10, &when);
	say_send_error("then send a byte every 10 ms after program close", err, when, t0 + 100);
	say("close %s", RESULT(close(fd)));
}

/* Answers, and resets the connection 100 ms after the program says it exits. */
static void reset_at_exit_peer(void)
{
	int fd = serve_one();
	struct linger l = { 1, 0 };

	recv_exact(fd, "recv request", REQ_LEN);
	send_all(fd, "send answer", REQ_LEN);
	ctl_wait("closed");
	sleep_ms(100);
	setsockopt(fd, SOL_SOCKET, SO_LINGER, &l, sizeof(l));
	say("close with SO_LINGER {1,0} %s", RESULT(close(fd)));
}

static void exit_handler_peer(void)
{
	int fd = serve_one();

	recv_exact(fd, "recv request", REQ_LEN);
	send_all(fd, "send answer", REQ_LEN);
	end_of_stream(fd, "read to the end after program exit", 0, 0, -1);
}

/* A program that makes no TCP connection: which fds it holds. */
static void no_tcp_fds_program(void)
{
	DIR *d = opendir("/proc/self/fd");
	char line[256] = "open fds:";
	struct dirent *de;

	if (!d)
		fail("opendir /proc/self/fd");
	while ((de = readdir(d))) {
		int fd = atoi(de->d_name);

		if (de->d_name[0] == '.' || fd == dirfd(d) || fd == g.ctl)
			continue;
		snprintf(line + strlen(line), sizeof(line) - strlen(line), " %d", fd);
	}
	closedir(d);
	say("%s", line);
	ctl_send("closed", now_ms());
}

static void no_tcp_fds_peer(void)
{
	ctl_wait("closed");
}

/*
 * The peer sends its request and one urgent byte (MSG_OOB); the program
 * reads the request and the urgent byte out of band, as Telnet and FTP
 * servers do, answers and closes. The urgent byte stays in the receive
 * queue (a peek skips it): the kernel's close resets, after the answer.
 */
static void urgent_unread_program(void)
{
	int fd = serve_one();
	struct pollfd p = { .fd = fd, .events = POLLPRI };
	char c;

	recv_exact(fd, "recv request", REQ_LEN);
	if (poll(&p, 1, wait_ms()) != 1)
		fail("no urgent byte");
	say("recv the urgent byte %s", RESULT(recv(fd, &c, 1, MSG_OOB)));
	send_all(fd, "send answer", REQ_LEN);
	closed(fd, "close");
}

static void urgent_unread_peer(void)
{
	int fd = connect_peer();

	send_all(fd, "send request", REQ_LEN);
	say("send an urgent byte %s", RESULT(send(fd, "!", 1, MSG_OOB | MSG_NOSIGNAL)));
	end_of_stream(fd, "read to the end after program close", 0, 0, REQ_LEN);
}

static int sigios;

static void on_sigio(int sig)
{
	(void)sig;
	sigios++;
}

/*
 * A non-blocking connect that the program gives up while its SYN is still
 * unanswered (the listener's queue is full), on a socket that signals its
 * owner (O_ASYNC, SIGIO): how many SIGIO the close brings. None: the close
 * drops the socket's signalling before it gives the connect up.
 */
static void async_connect_given_up_program(void)
{
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	struct sigaction sa = { .sa_handler = on_sigio };
	socklen_t len = sizeof(a);
	int lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0), filler, fd, before;

	sigemptyset(&sa.sa_mask);
	sigaction(SIGIO, &sa, NULL);
	/* a backlog of 0 holds one connection: the filler's; the next SYN is dropped */
	if (lfd < 0 || bind(lfd, (struct sockaddr *)&a, sizeof(a)) < 0 || listen(lfd, 0) < 0 ||
	    getsockname(lfd, (struct sockaddr *)&a, &len) < 0)
		fail("listener");
	filler = connect_to(ntohs(a.sin_port));
	fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0 || fcntl(fd, F_SETOWN, getpid()) < 0 ||
	    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_ASYNC) < 0)
		fail("an O_ASYNC socket");
	say("connect %s", RESULT(connect(fd, (struct sockaddr *)&a, sizeof(a))));
	sleep_ms(100);
	before = sigios;
	say("close while the SYN waits %s", RESULT(close(fd)));
	sleep_ms(100);
	say("SIGIO after the close: %d", sigios - before);
	close(filler);
	close(lfd);
	ctl_send("closed", now_ms());
}

/* a socket with TCP_FASTOPEN_CONNECT, connected to a; says how the connect went */
static int fastopen_connect(const struct sockaddr_in *a)
{
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0), on = 1;

	if (fd < 0 || setsockopt(fd, IPPROTO_TCP, TCP_FASTOPEN_CONNECT, &on, sizeof(on)) < 0)
		fail("TCP_FASTOPEN_CONNECT");
	say("connect with TCP_FASTOPEN_CONNECT %s",
	    RESULT(connect(fd, (const struct sockaddr *)a, sizeof(*a))));
	return fd;
}

/*
 * connect() of a socket with TCP_FASTOPEN_CONNECT and a cookie from an
 * earlier connection returns 0 at once and sends nothing until the first
 * write; the program closes it unused. Its O_ASYNC owner gets no SIGIO
 * from that close.
 */
static void fastopen_connect_closed_unused_program(void)
{
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	struct sigaction sa = { .sa_handler = on_sigio };
	int fd, before;

	sigemptyset(&sa.sa_mask);
	sigaction(SIGIO, &sa, NULL);
	a.sin_port = htons((uint16_t)ctl_wait("port"));
	/* the first brings the cookie back */
	fd = fastopen_connect(&a);
	say("close the first %s", RESULT(close(fd)));
	fd = fastopen_connect(&a);
	if (fcntl(fd, F_SETOWN, getpid()) < 0 ||
	    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_ASYNC) < 0)
		fail("an O_ASYNC socket");
	before = sigios;
	say("close unused %s", RESULT(close(fd)));
	sleep_ms(100);
	say("SIGIO after the close: %d", sigios - before);
	ctl_send("closed", now_ms());
}

/* Listens with TCP Fast Open on (both sides in this namespace), and accepts nothing. */
static void fastopen_listens_only_peer(void)
{
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	socklen_t len = sizeof(a);
	int lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0), qlen = 16, sys;

	sys = open("/proc/sys/net/ipv4/tcp_fastopen", O_WRONLY | O_CLOEXEC);
	if (sys < 0 || write(sys, "3\n", 2) != 2)
		fail("net.ipv4.tcp_fastopen");
	close(sys);
	if (lfd < 0 || setsockopt(lfd, IPPROTO_TCP, TCP_FASTOPEN, &qlen, sizeof(qlen)) < 0 ||
	    bind(lfd, (struct sockaddr *)&a, sizeof(a)) < 0 || listen(lfd, 16) < 0 ||
	    getsockname(lfd, (struct sockaddr *)&a, &len) < 0)
		fail("listener");
	ctl_send("port", ntohs(a.sin_port));
	ctl_wait("closed");
	say("close the listener %s", RESULT(close(lfd)));
}

struct scenario {
	const char *name;
	void (*program)(void);
	void (*peer)(void);
	bool both;	/* the peer runs with the library too */
};

static const struct scenario scenarios[] = {
	{ "client_closes_first", client_closes_first_program, server_reads_to_end_peer, false },
	{ "server_closes_first", server_closes_first_program, client_reads_to_end_peer, false },
	{ "dup_onto_connection_fails", dup_onto_connection_fails_program,
	  server_reads_to_end_peer, false },
	{ "exec_fails", exec_fails_program, server_reads_to_end_peer, false },
	{ "close_range_over_a_connection", close_range_over_a_connection_program,
	  server_reads_to_end_peer, false },
	{ "fastopen_connect_closed_unused", fastopen_connect_closed_unused_program,
	  fastopen_listens_only_peer, false },
	{ "epoll_and_sigio_after_close", epoll_and_sigio_after_close_program,
	  data_after_close_client_peer, false },
	{ "sigio_owner_set_before_connect", sigio_owner_set_before_connect_program,
	  data_after_close_client_peer, false },
	{ "sigio_owner_set_on_a_dup", sigio_owner_set_on_a_dup_program,
	  data_after_close_client_peer, false },
	{ "sigio_owner_set_in_a_child", sigio_owner_set_in_a_child_program,
	  data_after_close_client_peer, false },
	{ "bad_arguments", bad_arguments_program, server_reads_to_end_peer, false },
	{ "sent_before_connect", sent_before_connect_program, two_requests_peer, false },
	{ "fclose_after_reset", fclose_after_reset_program, peer_reset_peer, false },
	{ "fclose_with_a_cancel_pending", fclose_with_a_cancel_pending_program,
	  server_reads_to_end_peer, false },
	{ "close_range_ends_nothing", close_range_ends_nothing_program, server_reads_to_end_peer,
	  false },
	{ "unread_at_close_client", unread_at_close_client_program, unread_at_close_client_peer,
	  false },
	{ "unread_at_close_server", unread_at_close_server_program, unread_at_close_server_peer,
	  false },
	{ "data_after_close_client", client_closes_first_program, data_after_close_client_peer,
	  false },
	{ "data_after_close_server", server_closes_first_program, data_after_close_server_peer,
	  false },
	{ "half_close_program", half_close_program_program, half_close_program_peer, false },
	{ "half_close_peer", half_close_peer_program, half_close_peer_peer, false },
	{ "peer_reset", peer_reset_program, peer_reset_peer, false },
	{ "reset_read_by_forked_holder", reset_read_by_forked_holder_program, peer_reset_peer,
	  false },
	{ "large_write_before_close", large_write_before_close_program,
	  large_write_before_close_peer, false },
	{ "slow_reader", slow_reader_program, slow_reader_peer, false },
	{ "linger_zero", linger_zero_program, server_reads_to_end_peer, false },
	{ "linger_on", linger_on_program, reads_late_to_end_peer, false },
	{ "nonblocking_close_queued", nonblocking_close_queued_program,
	  nonblocking_close_queued_peer, false },
	{ "spawn_posix_spawn", spawn_posix_spawn_program, spawn_peer, false },
	{ "spawn_vfork", spawn_vfork_program, spawn_peer, false },
	{ "spawn_system", spawn_system_program, spawn_peer, false },
	{ "spawn_before_connect_posix_spawn", spawn_before_connect_posix_spawn_program,
	  spawn_before_connect_peer, false },
	{ "spawn_before_connect_vfork", spawn_before_connect_vfork_program,
	  spawn_before_connect_peer, false },
	{ "exit_while_thread_writes", exit_while_thread_writes_program,
	  exit_while_thread_writes_peer, false },
	{ "atexit_writes", atexit_writes_program, exit_handler_peer, false },
	{ "stream_flushed_at_exit", stream_flushed_at_exit_program, stream_flushed_at_exit_peer,
	  false },
	{ "exit_while_a_thread_reads_a_stream", exit_while_a_thread_reads_a_stream_program,
	  exit_handler_peer, false },
	{ "exit_handler_in_library", exit_handler_in_library_program, exit_handler_peer, false },
	{ "urgent_after_exit", urgent_after_exit_program, urgent_after_exit_peer, false },
	{ "reset_after_exit_read_in_exit_handler", reset_after_exit_read_in_exit_handler_program,
	  reset_at_exit_peer, false },
	{ "reset_read_in_exit_handler", reset_read_in_exit_handler_program, peer_reset_peer,
	  false },
	{ "both_client_closes_first", client_closes_first_program, server_reads_to_end_peer, true },
	{ "both_server_closes_first", server_closes_first_program, client_reads_to_end_peer, true },
	{ "no_tcp_fds", no_tcp_fds_program, no_tcp_fds_peer, false },
	{ "urgent_unread", urgent_unread_program, urgent_unread_peer, false },
	{ "async_connect_given_up", async_connect_given_up_program, no_tcp_fds_peer, false },
};

static const struct scenario *find(const char *name)
{
	for (size_t i = 0; i < sizeof(scenarios) / sizeof(scenarios[0]); i++)
		if (!strcmp(scenarios[i].name, name))
			return &scenarios[i];
	return NULL;
}

/* --- the coordinator --- */

static void lo_up(void)
{
	struct ifreq ifr = { .ifr_name = "lo" };
	int s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);

	if (s < 0 || ioctl(s, SIOCGIFFLAGS, &ifr) < 0)
		goto fail;
	ifr.ifr_flags |= IFF_UP;
	if (ioctl(s, SIOCSIFFLAGS, &ifr) < 0)
		goto fail;
	close(s);
	return;
fail:
	fprintf(stderr, PROG ": loopback up: %s\n", strerror(errno));
	exit(2);
}

/* Starts one side with its stdout in out and its end of the control channel. */
static pid_t start_side(const char *role, const struct scenario *s, int out, int ctl)
{
	pid_t pid = fork();

	if (pid == 0) {
		char ctlarg[16], msarg[32];
		char *argv[] = { g.self, (char *)"--role", (char *)role, (char *)"--ctl", ctlarg,
				 (char *)"--defer-ms", msarg, (char *)"--exit-lib",
				 (char *)(g.exit_lib ? g.exit_lib : ""),
				 (char *)s->name, NULL };
		int c = fcntl(ctl, F_DUPFD, 10);	/* without FD_CLOEXEC */

		snprintf(ctlarg, sizeof(ctlarg), "%d", c);
		snprintf(msarg, sizeof(msarg), "%ld", g.defer_ms);
		if (c < 0 || dup2(out, 1) < 0)
			_exit(2);
		if (!strcmp(role, "peer") && !s->both) {
			unsetenv("LD_PRELOAD");
			unsetenv("TWSHIM_OPTIONS");
			unsetenv("TWSHIM_CONFIG");
		}
		execv(g.self, argv);
		_exit(127);
	}
	return pid;
}

/* Waits for pid until deadline (ms, monotonic); kills it after. */
static int reap(pid_t pid, double deadline, bool *timed_out)
{
	int status = 0;

	*timed_out = false;
	while (waitpid(pid, &status, WNOHANG) == 0) {
		if (now_ms() > deadline) {
			*timed_out = true;
			kill(pid, SIGKILL);
			waitpid(pid, &status, 0);
			break;
		}
		sleep_ms(10);
	}
	return status;
}

static void print_side(const char *role, int out, int status, bool timed_out)
{
	char buf[65536];
	ssize_t n = pread(out, buf, sizeof(buf) - 1, 0);
	char *line, *save = NULL;

	buf[n > 0 ? n : 0] = 0;
	for (line = strtok_r(buf, "\n", &save); line; line = strtok_r(NULL, "\n", &save))
		printf("%s: %s\n", role, line);
	if (timed_out)
		printf("%s: still running at the end of the wait, killed\n", role);
	else if (WIFSIGNALED(status))
		printf("%s: killed by SIG%s\n", role, sigabbrev_np(WTERMSIG(status)));
	else
		printf("%s: exit %d\n", role, WEXITSTATUS(status));
}

static int coordinate(const struct scenario *s, bool netns)
{
	int ctl[2], out[2];
	pid_t prog, peer;
	double deadline;
	int sprog, speer;
	bool tprog, tpeer;

	if (netns) {
		if (unshare(CLONE_NEWNET) < 0) {
			fprintf(stderr, PROG ": unshare(CLONE_NEWNET): %s\n", strerror(errno));
			return 2;
		}
		lo_up();
	}
	if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, ctl) < 0)
		return 2;
	out[0] = memfd_create("program", MFD_CLOEXEC);
	out[1] = memfd_create("peer", MFD_CLOEXEC);
	if (out[0] < 0 || out[1] < 0)
		return 2;
	/* the side that listens must be there first: both wait for "port" */
	peer = start_side("peer", s, out[1], ctl[1]);
	prog = start_side("program", s, out[0], ctl[0]);
	close(ctl[0]);
	close(ctl[1]);
	deadline = now_ms() + 4.0 * wait_ms() + 60000;
	sprog = reap(prog, deadline, &tprog);
	speer = reap(peer, deadline, &tpeer);
	print_side("program", out[0], sprog, tprog);
	print_side("peer", out[1], speer, tpeer);
	return 0;
}

static void usage(void)
{
	fprintf(stderr, "Usage: " PROG " [--netns] [--defer-ms MS] [--exit-lib PATH] SCENARIO\n"
			"       " PROG " --list\n");
	exit(2);
}

int main(int argc, char **argv)
{
	const char *role = NULL;
	const struct scenario *s;
	bool netns = false;
	int i;
	ssize_t n = readlink("/proc/self/exe", g.self, sizeof(g.self) - 1);

	if (n <= 0)
		return 2;
	g.self[n] = 0;
	signal(SIGPIPE, SIG_DFL);
	if (argc == 3 && !strcmp(argv[1], "--child"))
		return child_main(atoi(argv[2]));
	if (argc == 3 && !strcmp(argv[1], "--hold")) {
		sleep_ms(atol(argv[2]));
		return 0;
	}
	if (argc == 3 && !strcmp(argv[1], "--exit-writer"))
		return exit_writer_main(atoi(argv[2]));
	for (i = 1; i < argc - 1; i++) {
		if (!strcmp(argv[i], "--netns"))
			netns = true;
		else if (!strcmp(argv[i], "--defer-ms") && i + 1 < argc - 1)
			g.defer_ms = atol(argv[++i]);
		else if (!strcmp(argv[i], "--exit-lib") && i + 1 < argc - 1)
			g.exit_lib = *argv[++i] ? argv[i] : NULL;
		else if (!strcmp(argv[i], "--role") && i + 1 < argc - 1)
			role = argv[++i];
		else if (!strcmp(argv[i], "--ctl") && i + 1 < argc - 1)
			g.ctl = atoi(argv[++i]);
		else
			usage();
	}
	if (argc == 2 && !strcmp(argv[1], "--list")) {
		for (size_t k = 0; k < sizeof(scenarios) / sizeof(scenarios[0]); k++)
			printf("%s\n", scenarios[k].name);
		return 0;
	}
	if (argc < 2 || !(s = find(argv[argc - 1])) || g.defer_ms < 100)
		usage();
	if (!role)
		return coordinate(s, netns);
	if (fcntl(g.ctl, F_SETFD, FD_CLOEXEC) < 0)
		return 2;
	if (!strcmp(role, "program"))
		s->program();
	else
		s->peer();
	return 0;
}
