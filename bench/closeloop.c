// SPDX-License-Identifier: MIT
/*
 * closeloop: N close() calls, each inside bench_close_one(), so that
 * callgrind (--toggle-collect=bench_close_one) counts the user-space
 * instructions of close() alone, with or without the preload library.
 *
 *   closeloop fd N [--probe] [--thread]
 *	close(dup(eventfd)): an fd the library does not track
 *   closeloop tcp N [--probe] [--thread]
 *	close() of a connected loopback TCP client socket while the server's
 *	end is still open: the client closes first
 *
 * --probe first makes one loopback TCP connection and closes it, server end
 * first: under a log setting the library writes its two records (proof that
 * it tracks), and under close=defer it starts its closer thread, which makes
 * the process multi-threaded for every close that follows.
 * --thread starts an idle thread of the program's own first: the same
 * multi-threaded libc, without the library.
 *
 * Prints where close() resolves ("close_from=PATH") and "closes=N".
 */
#include <dlfcn.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

/* the one function callgrind collects in; kept out of line (see the Makefile) */
__attribute__((noinline)) int bench_close_one(int fd);

int bench_close_one(int fd)
{
	return close(fd);
}

static void *idle(void *arg)
{
	for (;;)
		pause();
	return arg;
}

static int listener(struct sockaddr_in *sin)
{
	socklen_t len = sizeof(*sin);
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

	memset(sin, 0, sizeof(*sin));
	sin->sin_family = AF_INET;
	sin->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if (fd < 0 || bind(fd, (struct sockaddr *)sin, sizeof(*sin)) < 0 || listen(fd, 64) < 0 ||
	    getsockname(fd, (struct sockaddr *)sin, &len) < 0) {
		perror("closeloop: listener");
		exit(1);
	}
	return fd;
}

/* One connected pair: *cfd the client's end, the accepted end returned. */
static int pair(int lfd, const struct sockaddr_in *sin, int *cfd)
{
	int sfd;

	*cfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (*cfd < 0 || connect(*cfd, (const struct sockaddr *)sin, sizeof(*sin)) < 0) {
		perror("closeloop: connect");
		exit(1);
	}
	sfd = accept(lfd, NULL, NULL);
	if (sfd < 0) {
		perror("closeloop: accept");
		exit(1);
	}
	return sfd;
}

int main(int argc, char **argv)
{
	struct sockaddr_in sin;
	int lfd = -1, sfd, cfd, efd;
	bool tcp, probe = false;
	pthread_t tid;
	long n;
	Dl_info info;

	if (argc < 3 || (strcmp(argv[1], "fd") && strcmp(argv[1], "tcp"))) {
		fprintf(stderr, "usage: closeloop fd|tcp N [--probe] [--thread]\n");
		return 2;
	}
	tcp = !strcmp(argv[1], "tcp");
	n = atol(argv[2]);
	for (int i = 3; i < argc; i++) {
		if (!strcmp(argv[i], "--probe")) {
			probe = true;
		} else if (!strcmp(argv[i], "--thread")) {
			if (pthread_create(&tid, NULL, idle, NULL)) {
				fprintf(stderr, "closeloop: pthread_create failed\n");
				return 1;
			}
		}
	}
	if (tcp || probe)
		lfd = listener(&sin);
	if (probe) {
		sfd = pair(lfd, &sin, &cfd);
		close(sfd);
		close(cfd);
	}
	efd = eventfd(0, EFD_CLOEXEC);
	if (efd < 0) {
		perror("closeloop: eventfd");
		return 1;
	}
	for (long i = 0; i < n; i++) {
		if (tcp) {
			sfd = pair(lfd, &sin, &cfd);
			bench_close_one(cfd);
			close(sfd);
		} else {
			bench_close_one(dup(efd));
		}
	}
	if (dladdr((void *)close, &info) && info.dli_fname)
		printf("close_from=%s\n", info.dli_fname);
	printf("closes=%ld\n", n);
	return 0;
}
