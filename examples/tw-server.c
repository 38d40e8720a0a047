// SPDX-License-Identifier: MIT
/*
 * tw-server: a small TCP server whose way of ending connections is chosen on
 * the command line, so that the side holding TIME_WAIT can be shown and
 * tested with and without the preload library.
 *
 * For each connection: read a request (a line, or N bytes), write a reply of
 * a chosen size, optionally read N more bytes ("drain", at a chosen pace),
 * then end the connection as asked: close first, wait for the client's EOF
 * and then close, shut down writing first, reset it, or never close it; and
 * release the fd by close(), dup2(), close_range(), fclose() or by exiting.
 *
 * Prints "listening PORT" once it accepts, and a summary line when it exits:
 *   served=N failed=N drained=BYTES first_error=NAME first_error_conn=N
 * Exit status: 0 when no connection failed, 1 otherwise, 2 on a usage error.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <limits.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define PROG		"tw-server"
#define SLICE_MS	50		/* longest sleep between checks of the stop flag */
#define LINE_MAX_BYTES	65536		/* longest request line accepted */
#define MAX_CHILDREN	65536

enum close_mode { CLOSE_FIRST, CLOSE_LAST, CLOSE_SHUTDOWN, CLOSE_RESET, CLOSE_NEVER };
enum end_mode { END_CLOSE, END_DUP2, END_CLOSE_RANGE, END_FCLOSE, END_EXIT };
enum parent_close { PARENT_AT_ONCE, PARENT_BEFORE_CHILD, PARENT_AFTER_CHILD };

static const char *const close_names[] = { "first", "last", "shutdown", "reset", "never" };
static const char *const end_names[] = { "close", "dup2", "close_range", "fclose", "exit" };
static const char *const parent_names[] = { "at-once", "before-child", "after-child" };

/* Error codes beyond errno for the summary. */
#define ERR_EOF		(-1)	/* the peer closed before the exchange was complete */

struct opts {
	struct sockaddr_storage addr;
	socklen_t addrlen;
	long count;		/* connections to serve, 0: until SIGTERM */
	enum close_mode close;
	enum end_mode end;
	bool fork_mode;
	int threads;
	long request_bytes;	/* 0: a line */
	long reply_bytes;
	long drain;
	long slow_chunk;
	int slow_ms;
	int rcvbuf, sndbuf;
	int backlog;
	int close_delay_ms;
	int idle_ms;		/* -1: wait for EOF up to timeout_ms, then it is an error */
	int timeout_ms;
	int exit_delay_ms;
	int parent_close;	/* enum parent_close */
	bool reuseaddr;
	bool verbose;
};

/* Counters shared with forked children (MAP_SHARED). */
struct stats {
	long claimed;		/* connections taken by an accepting thread */
	long served;
	long failed;
	long drained;
	long first_error_conn;	/* 0: none yet */
	int first_error;
	char first_error_op[32];
};

static struct opts o = {
	.count = 0,
	.close = CLOSE_FIRST,
	.end = END_CLOSE,
	.threads = 1,
	.reply_bytes = 64,
	.backlog = 4096,
	.idle_ms = -1,
	.timeout_ms = 5000,
};
static struct stats *st;
static volatile sig_atomic_t stop;
static int listen_fd = -1;
static int null_fd = -1;

