// SPDX-License-Identifier: MIT
/*
 * tw-defer: programs of the defer tests that tw-client cannot be.
 *
 *   exec-fail ADDR1 ADDR2   one request to ADDR1, closed (a deferred close
 *                           when preloaded), then an exec that fails, then one
 *                           request to ADDR2, closed, and a pause of --pause-ms
 *                           before exit; prints exec_ms=MS and ok=N
 *   connect N ADDR [--nonblock]
 *                           N requests to ADDR one after the other, each
 *                           closed after its reply; the connect blocking, or
 *                           non-blocking (EINPROGRESS, poll, SO_ERROR);
 *                           prints ok=N failed=N first_error=ERRNO
 *
 * Every wait is bounded (SO_RCVTIMEO/SO_SNDTIMEO). Exit status: 0 when every
 * connection succeeded, 1 otherwise, 2 on a usage error.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <stdbool.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

static long now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1000L + ts.tv_nsec / 1000000;
}

static int parse_addr(const char *s, struct sockaddr_in *sin)
{
	char host[64];
	const char *colon = strrchr(s, ':');

	if (!colon || (size_t)(colon - s) >= sizeof(host))
		return -1;
	memcpy(host, s, (size_t)(colon - s));
	host[colon - s] = 0;
	memset(sin, 0, sizeof(*sin));
	sin->sin_family = AF_INET;
	sin->sin_port = htons((uint16_t)atoi(colon + 1));
	return inet_pton(AF_INET, host, &sin->sin_addr) == 1 ? 0 : -1;
}

/* connect, blocking or not: 0 or the errno */
static int connect_to(int fd, const struct sockaddr_in *sin, bool nonblock)
{
	struct pollfd p = { .fd = fd, .events = POLLOUT };
	socklen_t l = sizeof(int);
	int err = 0;

	if (connect(fd, (const struct sockaddr *)sin, sizeof(*sin)) == 0)
		return 0;
	if (!nonblock || errno != EINPROGRESS)
		return errno;
	if (poll(&p, 1, 5000) != 1)
		return ETIMEDOUT;
	if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &l) < 0)
		return errno;
	return err;
}

/* one request, its reply, and the close: 0 or the errno */
static int one_request(const char *addr, bool nonblock)
{
	struct timeval tv = { .tv_sec = 5 };
	struct sockaddr_in sin;
	char buf[256];
	int fd, err;

	if (parse_addr(addr, &sin) < 0)
		return EINVAL;
	fd = socket(AF_INET, SOCK_STREAM | (nonblock ? SOCK_NONBLOCK : 0), 0);
	if (fd < 0)
		return errno;
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
	err = connect_to(fd, &sin, nonblock);
	if (!err && nonblock) {
		struct pollfd p = { .fd = fd, .events = POLLIN };

		if (write(fd, "hi!\n", 4) != 4 || poll(&p, 1, 5000) != 1 ||
		    read(fd, buf, sizeof(buf)) <= 0)
			err = errno ? errno : EIO;
	} else if (!err && (write(fd, "hi!\n", 4) != 4 || read(fd, buf, sizeof(buf)) <= 0)) {
		err = errno ? errno : EIO;
	}
	close(fd);
	return err;
}

static int burst(long n, const char *addr, bool nonblock)
{
	long ok = 0, failed = 0;
	int first = 0;

	for (long i = 0; i < n; i++) {
		int err = one_request(addr, nonblock);

		if (!err) {
			ok++;
			continue;
		}
		failed++;
		if (!first)
			first = err;
	}
	printf("ok=%ld failed=%ld first_error=%s\n", ok, failed, first ? strerror(first) : "");
	fflush(stdout);
	return failed ? 1 : 0;
}

int main(int argc, char **argv)
{
	long t, pause_ms = 500;
	int ok = 0;

	if (argc >= 4 && !strcmp(argv[1], "connect"))
		return burst(atol(argv[2]), argv[3], argc >= 5 && !strcmp(argv[4], "--nonblock"));
	if (argc >= 6 && !strcmp(argv[4], "--pause-ms"))
		pause_ms = atol(argv[5]);
	if (argc < 4 || strcmp(argv[1], "exec-fail")) {
		fprintf(stderr, "usage: tw-defer exec-fail ADDR1 ADDR2 [--pause-ms MS]\n"
			"       tw-defer connect N ADDR [--nonblock]\n");
		return 2;
	}
	ok += one_request(argv[2], false) == 0;
	t = now_ms();
	execl("/nonexistent/tw-defer", "tw-defer", (char *)NULL);
	printf("exec_ms=%ld exec_errno=%d\n", now_ms() - t, errno);
	ok += one_request(argv[3], false) == 0;
	usleep((useconds_t)pause_ms * 1000);
	printf("ok=%d\n", ok);
	fflush(stdout);
	return ok == 2 ? 0 : 1;
}
