// SPDX-License-Identifier: MIT
/*
 * tw-client: makes many short TCP connections to one server and ends each
 * one the way the command line says, so that port exhaustion by client-side
 * TIME_WAIT (EADDRNOTAVAIL) can be shown and tested with and without the
 * preload library.
 *
 * For each connection: connect, send a request line, read the reply line,
 * optionally write N more bytes, then end it: close first, wait for the
 * server's EOF and then close, shut down writing first, reset it, or keep it
 * open; and release the fd by close(), dup2(), close_range(), fclose() or by
 * exiting with it open. Every connect, read and write is bounded by poll().
 *
 * Prints a summary line at the end:
 *   ok=N failed=N first_error=NAME first_error_conn=N first_error_op=OP
 * Exit status: 0 when every connection succeeded, 1 otherwise, 2 on a usage
 * error.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "common.h"

#define PROG		"tw-client"
#define MAX_HELD	65536	/* connections kept open at once (--close never, --end exit) */

enum close_all { ALL_NONE, ALL_CLOSE_RANGE, ALL_CLOSEFROM };

static const char *const all_names[] = { "none", "close_range", "closefrom" };

const struct prog prog = { .name = PROG, .hint_bad_value = true };

struct opts {
	struct sockaddr_storage addr;
	socklen_t addrlen;
	long count;
	int threads;
	enum close_mode close;
	enum end_mode end;
	enum close_all close_all;
	long request_bytes;
	bool no_reply;
	long write_bytes;
	int sndbuf, rcvbuf;
	int idle_ms;
	int timeout_ms;
	int interval_ms;
	unsigned io_flags;	/* IO_BLOCKING with --blocking */
	bool dup;
	bool stop_on_error;
	bool report_fds;
	int sleep_end_ms;
	long fork_after;
	int child_ms;
	bool verbose;
};

static struct opts o = {
	.count = 1,
	.threads = 1,
	.close = CLOSE_FIRST,
	.end = END_CLOSE,
	.request_bytes = 4,
	.idle_ms = -1,
	.timeout_ms = 5000,
};

static long next_conn;		/* connection numbers, from 1, in the order they start */
static long n_ok;
static struct failures fails;
static int null_fd = -1;

static pthread_mutex_t held_lock = PTHREAD_MUTEX_INITIALIZER;
static int held[MAX_HELD];
static size_t nheld;

static void usage(FILE *f)
{
	fprintf(f,
"Usage: " PROG " [OPTIONS] ADDR:PORT\n"
"Makes short TCP connections and ends them the way it is told to.\n"
"\n"
"  -n, --count N           connections to make, one after the other (default 1)\n"
"      --threads N         N threads, each making -n connections (default 1)\n"
"      --close MODE        first     close right after the reply (default)\n"
"                          last      wait for the server's EOF, then close\n"
"                          shutdown  shutdown(SHUT_WR), wait for EOF, then close\n"
"                          reset     SO_LINGER {1,0}, then close (sends RST)\n"
"                          never     keep every connection open until exit\n"
"      --end HOW           how the fd is released: close (default), dup2 (dup2 of\n"
"                          /dev/null over it), close_range, fclose (fdopen, fclose),\n"
"                          exit (left open: released when the process exits)\n"
"      --close-all HOW     at the end, close every fd from 3 up with close_range\n"
"                          or closefrom (the way daemons clean up)\n"
"      --request-bytes N   request size, the last byte a newline (default 4)\n"
"      --no-reply          do not wait for the reply\n"
"      --write-bytes N     after the reply, write N bytes right before ending\n"
"      --sndbuf N          SO_SNDBUF on each socket\n"
"      --rcvbuf N          SO_RCVBUF on each socket\n"
"      --idle-ms MS        last/shutdown: wait at most MS for the EOF, then close\n"
"                          anyway (not an error)\n"
"      --timeout MS        bound on connect and on every read and write (default 5000)\n"
"      --interval-ms MS    pause between connections\n"
"      --blocking          blocking socket after connect (SO_RCVTIMEO/SO_SNDTIMEO\n"
"                          bound the I/O) instead of non-blocking with poll()\n"
"      --dup               right after connect, dup() the socket and close the\n"
"                          original: the connection goes on through the copy\n"
"      --stop-on-error     stop at the first failed connection\n"
"      --report-fds        print the fd count at start and at the end:\n"
"                          fds_start=N fds_end=N sockets_start=N sockets_end=N\n"
"      --sleep-end MS      wait MS before the final fd count and exit\n"
"      --fork-after K      after connection K, fork a child that waits --child-ms,\n"
"                          prints child_fds=N child_sockets=N and exits\n"
"      --child-ms MS       how long that child lives (default 500)\n"
"  -v, --verbose           one line per connection\n"
"  -h, --help              this text\n"
"\n"
"ADDR:PORT is 127.0.0.1:8080 or [::1]:8080. The summary at the end is\n"
"  ok=N failed=N first_error=NAME first_error_conn=N first_error_op=OP\n"
"where NAME is an errno name such as EADDRNOTAVAIL, or EOF. Exits 0 when every\n"
"connection succeeded, 1 otherwise, 2 on a usage error.\n");
}