static void usage(FILE *f)
{
	fprintf(f,
"Usage: " PROG " [OPTIONS]\n"
"A TCP server that ends its connections the way it is told to.\n"
"\n"
"  -l, --listen ADDR:PORT  address to listen on (default 127.0.0.1:0);\n"
"                          IPv6 as [::1]:8080; port 0 picks one\n"
"  -n, --count N           serve N connections, then exit (default: until SIGTERM)\n"
"      --close MODE        first     close right after replying (default)\n"
"                          last      wait for the client's EOF, then close\n"
"                          shutdown  shutdown(SHUT_WR), wait for EOF, then close\n"
"                          reset     SO_LINGER {1,0}, then close (sends RST)\n"
"                          never     keep the connection open until exit\n"
"      --end HOW           how the fd is released: close (default), dup2 (dup2 of\n"
"                          /dev/null over it), close_range, fclose (fdopen, fclose),\n"
"                          exit (left open: released when the process exits)\n"
"      --fork              inetd style: a child per connection, the parent closes\n"
"                          its copy at once\n"
"      --parent-close WHEN --fork: when the parent closes its copy: at-once (default,\n"
"                          racing the child), before-child (the child starts only\n"
"                          once the parent closed it: the child's close is the\n"
"                          last), after-child (once the child exited: the\n"
"                          parent's close is the last)\n"
"      --threads N         N threads accept and serve (default 1)\n"
"      --request-bytes N   a request is N bytes (default: one line)\n"
"      --reply-bytes N     reply size, the last byte a newline (default 64)\n"
"      --drain N           after replying, read N more bytes\n"
"      --slow-read C:MS    drain C bytes at a time, sleeping MS between reads\n"
"      --rcvbuf N          SO_RCVBUF on the listener (inherited by connections)\n"
"      --sndbuf N          SO_SNDBUF on the listener\n"
"      --backlog N         listen() backlog (default 4096)\n"
"      --close-delay MS    wait MS after replying before ending the connection\n"
"      --idle-ms MS        last/shutdown: wait at most MS for the EOF, then close\n"
"                          anyway (not an error)\n"
"      --timeout MS        bound on every read and write (default 5000)\n"
"      --exit-delay MS     after the last of -n connections, wait MS before exit\n"
"      --reuseaddr         set SO_REUSEADDR on the listener itself\n"
"  -v, --verbose           one line per connection on stdout\n"
"  -h, --help              this text\n"
"\n"
"Prints \"listening PORT\" when ready and, at exit, a summary:\n"
"  served=N failed=N drained=BYTES first_error=NAME first_error_conn=N first_error_op=OP\n"
"Exits 0 when no connection failed, 1 otherwise, 2 on a usage error; SIGTERM\n"
"stops it cleanly.\n");
}

static void __attribute__((format(printf, 1, 2))) die_usage(const char *fmt, ...)
{
	va_list ap;

	fprintf(stderr, PROG ": ");
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fprintf(stderr, "\nTry '" PROG " --help'.\n");
	exit(2);
}

static const char *err_name(int err)
{
	const char *n;

	if (err == ERR_EOF)
		return "EOF";
	if (err == 0)
		return "";
	n = strerrorname_np(err);
	return n ? n : "EUNKNOWN";
}

static long parse_num(const char *s, long min, long max, const char *what)
{
	char *end;
	long v;

	errno = 0;
	v = strtol(s, &end, 10);
	if (errno || end == s || *end || v < min || v > max) {
		fprintf(stderr, PROG ": %s: expected a number from %ld to %ld, got '%s'\n",
			what, min, max, s);
		exit(2);
	}
	return v;
}

static int parse_enum(const char *s, const char *const *names, int n, const char *what)
{
	int i;

	for (i = 0; i < n; i++)
		if (!strcmp(s, names[i]))
			return i;
	fprintf(stderr, PROG ": %s: unknown value '%s'\n", what, s);
	exit(2);
}

/*
 * "1.2.3.4:80" or "[::1]:80" into a sockaddr. Returns 0, or -1 when the text
 * is not such an address.
 */
