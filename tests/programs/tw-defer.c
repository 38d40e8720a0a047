// SPDX-License-Identifier: MIT
/*
 * tw-defer: programs of the defer tests that tw-client cannot be.
 *
 *   exec-fail ADDR1 ADDR2   one request to ADDR1, closed (a deferred close
 *                           when preloaded), then an exec that fails, then one
 *                           request to ADDR2, closed, and a pause of --pause-ms
 *                           before exit; prints exec_ms=MS and ok=N
 *
 * Every wait is bounded (SO_RCVTIMEO/SO_SNDTIMEO). Exit status: 0 when every
 * connection succeeded, 1 otherwise, 2 on a usage error.
 */
#include <arpa/inet.h>
#include <errno.h>
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

/* one request, its reply, and the close: 0 on success */
static int one_request(const char *addr)
{
	struct timeval tv = { .tv_sec = 5 };
	struct sockaddr_in sin;
	char buf[256];
	int fd, ok = -1;

	if (parse_addr(addr, &sin) < 0)
		return -1;
	fd = socket(AF_INET, SOCK_STREAM, 0);
	if (fd < 0)
		return -1;
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
	if (connect(fd, (struct sockaddr *)&sin, sizeof(sin)) == 0 &&
	    write(fd, "hi!\n", 4) == 4 && read(fd, buf, sizeof(buf)) > 0)
		ok = 0;
	close(fd);
	return ok;
}

int main(int argc, char **argv)
{
	long t, pause_ms = 500;
	int ok = 0;

	if (argc >= 6 && !strcmp(argv[4], "--pause-ms"))
		pause_ms = atol(argv[5]);
	if (argc < 4 || strcmp(argv[1], "exec-fail")) {
		fprintf(stderr, "usage: tw-defer exec-fail ADDR1 ADDR2 [--pause-ms MS]\n");
		return 2;
	}
	ok += one_request(argv[2]) == 0;
	t = now_ms();
	execl("/nonexistent/tw-defer", "tw-defer", (char *)NULL);
	printf("exec_ms=%ld exec_errno=%d\n", now_ms() - t, errno);
	ok += one_request(argv[3]) == 0;
	usleep((useconds_t)pause_ms * 1000);
	printf("ok=%d\n", ok);
	fflush(stdout);
	return ok == 2 ? 0 : 1;
}
