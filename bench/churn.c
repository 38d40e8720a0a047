// SPDX-License-Identifier: MIT
/*
 * churn: short loopback TCP connections as fast as they go, for comparing
 * connection rates with and without the preload library.
 *
 *   churn server PORT LINGER_MS READYFILE
 *	Listens on 127.0.0.1:PORT (one thread, epoll). For each connection:
 *	reads a 16-byte request, writes a 64-byte reply, then closes at the
 *	client's EOF or after LINGER_MS, whichever comes first (0: closes right
 *	after replying). A client that closes at once therefore closes first, and
 *	one whose close is deferred gets the server's FIN LINGER_MS later.
 *	Writes its pid to READYFILE once it listens; SIGTERM stops it, and it prints
 *	"accepted=N served=N lingered=N server_cpu_us=T".
 *
 *   churn client PORT DURATION_MS
 *	For DURATION_MS: socket, connect, request, read the reply, close; one
 *	after the other, blocking. A failed connect (EADDRNOTAVAIL once the
 *	ephemeral ports are spent) is counted and followed by a 1 ms pause, so
 *	that "failed" counts attempts a patient client would make. Prints
 *	"ok=N failed=N elapsed_ms=T first_error=NAME first_error_ms=T client_cpu_us=T".
 *	CPU times are of the whole process, from ready to the end.
 */
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "bench.h"

#define REQ_LEN		16
#define REPLY_LEN	64
#define MAX_FD		65536
#define RING		65536

/* CPU time of the whole process (every thread: the library's too), in microseconds */
static uint64_t cpu_us(void)
{
	struct rusage ru;

	getrusage(RUSAGE_SELF, &ru);
	return (uint64_t)(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) * 1000000u +
	       (uint64_t)(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec);
}

/* server: per-fd state; gen tells a pending close from a reused fd number */
enum { ST_FREE, ST_REQ, ST_LINGER };

static struct {
	uint32_t gen;
	uint8_t st;
	uint8_t got;
} conns[MAX_FD];

static struct {
	int fd;
	uint32_t gen;
	uint64_t due;
} ring[RING];

static unsigned ring_head, ring_tail;
static volatile sig_atomic_t stop;
static long n_accepted, n_served, n_lingered;

static void on_term(int sig)
{
	(void)sig;
	stop = 1;
}

static void conn_close(int fd)
{
	conns[fd].st = ST_FREE;
	conns[fd].gen++;
	close(fd);
}

static void on_readable(int fd, uint64_t linger_ns)
{
	static const char reply[REPLY_LEN] =
		"HTTP/1.0 200 OK 0123456789abcdefghijklmnopqrstuvwxyz0123456789\n";
	char buf[4096];

	for (;;) {
		ssize_t n = read(fd, buf, sizeof(buf));

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && errno == EAGAIN)
			return;
		if (n <= 0) {
			conn_close(fd);
			return;
		}
		if (conns[fd].st != ST_REQ)
			continue;	/* after the reply: dropped */
		conns[fd].got = (uint8_t)(conns[fd].got + (n > REQ_LEN ? REQ_LEN : n));
		if (conns[fd].got < REQ_LEN)
			continue;
		if (write(fd, reply, sizeof(reply)) != (ssize_t)sizeof(reply)) {
			conn_close(fd);
			return;
		}
		n_served++;
		if (!linger_ns || ring_tail - ring_head == RING) {
			conn_close(fd);
			return;
		}
		conns[fd].st = ST_LINGER;
		ring[ring_tail % RING].fd = fd;
		ring[ring_tail % RING].gen = conns[fd].gen;
		ring[ring_tail % RING].due = now_ns() + linger_ns;
		ring_tail++;
	}
}

/* closes the lingering connections whose time is up; returns ms to the next */
static int expire(void)
{
	uint64_t now = now_ns();

	while (ring_head != ring_tail) {
		unsigned i = ring_head % RING;

		if (conns[ring[i].fd].gen != ring[i].gen || conns[ring[i].fd].st != ST_LINGER) {
			ring_head++;	/* closed already, at the client's EOF */
			continue;
		}
		if (ring[i].due > now)
			return (int)((ring[i].due - now + 999999) / 1000000);
		n_lingered++;
		conn_close(ring[i].fd);
		ring_head++;
	}
	return 100;
}