static int parse_addr(const char *text, struct sockaddr_storage *ss, socklen_t *len)
{
	char host[INET6_ADDRSTRLEN + 1];
	const char *colon, *hs;
	size_t hl;
	long port;
	char *end;

	memset(ss, 0, sizeof(*ss));
	if (text[0] == '[') {
		const char *rb = strchr(text, ']');

		if (!rb || rb[1] != ':')
			return -1;
		hs = text + 1;
		hl = (size_t)(rb - hs);
		colon = rb + 1;
	} else {
		colon = strrchr(text, ':');
		if (!colon)
			return -1;
		hs = text;
		hl = (size_t)(colon - text);
	}
	if (hl == 0 || hl >= sizeof(host))
		return -1;
	memcpy(host, hs, hl);
	host[hl] = '\0';
	errno = 0;
	port = strtol(colon + 1, &end, 10);
	if (errno || end == colon + 1 || *end || port < 0 || port > 65535)
		return -1;
	if (text[0] != '[') {
		struct sockaddr_in *sin = (struct sockaddr_in *)ss;

		if (inet_pton(AF_INET, host, &sin->sin_addr) != 1)
			return -1;
		sin->sin_family = AF_INET;
		sin->sin_port = htons((uint16_t)port);
		*len = sizeof(*sin);
	} else {
		struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)ss;

		if (inet_pton(AF_INET6, host, &sin6->sin6_addr) != 1)
			return -1;
		sin6->sin6_family = AF_INET6;
		sin6->sin6_port = htons((uint16_t)port);
		*len = sizeof(*sin6);
	}
	return 0;
}

