// SPDX-License-Identifier: MIT
/*
 * What the example programs share (common.h): messages and option parsing,
 * bounded socket I/O, ending a connection and releasing its fd.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "common.h"

const char *const close_names[] = { "first", "last", "shutdown", "reset", "never" };
const char *const end_names[] = { "close", "dup2", "close_range", "fclose", "exit" };

_Atomic int stop;	/* lock-free: a signal handler may store it, threads read it */

static void on_stop(int sig)
{
	(void)sig;
	stop = 1;
}

void stop_on_signals(void)
{
	struct sigaction sa = { .sa_handler = on_stop };

	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGINT, &sa, NULL);
	signal(SIGPIPE, SIG_IGN);
}

/* "NAME: MESSAGE" on stderr, the --help hint when asked, and exit status 2. */
static void __attribute__((format(printf, 2, 0), noreturn))
usage_exit(bool hint, const char *fmt, va_list ap)
{
	fprintf(stderr, "%s: ", prog.name);
	vfprintf(stderr, fmt, ap);
	if (hint)
		fprintf(stderr, "\nTry '%s --help'.\n", prog.name);
	else
		fputc('\n', stderr);
	exit(2);
}

void die_usage(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	usage_exit(true, fmt, ap);
}

/* A bad option value: a usage error, with the hint when the program gives it there. */
static void __attribute__((format(printf, 1, 2), noreturn)) die_value(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	usage_exit(prog.hint_bad_value, fmt, ap);
}

const char *err_name(int err)
{
	const char *n;

	if (err == ERR_EOF)
		return "EOF";
	if (err == 0)
		return "";
	n = strerrorname_np(err);
	return n ? n : "EUNKNOWN";
}

long parse_num(const char *s, long min, long max, const char *what)
{
	char *end;
	long v;

	errno = 0;
	v = strtol(s, &end, 10);
	if (errno || end == s || *end || v < min || v > max)
		die_value("%s: expected a number from %ld to %ld, got '%s'", what, min, max, s);
	return v;
}

int parse_enum(const char *s, const char *const *names, int n, const char *what)
{
	int i;

	for (i = 0; i < n; i++)
		if (!strcmp(s, names[i]))
			return i;
	die_value("%s: unknown value '%s'", what, s);
}

int parse_addr(const char *text, int min_port, struct sockaddr_storage *ss, socklen_t *len)
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
	if (errno || end == colon + 1 || *end || port < min_port || port > 65535)
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

long now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void sleep_ms(int ms, unsigned flags)
{
	bool stoppable = flags & IO_STOPPABLE;
	long deadline = now_ms() + ms;
	long left;

	while (!(stoppable && stop) && (left = deadline - now_ms()) > 0) {
		struct timespec ts;

		if (stoppable && left > SLICE_MS)
			left = SLICE_MS;
		ts.tv_sec = left / 1000;
		ts.tv_nsec = (left % 1000) * 1000000L;
		/* a signal cuts it short: the loop sleeps what is left */
		nanosleep(&ts, NULL);
	}
}

int wait_fd(int fd, short events, int timeout_ms, unsigned flags)
{
	bool stoppable = flags & IO_STOPPABLE;
	long deadline = now_ms() + timeout_ms;

	for (;;) {
		struct pollfd p = { .fd = fd, .events = events };
		long left = deadline - now_ms();
		int n;

		if (stoppable && stop)
			return -ECANCELED;
		if (left <= 0)
			return -ETIMEDOUT;
		n = poll(&p, 1, (int)(stoppable && left > SLICE_MS ? SLICE_MS : left));
		if (n > 0)
			return 0;
		if (n < 0 && errno != EINTR)
			return -errno;
	}
}

ssize_t read_some(int fd, char *buf, size_t len, int timeout_ms, unsigned flags)
{
	for (;;) {
		ssize_t n = read(fd, buf, len);
		int ret;

		if (n >= 0)
			return n;
		if (errno == EINTR)
			continue;
		/* SO_RCVTIMEO ran out on a blocking socket */
		if (errno == EAGAIN && (flags & IO_BLOCKING))
			return -ETIMEDOUT;
		if (errno != EAGAIN)
			return -errno;
		ret = wait_fd(fd, POLLIN, timeout_ms, flags);
		if (ret < 0)
			return ret;
	}
}