static int server(int port, int linger_ms, const char *ready)
{
	struct sockaddr_in sin = loopback(port);
	struct epoll_event ev, evs[256];
	struct sigaction sa = { .sa_handler = on_term };
	uint64_t linger_ns = (uint64_t)linger_ms * 1000000u, cpu0;
	int lfd, ep, one = 1;
	FILE *rf;

	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGINT, &sa, NULL);
	lfd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (lfd < 0 || bind(lfd, (struct sockaddr *)&sin, sizeof(sin)) < 0 ||
	    listen(lfd, 4096) < 0) {
		perror("churn server: listen");
		return 1;
	}
	ep = epoll_create1(EPOLL_CLOEXEC);
	ev.events = EPOLLIN;
	ev.data.fd = lfd;
	epoll_ctl(ep, EPOLL_CTL_ADD, lfd, &ev);
	cpu0 = cpu_us();
	rf = fopen(ready, "we");
	if (!rf) {
		perror("churn server: ready file");
		return 1;
	}
	fprintf(rf, "%d\n", (int)getpid());
	fclose(rf);
	while (!stop) {
		int n = epoll_wait(ep, evs, 256, expire());

		for (int i = 0; i < n; i++) {
			int fd = evs[i].data.fd;

			if (fd != lfd) {
				on_readable(fd, linger_ns);
				continue;
			}
			for (;;) {
				int cfd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);

				if (cfd < 0)
					break;
				if (cfd >= MAX_FD) {
					close(cfd);
					continue;
				}
				n_accepted++;
				conns[cfd].st = ST_REQ;
				conns[cfd].got = 0;
				ev.events = EPOLLIN;
				ev.data.fd = cfd;
				epoll_ctl(ep, EPOLL_CTL_ADD, cfd, &ev);
			}
		}
	}
	printf("accepted=%ld served=%ld lingered=%ld server_cpu_us=%llu\n", n_accepted, n_served,
	       n_lingered, (unsigned long long)(cpu_us() - cpu0));
	return 0;
}

static int client(int port, long duration_ms)
{
	struct sockaddr_in sin = loopback(port);
	static const char req[REQ_LEN] = "GET /churn 1.0\r\n";
	uint64_t cpu0 = cpu_us(), t0 = now_ns(), end = t0 + (uint64_t)duration_ms * 1000000u, t;
	uint64_t first_ms = 0;
	long ok = 0, failed = 0;
	int first_err = 0;
	char buf[REPLY_LEN];

	while ((t = now_ns()) < end) {
		int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0), err = 0;
		size_t got = 0;

		if (fd < 0) {
			err = errno;
		} else if (connect(fd, (struct sockaddr *)&sin, sizeof(sin)) < 0) {
			err = errno;
		} else if (write(fd, req, sizeof(req)) != (ssize_t)sizeof(req)) {
			err = errno ? errno : EIO;
		} else {
			while (got < sizeof(buf)) {
				ssize_t n = read(fd, buf + got, sizeof(buf) - got);

				if (n < 0 && errno == EINTR)
					continue;
				if (n <= 0) {
					err = n < 0 ? errno : ECONNRESET;
					break;
				}
				got += (size_t)n;
			}
		}
		if (fd >= 0)
			close(fd);
		if (!err) {
			ok++;
			continue;
		}
		failed++;
		if (!first_err) {
			first_err = err;
			first_ms = (t - t0) / 1000000u;
		}
		usleep(1000);
	}
	printf("ok=%ld failed=%ld elapsed_ms=%.1f first_error=%s first_error_ms=%llu "
	       "client_cpu_us=%llu\n", ok, failed, (double)(t - t0) / 1e6,
	       first_err ? strerrorname_np(first_err) : "none", (unsigned long long)first_ms,
	       (unsigned long long)(cpu_us() - cpu0));
	return 0;
}

int main(int argc, char **argv)
{
	setvbuf(stdout, NULL, _IOLBF, 0);
	if (argc == 5 && !strcmp(argv[1], "server"))
		return server(atoi(argv[2]), atoi(argv[3]), argv[4]);
	if (argc == 4 && !strcmp(argv[1], "client"))
		return client(atoi(argv[2]), atol(argv[3]));
	fprintf(stderr, "usage: churn server PORT LINGER_MS READYFILE\n"
		"       churn client PORT DURATION_MS\n");
	return 2;
}