static void parse_args(int argc, char **argv)
{
	enum {
		OPT_CLOSE = 256, OPT_END, OPT_FORK, OPT_THREADS, OPT_REQUEST, OPT_REPLY,
		OPT_DRAIN, OPT_SLOW, OPT_RCVBUF, OPT_SNDBUF, OPT_BACKLOG, OPT_CLOSE_DELAY,
		OPT_IDLE, OPT_TIMEOUT, OPT_EXIT_DELAY, OPT_REUSEADDR, OPT_PARENT_CLOSE,
	};
	static const struct option longopts[] = {
		{ "listen", required_argument, NULL, 'l' },
		{ "count", required_argument, NULL, 'n' },
		{ "close", required_argument, NULL, OPT_CLOSE },
		{ "end", required_argument, NULL, OPT_END },
		{ "fork", no_argument, NULL, OPT_FORK },
		{ "parent-close", required_argument, NULL, OPT_PARENT_CLOSE },
		{ "threads", required_argument, NULL, OPT_THREADS },
		{ "request-bytes", required_argument, NULL, OPT_REQUEST },
		{ "reply-bytes", required_argument, NULL, OPT_REPLY },
		{ "drain", required_argument, NULL, OPT_DRAIN },
		{ "slow-read", required_argument, NULL, OPT_SLOW },
		{ "rcvbuf", required_argument, NULL, OPT_RCVBUF },
		{ "sndbuf", required_argument, NULL, OPT_SNDBUF },
		{ "backlog", required_argument, NULL, OPT_BACKLOG },
		{ "close-delay", required_argument, NULL, OPT_CLOSE_DELAY },
		{ "idle-ms", required_argument, NULL, OPT_IDLE },
		{ "timeout", required_argument, NULL, OPT_TIMEOUT },
		{ "exit-delay", required_argument, NULL, OPT_EXIT_DELAY },
		{ "reuseaddr", no_argument, NULL, OPT_REUSEADDR },
		{ "verbose", no_argument, NULL, 'v' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	const char *listen_text = "127.0.0.1:0";
	char *colon;
	int c;

	while ((c = getopt_long(argc, argv, "l:n:vh", longopts, NULL)) != -1) {
		switch (c) {
		case 'l':
			listen_text = optarg;
			break;
		case 'n':
			o.count = parse_num(optarg, 1, LONG_MAX, "--count");
			break;
		case OPT_CLOSE:
			o.close = parse_enum(optarg, close_names, 5, "--close");
			break;
		case OPT_END:
			o.end = parse_enum(optarg, end_names, 5, "--end");
			break;
		case OPT_FORK:
			o.fork_mode = true;
			break;
		case OPT_PARENT_CLOSE:
			o.parent_close = parse_enum(optarg, parent_names, 3, "--parent-close");
			break;
		case OPT_THREADS:
			o.threads = (int)parse_num(optarg, 1, 1024, "--threads");
			break;
		case OPT_REQUEST:
			o.request_bytes = parse_num(optarg, 1, LONG_MAX, "--request-bytes");
			break;
		case OPT_REPLY:
			o.reply_bytes = parse_num(optarg, 1, LONG_MAX, "--reply-bytes");
			break;
		case OPT_DRAIN:
			o.drain = parse_num(optarg, 0, LONG_MAX, "--drain");
			break;
		case OPT_SLOW:
			colon = strchr(optarg, ':');
			if (!colon)
				die_usage("--slow-read: expected CHUNK:MS, got '%s'", optarg);
			*colon = '\0';
			o.slow_chunk = parse_num(optarg, 1, 1 << 30, "--slow-read chunk");
			o.slow_ms = (int)parse_num(colon + 1, 0, 60000, "--slow-read ms");
			break;
		case OPT_RCVBUF:
			o.rcvbuf = (int)parse_num(optarg, 1, INT_MAX, "--rcvbuf");
			break;
		case OPT_SNDBUF:
			o.sndbuf = (int)parse_num(optarg, 1, INT_MAX, "--sndbuf");
			break;
		case OPT_BACKLOG:
			o.backlog = (int)parse_num(optarg, 1, INT_MAX, "--backlog");
			break;
		case OPT_CLOSE_DELAY:
			o.close_delay_ms = (int)parse_num(optarg, 0, 600000, "--close-delay");
			break;
		case OPT_IDLE:
			o.idle_ms = (int)parse_num(optarg, 0, 600000, "--idle-ms");
			break;
		case OPT_TIMEOUT:
			o.timeout_ms = (int)parse_num(optarg, 1, 600000, "--timeout");
			break;
		case OPT_EXIT_DELAY:
			o.exit_delay_ms = (int)parse_num(optarg, 0, 600000, "--exit-delay");
			break;
		case OPT_REUSEADDR:
			o.reuseaddr = true;
			break;
		case 'v':
			o.verbose = true;
			break;
		case 'h':
			usage(stdout);
			exit(0);
		default:
			fprintf(stderr, "Try '" PROG " --help'.\n");
			exit(2);
		}
	}
	if (optind < argc)
		die_usage("unexpected argument '%s'", argv[optind]);
	if (parse_addr(listen_text, &o.addr, &o.addrlen) < 0)
		die_usage("--listen: expected ADDR:PORT such as 127.0.0.1:8080 or [::1]:8080, "
			  "got '%s'", listen_text);
	if (o.fork_mode && o.threads > 1)
		die_usage("%s", "--fork and --threads cannot be combined");
	if (o.parent_close && !o.fork_mode)
		die_usage("%s", "--parent-close needs --fork");
}

static long now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Sleeps ms, in slices, returning early when asked to stop. */
static void sleep_ms(int ms)
{
	long deadline = now_ms() + ms;
	long left;

	while (!stop && (left = deadline - now_ms()) > 0) {
		struct timespec ts = { 0, (left > SLICE_MS ? SLICE_MS : left) * 1000000L };

		nanosleep(&ts, NULL);
	}
}

/*
 * Waits until fd is ready for events or timeout_ms passes. Returns 0 when
 * ready, -ETIMEDOUT, -ECANCELED when asked to stop, or -errno.
 */
static int wait_fd(int fd, short events, int timeout_ms)
{
	long deadline = now_ms() + timeout_ms;

	for (;;) {
		struct pollfd p = { .fd = fd, .events = events };
		long left = deadline - now_ms();
		int n;

		if (stop)
			return -ECANCELED;
		if (left <= 0)
			return -ETIMEDOUT;
		n = poll(&p, 1, (int)(left > SLICE_MS ? SLICE_MS : left));
		if (n > 0)
			return 0;
		if (n < 0 && errno != EINTR)
			return -errno;
	}
}

/* One read with a timeout: bytes read, 0 at EOF, or -errno. */
static ssize_t read_some(int fd, char *buf, size_t len, int timeout_ms)
{
	for (;;) {
		ssize_t n = read(fd, buf, len);
		int ret;

		if (n >= 0)
			return n;
		if (errno == EINTR)
			continue;
		if (errno != EAGAIN)
			return -errno;
		ret = wait_fd(fd, POLLIN, timeout_ms);
		if (ret < 0)
			return ret;
	}
}

/* Writes all of buf within timeout_ms per step; 0 or -errno. */
static int write_all(int fd, const char *buf, size_t len, int timeout_ms)
{
	while (len) {
		ssize_t n = send(fd, buf, len, MSG_NOSIGNAL);
		int ret;

		if (n > 0) {
			buf += n;
			len -= (size_t)n;
			continue;
		}
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && errno != EAGAIN)
			return -errno;
		ret = wait_fd(fd, POLLOUT, timeout_ms);
		if (ret < 0)
			return ret;
	}
	return 0;
}

static void note_error(long conn, const char *op, int err)
{
	long zero = 0;

	__atomic_add_fetch(&st->failed, 1, __ATOMIC_SEQ_CST);
	if (__atomic_compare_exchange_n(&st->first_error_conn, &zero, conn, false,
					__ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST)) {
		st->first_error = err;
		snprintf(st->first_error_op, sizeof(st->first_error_op), "%s", op);
		fprintf(stderr, PROG ": connection %ld: %s: %s (%s)\n", conn, op, err_name(err),
			err == ERR_EOF ? "peer closed early" : strerror(err));
	}
}

/* Reads the request: one line, or request_bytes bytes. 0 or an error code. */
static int read_request(int fd)
{
	static __thread char buf[16384];
	long got = 0;

	for (;;) {
		size_t want = sizeof(buf);
		ssize_t n;

		if (o.request_bytes && (long)want > o.request_bytes - got)
			want = (size_t)(o.request_bytes - got);
		n = read_some(fd, buf, want, o.timeout_ms);
		if (n < 0)
			return (int)-n;
		if (n == 0)
			return ERR_EOF;
		got += n;
		if (o.request_bytes ? got >= o.request_bytes : memchr(buf, '\n', (size_t)n) != NULL)
			return 0;
		if (!o.request_bytes && got > LINE_MAX_BYTES)
			return EMSGSIZE;
	}
}

static int write_reply(int fd)
{
	static __thread char buf[16384];
	long left = o.reply_bytes;

	memset(buf, 'r', sizeof(buf));
	while (left > 0) {
		size_t n = left > (long)sizeof(buf) ? sizeof(buf) : (size_t)left;
		int ret;

		if ((long)n == left)
			buf[n - 1] = '\n';
		ret = write_all(fd, buf, n, o.timeout_ms);
		buf[n - 1] = 'r';
		if (ret < 0)
			return -ret;
		left -= (long)n;
	}
	return 0;
}

/* Reads o.drain bytes, at the --slow-read pace. Returns 0 or an error code. */
static int drain(int fd, long *got)
{
	static __thread char buf[65536];

	*got = 0;
	while (*got < o.drain) {
		size_t want = sizeof(buf);
		ssize_t n;

		if (o.slow_chunk && (long)want > o.slow_chunk)
			want = (size_t)o.slow_chunk;
		if ((long)want > o.drain - *got)
			want = (size_t)(o.drain - *got);
		n = read_some(fd, buf, want, o.timeout_ms);
		if (n < 0)
			return (int)-n;
		if (n == 0)
			return ERR_EOF;
		*got += n;
		if (o.slow_ms && *got < o.drain)
			sleep_ms(o.slow_ms);
	}
	return 0;
}

/*
 * Reads and discards until the peer's EOF. With --idle-ms, giving up after
 * that long is not an error. Returns 0 or an error code.
 */
static int wait_eof(int fd)
{
	static __thread char buf[16384];
	int limit = o.idle_ms >= 0 ? o.idle_ms : o.timeout_ms;
	long deadline = now_ms() + limit;

	for (;;) {
		long left = deadline - now_ms();
		ssize_t n;

		if (left <= 0)
			return o.idle_ms >= 0 ? 0 : ETIMEDOUT;
		n = read_some(fd, buf, sizeof(buf), (int)left);
		if (n == 0)
			return 0;
		if (n == -ETIMEDOUT && o.idle_ms >= 0)
			return 0;
		if (n < 0)
			return (int)-n;
	}
}

/*
 * Releases fd the way --end says. END_EXIT leaves it open: it goes when the
 * process exits. Returns 0 or an error code.
 */
static int release(int fd)
{
	FILE *f;

	switch (o.end) {
	case END_CLOSE:
		return close(fd) < 0 ? errno : 0;
	case END_DUP2:
		/* the way daemons point a descriptor at /dev/null */
		if (dup2(null_fd, fd) < 0)
			return errno;
		return close(fd) < 0 ? errno : 0;
	case END_CLOSE_RANGE:
		return close_range((unsigned)fd, (unsigned)fd, 0) < 0 ? errno : 0;
	case END_FCLOSE:
		f = fdopen(fd, "r+");
		if (!f)
			return errno;
		return fclose(f) == EOF ? errno : 0;
	case END_EXIT:
		return 0;
	}
	return 0;
}

/* Serves one accepted connection and ends it. */
static void serve(int fd, long conn)
{
	const char *op = "read";
	long drained = 0;
	int err, rerr;

	err = read_request(fd);
	if (!err) {
		op = "write";
		err = write_reply(fd);
	}
	if (!err && o.drain) {
		op = "drain";
		err = drain(fd, &drained);
		__atomic_add_fetch(&st->drained, drained, __ATOMIC_SEQ_CST);
	}
	if (!err && o.close_delay_ms)
		sleep_ms(o.close_delay_ms);
	if (!err) {
		op = "end";
		switch (o.close) {
		case CLOSE_FIRST:
		case CLOSE_NEVER:
			break;
		case CLOSE_LAST:
			err = wait_eof(fd);
			break;
		case CLOSE_SHUTDOWN:
			if (shutdown(fd, SHUT_WR) < 0)
				err = errno;
			else
				err = wait_eof(fd);
			break;
		case CLOSE_RESET: {
			struct linger lg = { .l_onoff = 1, .l_linger = 0 };

			if (setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg)) < 0)
				err = errno;
			break;
		}
		}
	}
	if (err == ECANCELED)
		err = 0;	/* asked to stop: not the connection's fault */
	rerr = o.close == CLOSE_NEVER ? 0 : release(fd);
	if (err)
		note_error(conn, op, err);
	else if (rerr)
		note_error(conn, "release", rerr);
	else
		__atomic_add_fetch(&st->served, 1, __ATOMIC_SEQ_CST);
	if (o.verbose)
		printf("conn %ld %s drained=%ld\n", conn, err || rerr ? "failed" : "ok", drained);
}

