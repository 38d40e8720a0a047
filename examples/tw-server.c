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
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "common.h"

#define PROG		"tw-server"
#define LINE_MAX_BYTES	65536		/* longest request line accepted */
#define MAX_CHILDREN	65536

enum parent_close { PARENT_AT_ONCE, PARENT_BEFORE_CHILD, PARENT_AFTER_CHILD };

static const char *const parent_names[] = { "at-once", "before-child", "after-child" };

const struct prog prog = { .name = PROG, .hint_bad_value = false };

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
	long drained;
	struct failures fail;
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
			o.close = parse_enum(optarg, close_names, ARRAY_SIZE(close_names),
					     "--close");
			break;
		case OPT_END:
			o.end = parse_enum(optarg, end_names, ARRAY_SIZE(end_names), "--end");
			break;
		case OPT_FORK:
			o.fork_mode = true;
			break;
		case OPT_PARENT_CLOSE:
			o.parent_close = parse_enum(optarg, parent_names, ARRAY_SIZE(parent_names),
						    "--parent-close");
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
	if (parse_addr(listen_text, 0, &o.addr, &o.addrlen) < 0)
		die_usage("--listen: expected ADDR:PORT such as 127.0.0.1:8080 or [::1]:8080, "
			  "got '%s'", listen_text);
	if (o.fork_mode && o.threads > 1)
		die_usage("%s", "--fork and --threads cannot be combined");
	if (o.parent_close && !o.fork_mode)
		die_usage("%s", "--parent-close needs --fork");
}

static void note_error(long conn, const char *op, int err)
{
	note_failure(&st->fail, conn, op, err, "peer closed early");
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
		n = read_some(fd, buf, want, o.timeout_ms, IO_STOPPABLE);
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
		n = read_some(fd, buf, want, o.timeout_ms, IO_STOPPABLE);
		if (n < 0)
			return (int)-n;
		if (n == 0)
			return ERR_EOF;
		*got += n;
		if (o.slow_ms && *got < o.drain)
			sleep_ms(o.slow_ms, IO_STOPPABLE);
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
		err = write_fill(fd, o.reply_bytes, 'r', true, o.timeout_ms, IO_STOPPABLE);
	}
	if (!err && o.drain) {
		op = "drain";
		err = drain(fd, &drained);
		__atomic_add_fetch(&st->drained, drained, __ATOMIC_SEQ_CST);
	}
	if (!err && o.close_delay_ms)
		sleep_ms(o.close_delay_ms, IO_STOPPABLE);
	if (!err) {
		op = "end";
		err = end_conn(fd, o.close, o.idle_ms, o.timeout_ms, IO_STOPPABLE);
	}
	if (err == ECANCELED)
		err = 0;	/* asked to stop: not the connection's fault */
	rerr = o.close == CLOSE_NEVER ? 0 : release_fd(fd, o.end, null_fd);
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
			sleep_ms(SLICE_MS, IO_STOPPABLE);
			continue;
		}
		ret = wait_fd(listen_fd, POLLIN, 3600 * 1000, IO_STOPPABLE);
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
		/* not cut short by stop: this is the wait that follows it */
		sleep_ms(10, 0);
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
		sleep_ms(1, IO_STOPPABLE);
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
				if (wait_fd(sync[0], POLLIN, o.timeout_ms, IO_STOPPABLE) == 0)
					while (read(sync[0], &c, 1) < 0 && errno == EINTR)
						;
				close(sync[0]);
			}
			serve(fd, conn);
			if (o.close == CLOSE_NEVER)
				while (!stop)
					sleep_ms(SLICE_MS * 4, IO_STOPPABLE);
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
	int port;

	parse_args(argc, argv);
	stop_on_signals();

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

	if (o.fork_mode)
		fork_loop();
	else if (run_threads(o.threads, worker) < 0)
		return 1;

	if (!stop && o.exit_delay_ms)
		sleep_ms(o.exit_delay_ms, IO_STOPPABLE);
	/* held connections (--close never, --end exit) stay open through exit() */
	printf("served=%ld failed=%ld drained=%ld first_error=%s first_error_conn=%ld "
	       "first_error_op=%s\n", st->served, st->fail.count, st->drained,
	       err_name(st->fail.first_err), st->fail.first_conn, st->fail.first_op);
	fflush(stdout);
	return st->fail.count ? 1 : 0;
}
