// SPDX-License-Identifier: MIT
/*
 * tw-host: small host programs that do what the library must survive
 * unseen. Each mode connects to itself on 127.0.0.1 (a listener of its own,
 * port from the kernel) and prints one line of key=value pairs:
 *
 *   accept-null       accept(fd, addr, NULL): what libc's accept returns
 *                     (result=-1 errno=EFAULT without the library)
 *   stderr-reused     closes fd 2, so that its next connection gets fd 2,
 *                     then makes and closes another connection: with
 *                     log=stderr nothing may arrive on the first one
 *                     (leaked=0)
 *   connect N         makes and closes N connections (for records)
 *   fsize N BYTES     makes and closes N connections, sets its own
 *                     RLIMIT_FSIZE to BYTES, and makes and closes N more
 *                     at once (ok=2N)
 *
 * Every wait is bounded. Exit status: 0 done, 1 a call failed, 2 usage.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

static struct sockaddr_in where;

static int listener(void)
{
	socklen_t l = sizeof(where);
	int fd = socket(AF_INET, SOCK_STREAM, 0);

	where.sin_family = AF_INET;
	where.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if (fd < 0 || bind(fd, (struct sockaddr *)&where, sizeof(where)) < 0 ||
	    listen(fd, 16) < 0 || getsockname(fd, (struct sockaddr *)&where, &l) < 0) {
		printf("error=listen errno=%s\n", strerrorname_np(errno));
		exit(1);
	}
	return fd;
}

static int dial(void)
{
	int fd = socket(AF_INET, SOCK_STREAM, 0);

	if (fd < 0 || connect(fd, (struct sockaddr *)&where, sizeof(where)) < 0) {
		printf("error=connect errno=%s\n", strerrorname_np(errno));
		exit(1);
	}
	return fd;
}

static int take(int l)
{
	int fd = accept(l, NULL, NULL);

	if (fd < 0) {
		printf("error=accept errno=%s\n", strerrorname_np(errno));
		exit(1);
	}
	return fd;
}

int main(int argc, char **argv)
{
	int l, a, b, c, d;

	if (argc < 2)
		return 2;
	l = listener();
	if (!strcmp(argv[1], "accept-null")) {
		struct sockaddr_in sa;
		int r;

		a = dial();
		r = accept(l, (struct sockaddr *)&sa, NULL);
		printf("result=%d errno=%s\n", r < 0 ? -1 : 0, r < 0 ? strerrorname_np(errno) : "0");
		return 0;
	}
	if (!strcmp(argv[1], "stderr-reused")) {
		struct pollfd p;
		char buf[4096];
		ssize_t n = 0;

		close(STDERR_FILENO);
		a = dial();	/* fd 2 */
		b = take(l);
		c = dial();
		d = take(l);
		close(c);
		close(d);
		p.fd = b;
		p.events = POLLIN;
		if (poll(&p, 1, 300) == 1)
			n = read(b, buf, sizeof(buf));
		printf("afd=%d leaked=%zd\n", a, n < 0 ? 0 : n);
		return 0;
	}
	if ((!strcmp(argv[1], "connect") && argc > 2) || (!strcmp(argv[1], "fsize") && argc > 3)) {
		int n = atoi(argv[2]), rounds = argc > 3 ? 2 : 1;

		for (int r = 0; r < rounds; r++) {
			struct rlimit rl = { strtoul(argc > 3 ? argv[3] : "0", NULL, 10), RLIM_INFINITY };

			if (r && setrlimit(RLIMIT_FSIZE, &rl) < 0) {
				printf("error=setrlimit errno=%s\n", strerrorname_np(errno));
				return 1;
			}
			for (int i = 0; i < n; i++) {
				a = dial();
				b = take(l);
				close(a);
				close(b);
			}
		}
		printf("ok=%d\n", n * rounds);
		return 0;
	}
	return 2;
}