/*
 * Accepts one connection, waiting in slices so that SIGTERM is seen. Returns
 * the fd, or -1 when asked to stop.
 */
static int accept_one(void)
{
	for (;;) {
		int fd, ret;

		if (stop)
			return -1;
		fd = accept4(listen_fd, NULL, NULL, SOCK_CLOEXEC);
		if (fd >= 0) {
			/* the connection does not inherit O_NONBLOCK from the listener */
			fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
			return fd;
		}
		if (errno == EINTR || errno == ECONNABORTED)
			continue;
		if (errno != EAGAIN) {
			fprintf(stderr, PROG ": accept: %s (%s)\n", err_name(errno),
				strerror(errno));
			sleep_ms(SLICE_MS);
			continue;
		}
		ret = wait_fd(listen_fd, POLLIN, 3600 * 1000);
		if (ret == -ECANCELED)
			return -1;
	}
}

/* Claims the next connection number; 0 when -n connections were claimed. */
static long claim(void)
{
	long n = __atomic_add_fetch(&st->claimed, 1, __ATOMIC_SEQ_CST);

	if (o.count && n > o.count) {
		__atomic_sub_fetch(&st->claimed, 1, __ATOMIC_SEQ_CST);
		return 0;
	}
	return n;
}

static void *worker(void *arg)
{
	long conn;

	(void)arg;
	while (!stop && (conn = claim()) > 0) {
		int fd = accept_one();

		if (fd < 0)
			break;
		serve(fd, conn);
	}
	return NULL;
}