static void parse_args(int argc, char **argv)
{
	enum {
		OPT_THREADS = 256, OPT_CLOSE, OPT_END, OPT_CLOSE_ALL, OPT_REQUEST, OPT_NO_REPLY,
		OPT_WRITE, OPT_SNDBUF, OPT_RCVBUF, OPT_IDLE, OPT_TIMEOUT, OPT_INTERVAL,
		OPT_BLOCKING, OPT_STOP, OPT_REPORT_FDS, OPT_SLEEP_END, OPT_FORK_AFTER,
		OPT_CHILD_MS, OPT_DUP,
	};
	static const struct option longopts[] = {
		{ "count", required_argument, NULL, 'n' },
		{ "threads", required_argument, NULL, OPT_THREADS },
		{ "close", required_argument, NULL, OPT_CLOSE },
		{ "end", required_argument, NULL, OPT_END },
		{ "close-all", required_argument, NULL, OPT_CLOSE_ALL },
		{ "request-bytes", required_argument, NULL, OPT_REQUEST },
		{ "no-reply", no_argument, NULL, OPT_NO_REPLY },
		{ "write-bytes", required_argument, NULL, OPT_WRITE },
		{ "sndbuf", required_argument, NULL, OPT_SNDBUF },
		{ "rcvbuf", required_argument, NULL, OPT_RCVBUF },
		{ "idle-ms", required_argument, NULL, OPT_IDLE },
		{ "timeout", required_argument, NULL, OPT_TIMEOUT },
		{ "interval-ms", required_argument, NULL, OPT_INTERVAL },
		{ "blocking", no_argument, NULL, OPT_BLOCKING },
		{ "dup", no_argument, NULL, OPT_DUP },
		{ "stop-on-error", no_argument, NULL, OPT_STOP },
		{ "report-fds", no_argument, NULL, OPT_REPORT_FDS },
		{ "sleep-end", required_argument, NULL, OPT_SLEEP_END },
		{ "fork-after", required_argument, NULL, OPT_FORK_AFTER },
		{ "child-ms", required_argument, NULL, OPT_CHILD_MS },
		{ "verbose", no_argument, NULL, 'v' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	int c;

	o.child_ms = 500;
	while ((c = getopt_long(argc, argv, "n:vh", longopts, NULL)) != -1) {
		switch (c) {
		case 'n':
			o.count = parse_num(optarg, 0, LONG_MAX, "--count");
			break;
		case OPT_THREADS:
			o.threads = (int)parse_num(optarg, 1, 1024, "--threads");
			break;
		case OPT_CLOSE:
			o.close = parse_enum(optarg, close_names, ARRAY_SIZE(close_names),
					     "--close");
			break;
		case OPT_END:
			o.end = parse_enum(optarg, end_names, ARRAY_SIZE(end_names), "--end");
			break;
		case OPT_CLOSE_ALL:
			o.close_all = parse_enum(optarg, all_names, ARRAY_SIZE(all_names),
						 "--close-all");
			break;
		case OPT_REQUEST:
			o.request_bytes = parse_num(optarg, 1, LONG_MAX, "--request-bytes");
			break;
		case OPT_NO_REPLY:
			o.no_reply = true;
			break;
		case OPT_WRITE:
			o.write_bytes = parse_num(optarg, 0, LONG_MAX, "--write-bytes");
			break;
		case OPT_SNDBUF:
			o.sndbuf = (int)parse_num(optarg, 1, INT_MAX, "--sndbuf");
			break;
		case OPT_RCVBUF:
			o.rcvbuf = (int)parse_num(optarg, 1, INT_MAX, "--rcvbuf");
			break;
		case OPT_IDLE:
			o.idle_ms = (int)parse_num(optarg, 0, 600000, "--idle-ms");
			break;
		case OPT_TIMEOUT:
			o.timeout_ms = (int)parse_num(optarg, 1, 600000, "--timeout");
			break;
		case OPT_INTERVAL:
			o.interval_ms = (int)parse_num(optarg, 0, 600000, "--interval-ms");
			break;
		case OPT_BLOCKING:
			o.io_flags |= IO_BLOCKING;
			break;
		case OPT_DUP:
			o.dup = true;
			break;
		case OPT_STOP:
			o.stop_on_error = true;
			break;
		case OPT_REPORT_FDS:
			o.report_fds = true;
			break;
		case OPT_SLEEP_END:
			o.sleep_end_ms = (int)parse_num(optarg, 0, 600000, "--sleep-end");
			break;
		case OPT_FORK_AFTER:
			o.fork_after = parse_num(optarg, 1, LONG_MAX, "--fork-after");
			break;
		case OPT_CHILD_MS:
			o.child_ms = (int)parse_num(optarg, 0, 600000, "--child-ms");
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
	if (optind != argc - 1)
		die_usage("%s", optind >= argc ? "missing ADDR:PORT" : "more than one ADDR:PORT");
	if (parse_addr(argv[optind], 1, &o.addr, &o.addrlen) < 0)
		die_usage("expected ADDR:PORT such as 127.0.0.1:8080 or [::1]:8080, got '%s'",
			  argv[optind]);
	if (o.fork_after && o.threads > 1)
		die_usage("%s", "--fork-after needs a single thread");
}

/*
 * Connects within the timeout: a non-blocking connect and poll(), as most
 * event-driven programs do it. Returns the fd or -errno.
 */
static int connect_one(void)
{
	struct timeval tv = { o.timeout_ms / 1000, (o.timeout_ms % 1000) * 1000 };
	socklen_t elen = sizeof(int);
	int fd, err = 0, ret;

	fd = socket(o.addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	if (o.sndbuf)
		setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &o.sndbuf, sizeof(o.sndbuf));
	if (o.rcvbuf)
		setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &o.rcvbuf, sizeof(o.rcvbuf));
	if (connect(fd, (struct sockaddr *)&o.addr, o.addrlen) < 0) {
		if (errno != EINPROGRESS) {
			err = errno;
			goto fail;
		}
		ret = wait_fd(fd, POLLOUT, o.timeout_ms, o.io_flags);
		if (ret < 0) {
			err = -ret;
			goto fail;
		}
		if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &elen) < 0)
			err = errno;
		if (err)
			goto fail;
	}
	if (o.dup) {
		/* the copy shares the open file: closing the original must not end it */
		int copy = dup(fd);

		if (copy < 0) {
			err = errno;
			goto fail;
		}
		close(fd);
		fd = copy;
	}
	if (o.io_flags & IO_BLOCKING) {
		fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK);
		setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
		setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
	}
	return fd;
fail:
	close(fd);
	return -err;
}