int write_all(int fd, const char *buf, size_t len, int timeout_ms, unsigned flags)
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
		/* SO_SNDTIMEO ran out on a blocking socket */
		if (n < 0 && errno == EAGAIN && (flags & IO_BLOCKING))
			return -ETIMEDOUT;
		if (n < 0 && errno != EAGAIN)
			return -errno;
		ret = wait_fd(fd, POLLOUT, timeout_ms, flags);
		if (ret < 0)
			return ret;
	}
	return 0;
}

int write_fill(int fd, long n, char c, bool line, int timeout_ms, unsigned flags)
{
	char buf[65536];

	memset(buf, c, n < (long)sizeof(buf) ? (size_t)n : sizeof(buf));
	while (n > 0) {
		size_t k = n > (long)sizeof(buf) ? sizeof(buf) : (size_t)n;
		int ret;

		if (line && (long)k == n)
			buf[k - 1] = '\n';
		ret = write_all(fd, buf, k, timeout_ms, flags);
		if (ret < 0)
			return -ret;
		n -= (long)k;
	}
	return 0;
}

int wait_eof(int fd, int idle_ms, int timeout_ms, unsigned flags)
{
	int limit = idle_ms >= 0 ? idle_ms : timeout_ms;
	long deadline = now_ms() + limit;
	char buf[16384];

	for (;;) {
		long left = deadline - now_ms();
		ssize_t n;

		if (left <= 0)
			return idle_ms >= 0 ? 0 : ETIMEDOUT;
		n = read_some(fd, buf, sizeof(buf), (int)left, flags);
		if (n == 0)
			return 0;
		if (n == -ETIMEDOUT && idle_ms >= 0)
			return 0;
		if (n < 0)
			return (int)-n;
	}
}

int end_conn(int fd, enum close_mode how, int idle_ms, int timeout_ms, unsigned flags)
{
	struct linger lg = { .l_onoff = 1, .l_linger = 0 };

	switch (how) {
	case CLOSE_FIRST:
	case CLOSE_NEVER:
		break;
	case CLOSE_LAST:
		return wait_eof(fd, idle_ms, timeout_ms, flags);
	case CLOSE_SHUTDOWN:
		if (shutdown(fd, SHUT_WR) < 0)
			return errno;
		return wait_eof(fd, idle_ms, timeout_ms, flags);
	case CLOSE_RESET:
		if (setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg)) < 0)
			return errno;
		break;
	}
	return 0;
}

int release_fd(int fd, enum end_mode end, int null_fd)
{
	FILE *f;

	switch (end) {
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
		break;
	}
	return 0;
}

void note_failure(struct failures *f, long conn, const char *op, int err,
		  const char *eof_what)
{
	long zero = 0;

	__atomic_add_fetch(&f->count, 1, __ATOMIC_SEQ_CST);
	if (__atomic_compare_exchange_n(&f->first_conn, &zero, conn, false,
					__ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST)) {
		f->first_err = err;
		snprintf(f->first_op, sizeof(f->first_op), "%s", op);
		fprintf(stderr, "%s: connection %ld: %s: %s (%s)\n", prog.name, conn, op,
			err_name(err), err == ERR_EOF ? eof_what : strerror(err));
	}
}

int run_threads(int n, void *(*fn)(void *))
{
	pthread_t *tids;
	int i;

	if (n == 1) {
		fn(NULL);
		return 0;
	}
	tids = calloc((size_t)n, sizeof(*tids));
	if (!tids) {
		fprintf(stderr, "%s: calloc: %s\n", prog.name, strerror(errno));
		return -1;
	}
	for (i = 0; i < n; i++) {
		int ret = pthread_create(&tids[i], NULL, fn, NULL);

		if (ret) {
			fprintf(stderr, "%s: pthread_create: %s\n", prog.name, strerror(ret));
			return -1;
		}
	}
	for (i = 0; i < n; i++)
		pthread_join(tids[i], NULL);
	free(tids);
	return 0;
}