static pid_t children[MAX_CHILDREN];
static size_t nchildren;

/* Forgets the children that exited (all of them, waiting, when block is set). */
static void reap(bool block)
{
	size_t i = 0;

	while (i < nchildren) {
		int status;
		pid_t r = waitpid(children[i], &status, block ? 0 : WNOHANG);

		if (r == children[i] || (r < 0 && errno == ECHILD)) {
			if (r > 0 && WIFSIGNALED(status))
				fprintf(stderr, PROG ": child %d killed by signal %d\n",
					(int)r, WTERMSIG(status));
			children[i] = children[--nchildren];
			continue;
		}
		i++;
	}
}

/*
 * Waits for the children to finish; after SIGTERM passes it on to them.
 * Bounded: after the timeout they are killed.
 */
static void wait_children(void)
{
	long deadline = 0;
	size_t i;

	while (nchildren) {
		reap(false);
		if (!nchildren)
			break;
		if (stop && !deadline) {
			for (i = 0; i < nchildren; i++)
				kill(children[i], SIGTERM);
			deadline = now_ms() + o.timeout_ms + 2000;
		}
		if (deadline && now_ms() > deadline) {
			for (i = 0; i < nchildren; i++)
				kill(children[i], SIGKILL);
			reap(true);
			break;
		}
		{
			struct timespec ts = { 0, 10 * 1000000L };

			nanosleep(&ts, NULL);
		}
	}
}