/* Reads up to and including the reply's newline; 0 or an error code. */
static int read_reply(int fd)
{
	char buf[16384];

	for (;;) {
		ssize_t n = read_some(fd, buf, sizeof(buf), o.timeout_ms, o.io_flags);

		if (n < 0)
			return (int)-n;
		if (n == 0)
			return ERR_EOF;
		if (memchr(buf, '\n', (size_t)n))
			return 0;
	}
}

static void hold(int fd)
{
	pthread_mutex_lock(&held_lock);
	if (nheld < MAX_HELD)
		held[nheld++] = fd;
	pthread_mutex_unlock(&held_lock);
}

static void note_error(long conn, const char *op, int err)
{
	note_failure(&fails, conn, op, err, "server closed early");
	if (o.verbose)
		printf("conn %ld failed %s %s\n", conn, op, err_name(err));
}

/* One connection from connect to its end. Returns 0 or an error code. */
static int one_connection(long conn)
{
	const char *op = "connect";
	int fd, err = 0, rerr;

	fd = connect_one();
	if (fd < 0) {
		note_error(conn, op, -fd);
		return -fd;
	}
	op = "write";
	err = write_fill(fd, o.request_bytes, 'q', true, o.timeout_ms, o.io_flags);
	if (!err && !o.no_reply) {
		op = "read";
		err = read_reply(fd);
	}
	if (!err && o.write_bytes) {
		op = "write-bytes";
		err = write_fill(fd, o.write_bytes, 'd', false, o.timeout_ms, o.io_flags);
	}
	if (!err) {
		op = "end";
		err = end_conn(fd, o.close, o.idle_ms, o.timeout_ms, o.io_flags);
	}
	/* --close never and --end exit keep it open until the process exits */
	if (o.close == CLOSE_NEVER || o.end == END_EXIT) {
		hold(fd);
		rerr = 0;
	} else {
		rerr = release_fd(fd, o.end, null_fd);
	}
	if (err) {
		note_error(conn, op, err);
		return err;
	}
	if (rerr) {
		note_error(conn, "release", rerr);
		return rerr;
	}
	__atomic_add_fetch(&n_ok, 1, __ATOMIC_SEQ_CST);
	if (o.verbose)
		printf("conn %ld ok\n", conn);
	return 0;
}