/* Waits for one child to exit (bounded), and forgets it. */
static void wait_child(pid_t pid)
{
	long deadline = now_ms() + o.timeout_ms + 2000;
	size_t i;
	int status;

	while (waitpid(pid, &status, WNOHANG) == 0) {
		if (now_ms() > deadline) {
			kill(pid, SIGKILL);
			waitpid(pid, &status, 0);
			break;
		}
		sleep_ms(1);
	}
	for (i = 0; i < nchildren; i++)
		if (children[i] == pid)
			children[i] = children[--nchildren];
}

/*
 * inetd style: the parent accepts and forks; the child serves and exits;
 * the parent closes its copy, which must not end the connection while the
 * child holds it. --parent-close orders the two closes when a test needs
 * to know which one is the last; a pipe tells the child that the parent's
 * copy is gone.
 */
static void fork_loop(void)
{
	long conn;

	while (!stop && (conn = claim()) > 0) {
		int fd = accept_one(), sync[2] = { -1, -1 };
		pid_t pid;

		if (fd < 0)
			break;
		reap(false);
		if (o.parent_close == PARENT_BEFORE_CHILD && pipe2(sync, O_CLOEXEC) < 0) {
			note_error(conn, "pipe", errno);
			close(fd);
			continue;
		}
		fflush(stdout);
		fflush(stderr);
		pid = fork();
		if (pid < 0) {
			note_error(conn, "fork", errno);
			close(fd);
			continue;
		}
		if (pid == 0) {
			close(listen_fd);
			if (sync[0] >= 0) {
				char c;

				close(sync[1]);
				/* EOF once the parent closed its copy and the pipe */
				if (wait_fd(sync[0], POLLIN, o.timeout_ms) == 0)
					while (read(sync[0], &c, 1) < 0 && errno == EINTR)
						;
				close(sync[0]);
			}
			serve(fd, conn);
			if (o.close == CLOSE_NEVER)
				while (!stop)
					sleep_ms(SLICE_MS * 4);
			fflush(stdout);
			exit(0);
		}
		if (nchildren < MAX_CHILDREN)
			children[nchildren++] = pid;
		if (o.parent_close == PARENT_AFTER_CHILD)
			wait_child(pid);
		close(fd);
		if (sync[0] >= 0) {
			close(sync[1]);
			close(sync[0]);
		}
	}
	wait_children();
}

static void on_stop(int sig)
{
	(void)sig;
	stop = 1;
}

static int setup_listener(void)
{
	struct sockaddr_storage bound;
	socklen_t blen = sizeof(bound);
	int one = 1, port;

	listen_fd = socket(o.addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (listen_fd < 0) {
		fprintf(stderr, PROG ": socket: %s (%s)\n", err_name(errno), strerror(errno));
		return -1;
	}
	if (o.reuseaddr)
		setsockopt(listen_fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (o.addr.ss_family == AF_INET6)
		setsockopt(listen_fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one));
	if (o.rcvbuf && setsockopt(listen_fd, SOL_SOCKET, SO_RCVBUF, &o.rcvbuf,
				   sizeof(o.rcvbuf)) < 0)
		fprintf(stderr, PROG ": SO_RCVBUF: %s\n", strerror(errno));
	if (o.sndbuf && setsockopt(listen_fd, SOL_SOCKET, SO_SNDBUF, &o.sndbuf,
				   sizeof(o.sndbuf)) < 0)
		fprintf(stderr, PROG ": SO_SNDBUF: %s\n", strerror(errno));
	if (bind(listen_fd, (struct sockaddr *)&o.addr, o.addrlen) < 0) {
		fprintf(stderr, PROG ": bind: %s (%s)\n", err_name(errno), strerror(errno));
		return -1;
	}
	if (listen(listen_fd, o.backlog) < 0) {
		fprintf(stderr, PROG ": listen: %s (%s)\n", err_name(errno), strerror(errno));
		return -1;
	}
	if (getsockname(listen_fd, (struct sockaddr *)&bound, &blen) < 0) {
		fprintf(stderr, PROG ": getsockname: %s\n", strerror(errno));
		return -1;
	}
	port = ntohs(bound.ss_family == AF_INET ? ((struct sockaddr_in *)&bound)->sin_port :
		     ((struct sockaddr_in6 *)&bound)->sin6_port);
	return port;
}

int main(int argc, char **argv)
{
	struct sigaction sa = { .sa_handler = on_stop };
	pthread_t *tids = NULL;
	int port, i;

	parse_args(argc, argv);
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGINT, &sa, NULL);
	signal(SIGPIPE, SIG_IGN);

	st = mmap(NULL, sizeof(*st), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (st == MAP_FAILED) {
		perror(PROG ": mmap");
		return 1;
	}
	memset(st, 0, sizeof(*st));
	null_fd = open("/dev/null", O_RDWR | O_CLOEXEC);
	if (null_fd < 0) {
		perror(PROG ": /dev/null");
		return 1;
	}
	port = setup_listener();
	if (port < 0)
		return 1;
	printf("listening %d\n", port);
	fflush(stdout);

	if (o.fork_mode) {
		fork_loop();
	} else if (o.threads > 1) {
		tids = calloc((size_t)o.threads, sizeof(*tids));
		if (!tids) {
			perror(PROG ": calloc");
			return 1;
		}
		for (i = 0; i < o.threads; i++) {
			int ret = pthread_create(&tids[i], NULL, worker, NULL);

			if (ret) {
				fprintf(stderr, PROG ": pthread_create: %s\n", strerror(ret));
				return 1;
			}
		}
		for (i = 0; i < o.threads; i++)
			pthread_join(tids[i], NULL);
		free(tids);
	} else {
		worker(NULL);
	}

	if (!stop && o.exit_delay_ms)
		sleep_ms(o.exit_delay_ms);
	/* held connections (--close never, --end exit) stay open through exit() */
	printf("served=%ld failed=%ld drained=%ld first_error=%s first_error_conn=%ld "
	       "first_error_op=%s\n", st->served, st->failed, st->drained,
	       err_name(st->first_error), st->first_error_conn, st->first_error_op);
	fflush(stdout);
	return st->failed ? 1 : 0;
}