/* Counts this process's open fds, and those that are sockets. */
static void count_fds(long *fds, long *sockets)
{
	DIR *d = opendir("/proc/self/fd");
	struct dirent *e;

	*fds = *sockets = 0;
	if (!d)
		return;
	while ((e = readdir(d))) {
		char target[64];
		ssize_t n;

		if (e->d_name[0] == '.' || atoi(e->d_name) == dirfd(d))
			continue;
		(*fds)++;
		n = readlinkat(dirfd(d), e->d_name, target, sizeof(target) - 1);
		if (n > 0) {
			target[n] = '\0';
			if (!strncmp(target, "socket:", 7))
				(*sockets)++;
		}
	}
	closedir(d);
}

static pid_t child = -1;

/* The child of --fork-after: outlives the parent's early connections, reports, exits. */
static void fork_child(void)
{
	long fds, sockets;

	fflush(stdout);
	fflush(stderr);
	child = fork();
	if (child < 0) {
		fprintf(stderr, PROG ": fork: %s\n", strerror(errno));
		return;
	}
	if (child > 0)
		return;
	sleep_ms(o.child_ms, 0);
	count_fds(&fds, &sockets);
	printf("child_pid=%d child_fds=%ld child_sockets=%ld\n", (int)getpid(), fds, sockets);
	fflush(stdout);
	exit(0);
}

static void *worker(void *arg)
{
	long i;

	(void)arg;
	for (i = 0; i < o.count && !stop; i++) {
		long conn = __atomic_add_fetch(&next_conn, 1, __ATOMIC_SEQ_CST);
		int err;

		if (i && o.interval_ms)
			sleep_ms(o.interval_ms, 0);
		err = one_connection(conn);
		if (err && o.stop_on_error) {
			stop = 1;
			break;
		}
		if (o.fork_after && conn == o.fork_after)
			fork_child();
	}
	return NULL;
}

/* Waits for the --fork-after child, killing it if it outlives its time by far. */
static void wait_child(void)
{
	long deadline = now_ms() + o.child_ms + 10000;
	int status;

	if (child <= 0)
		return;
	while (waitpid(child, &status, WNOHANG) == 0) {
		if (now_ms() > deadline) {
			fprintf(stderr, PROG ": child %d did not exit, killing it\n", (int)child);
			kill(child, SIGKILL);
			waitpid(child, &status, 0);
			break;
		}
		sleep_ms(10, 0);
	}
}

int main(int argc, char **argv)
{
	long fds_start = 0, sockets_start = 0, fds_end, sockets_end;

	/* measured before anything of ours is open */
	count_fds(&fds_start, &sockets_start);
	parse_args(argc, argv);
	stop_on_signals();
	if (o.end == END_DUP2) {
		null_fd = open("/dev/null", O_RDWR | O_CLOEXEC);
		if (null_fd < 0) {
			perror(PROG ": /dev/null");
			return 1;
		}
	}

	if (run_threads(o.threads, worker) < 0)
		return 1;

	if (o.close_all == ALL_CLOSE_RANGE) {
		if (close_range(3, ~0U, 0) < 0)
			fprintf(stderr, PROG ": close_range: %s\n", strerror(errno));
		nheld = 0;
		null_fd = -1;
	} else if (o.close_all == ALL_CLOSEFROM) {
		closefrom(3);
		nheld = 0;
		null_fd = -1;
	}
	if (o.sleep_end_ms)
		sleep_ms(o.sleep_end_ms, 0);
	wait_child();
	if (null_fd >= 0)
		close(null_fd);
	if (o.report_fds) {
		count_fds(&fds_end, &sockets_end);
		printf("fds_start=%ld fds_end=%ld sockets_start=%ld sockets_end=%ld\n",
		       fds_start, fds_end, sockets_start, sockets_end);
	}
	printf("ok=%ld failed=%ld first_error=%s first_error_conn=%ld first_error_op=%s\n",
	       n_ok, fails.count, err_name(fails.first_err), fails.first_conn, fails.first_op);
	fflush(stdout);
	/* connections kept by --close never or --end exit end here, in exit() */
	return fails.count ? 1 : 0;
}
