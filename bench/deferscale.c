// SPDX-License-Identifier: MIT
/*
 * deferscale: N connections deferred at once, and how long each stays open
 * after the peer's FIN.
 *
 *   deferscale peer PORT N -- CLOSER_COMMAND...
 *	Listens on 127.0.0.1:PORT and runs CLOSER_COMMAND (normally
 *	`deferscale closer PORT N [--manual]`, with or without the preload
 *	library) with a control socket as fd 3. Two rounds; in each the closer
 *	connects N times and closes all N, and then this side, the peer, ends
 *	them: "paced" sends one FIN (shutdown(SHUT_WR)) at a time and waits for
 *	the EOF that the closer's real close sends back; "burst" sends all N
 *	FINs at once while a second thread collects the EOFs. The delay from
 *	each FIN to its EOF is the time from the peer's FIN to the real close,
 *	plus one loopback hop.
 *
 *   deferscale closer PORT N [--manual]
 *	Connects and closes N times, in chunks of CHUNK: the program never
 *	holds more than CHUNK fds itself. Without --manual it just close()s:
 *	under close=defer the library keeps the connections. With --manual it
 *	does the same work itself, as a program would without the library: a
 *	thread of its own waits with epoll for each peer's FIN, reads and drops
 *	what arrives, and closes. Reports its anonymous RSS, the CPU time of its
 *	close calls and its open fds once all are handed over; at the end the
 *	CPU time of its other thread (the library's closer, or its own) and the
 *	fds still open, which should be only that thread's own.
 *
 * The peer prints one line of key=value pairs per round and one for the
 * closer; times in microseconds, memory in bytes.
 */
#include <dirent.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "bench.h"

#define CTL_FD		3
#define MAX_N		30000
#define IO_TIMEOUT_MS	30000
#define CHUNK		1000

static uint64_t cpu_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static void die(const char *what)
{
	fprintf(stderr, "deferscale[%d]: %s: %s\n", (int)getpid(), what, strerror(errno));
	exit(1);
}

/* one line from the control socket, waiting at most IO_TIMEOUT_MS */
static void ctl_read(int fd, char *buf, size_t len)
{
	size_t got = 0;

	while (got < len - 1) {
		struct pollfd p = { .fd = fd, .events = POLLIN };
		ssize_t n;

		if (poll(&p, 1, IO_TIMEOUT_MS) <= 0) {
			errno = ETIMEDOUT;
			die("control socket");
		}
		n = read(fd, buf + got, 1);
		if (n <= 0) {
			errno = n ? errno : EPIPE;
			die("control socket");
		}
		if (buf[got] == '\n')
			break;
		got++;
	}
	buf[got] = 0;
}

static void ctl_write(int fd, const char *s)
{
	if (write(fd, s, strlen(s)) != (ssize_t)strlen(s))
		die("control socket");
}

/* ---- the closer ---- */

static long rss_anon(void)
{
	FILE *f = fopen("/proc/self/status", "re");
	char line[256];
	long kb = -1;

	if (!f)
		return -1;
	while (fgets(line, sizeof(line), f))
		if (sscanf(line, "RssAnon: %ld kB", &kb) == 1)
			break;
	fclose(f);
	return kb * 1024;
}

static int count_fds(void)
{
	DIR *d = opendir("/proc/self/fd");
	struct dirent *e;
	int n = 0;

	if (!d)
		return -1;
	while ((e = readdir(d)))
		n += e->d_name[0] != '.';
	closedir(d);
	return n - 1;
}

/* CPU time of every thread of this process but the main one */
static uint64_t other_threads_cpu_ns(void)
{
	DIR *d = opendir("/proc/self/task");
	struct dirent *e;
	uint64_t sum = 0;

	if (!d)
		return 0;
	while ((e = readdir(d))) {
		char path[300];
		unsigned long long ns = 0;
		FILE *f;

		if (e->d_name[0] == '.' || atoi(e->d_name) == getpid())
			continue;
		snprintf(path, sizeof(path), "/proc/self/task/%s/schedstat", e->d_name);
		f = fopen(path, "re");
		if (f && fscanf(f, "%llu", &ns) == 1)
			sum += ns;
		if (f)
			fclose(f);
	}
	closedir(d);
	return sum;
}

static int manual_ep = -1;

/* --manual: the deferred close a program would write for itself */
static void *manual_main(void *arg)
{
	struct epoll_event ev[128];
	char buf[4096];

	(void)arg;
	for (;;) {
		int n = epoll_wait(manual_ep, ev, 128, -1);

		for (int i = 0; i < n; i++) {
			int fd = ev[i].data.fd;
			ssize_t r;

			while ((r = recv(fd, buf, sizeof(buf), MSG_DONTWAIT)) > 0)
				;
			if (r == 0 || (errno != EAGAIN && errno != EINTR))
				close(fd);
		}
	}
	return NULL;
}

/*
 * The program's own closer ("without") holds N fds itself: it raises its soft
 * RLIMIT_NOFILE to the hard one. The library keeps its copies above the soft
 * limit, so under the library the closer keeps the low soft limit it was
 * started with, and N deferred connections fit below a hard limit a little
 * above that soft limit + N.
 */
static void raise_nofile(void)
{
	struct rlimit rl;

	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
		rl.rlim_cur = rl.rlim_max;
		setrlimit(RLIMIT_NOFILE, &rl);
	}
}

static int closer(int port, int n, bool manual)
{
	static int fds[CHUNK];
	struct sockaddr_in sin = loopback(port);
	long rss0;
	int fds0;
	char cmd[64], out[512];

	signal(SIGPIPE, SIG_IGN);
	if (manual) {
		raise_nofile();
		pthread_t tid;

		manual_ep = epoll_create1(EPOLL_CLOEXEC);
		if (manual_ep < 0 || pthread_create(&tid, NULL, manual_main, NULL))
			die("manual closer");
	}
	rss0 = rss_anon();
	fds0 = count_fds();
	for (;;) {
		uint64_t ccpu = 0, cwall = 0;
		long rss1;

		ctl_read(CTL_FD, cmd, sizeof(cmd));
		if (!strcmp(cmd, "exit"))
			break;
		/* in chunks: the program itself never holds more than CHUNK fds */
		for (int done = 0; done < n; done += CHUNK) {
			int k = n - done < CHUNK ? n - done : CHUNK;
			uint64_t c0, w0;

			for (int i = 0; i < k; i++) {
				fds[i] = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
				if (fds[i] < 0 ||
				    connect(fds[i], (struct sockaddr *)&sin, sizeof(sin)) < 0)
					die("connect");
			}
			c0 = cpu_ns();
			w0 = now_ns();
			for (int i = 0; i < k; i++) {
				if (manual) {
					struct epoll_event ev = { .events = EPOLLIN | EPOLLRDHUP,
								  .data.fd = fds[i] };

					if (epoll_ctl(manual_ep, EPOLL_CTL_ADD, fds[i], &ev) < 0)
						die("epoll_ctl");
				} else if (close(fds[i]) < 0) {
					die("close");
				}
			}
			ccpu += cpu_ns() - c0;
			cwall += now_ns() - w0;
		}
		/* let the other thread take them all before counting */
		usleep(300000);
		rss1 = rss_anon();
		snprintf(out, sizeof(out),
			 "rss_start=%ld rss_deferred=%ld close_cpu_ns=%llu close_wall_ns=%llu "
			 "fds_held=%d\n", rss0, rss1, (unsigned long long)ccpu,
			 (unsigned long long)cwall, count_fds() - fds0);
		ctl_write(CTL_FD, out);
	}
	/* every deferred connection has ended by now: what is left open leaked */
	snprintf(out, sizeof(out), "closer_thread_cpu_ns=%llu fds_left=%d\n",
		 (unsigned long long)other_threads_cpu_ns(), count_fds() - fds0);
	ctl_write(CTL_FD, out);
	return 0;
}

/* ---- the peer ---- */

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	return x < y ? -1 : x > y;
}

static uint64_t pct(const uint64_t *sorted, int n, double p)
{
	int i = (int)(p * (n - 1) + 0.5);

	return n ? sorted[i] : 0;
}

static void accept_n(int lfd, int *fds, int n)
{
	for (int i = 0; i < n; i++) {
		struct pollfd p = { .fd = lfd, .events = POLLIN };

		if (poll(&p, 1, IO_TIMEOUT_MS) <= 0) {
			errno = ETIMEDOUT;
			die("accept");
		}
		fds[i] = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
		if (fds[i] < 0)
			die("accept");
	}
}

/* waits for the EOF on fd; 0, or -1 on a timeout or anything but EOF */
static int await_eof(int fd, int timeout_ms)
{
	struct pollfd p = { .fd = fd, .events = POLLIN };
	char buf[256];

	for (;;) {
		ssize_t r;

		if (poll(&p, 1, timeout_ms) <= 0)
			return -1;
		r = read(fd, buf, sizeof(buf));
		if (r == 0)
			return 0;
		if (r < 0)
			return -1;
	}
}

static void paced(int *fds, int n, uint64_t *lat, int *bad)
{
	for (int i = 0; i < n; i++) {
		uint64_t t0 = now_ns();

		shutdown(fds[i], SHUT_WR);
		if (await_eof(fds[i], 2000) < 0)
			(*bad)++;
		lat[i] = now_ns() - t0;
		close(fds[i]);
	}
}

/* burst: the EOFs are collected by a thread of their own while the FINs go out */
static struct {
	int ep, n, *fds, bad;
	uint64_t *t_eof, last_eof;
} col;

static void *collect(void *arg)
{
	uint64_t deadline = now_ns() + 10000000000ull;
	int left = col.n;

	(void)arg;
	while (left > 0 && now_ns() < deadline) {
		struct epoll_event ev[256];
		int k = epoll_wait(col.ep, ev, 256, 1000);

		for (int j = 0; j < k; j++) {
			uint32_t i = ev[j].data.u32;
			char buf[256];
			ssize_t r = read(col.fds[i], buf, sizeof(buf));

			if (r > 0)
				continue;
			col.t_eof[i] = col.last_eof = now_ns();
			if (r < 0)
				col.bad++;
			epoll_ctl(col.ep, EPOLL_CTL_DEL, col.fds[i], NULL);
			left--;
		}
	}
	col.bad += left;
	return NULL;
}

/* all FINs at once; returns the time from the last FIN to the last EOF */
static uint64_t burst(int *fds, int n, uint64_t *lat, int *bad)
{
	static uint64_t t0[MAX_N], t_eof[MAX_N];
	uint64_t fins_done;
	pthread_t tid;

	col.ep = epoll_create1(EPOLL_CLOEXEC);
	col.n = n;
	col.fds = fds;
	col.t_eof = t_eof;
	col.bad = 0;
	for (int i = 0; i < n; i++) {
		struct epoll_event ev = { .events = EPOLLIN, .data.u32 = (uint32_t)i };

		epoll_ctl(col.ep, EPOLL_CTL_ADD, fds[i], &ev);
		t_eof[i] = 0;
	}
	if (pthread_create(&tid, NULL, collect, NULL))
		die("pthread_create");
	for (int i = 0; i < n; i++) {
		t0[i] = now_ns();
		shutdown(fds[i], SHUT_WR);
	}
	fins_done = now_ns();
	pthread_join(tid, NULL);
	for (int i = 0; i < n; i++) {
		lat[i] = t_eof[i] ? t_eof[i] - t0[i] : UINT64_MAX / 2;
		close(fds[i]);
	}
	*bad += col.bad;
	close(col.ep);
	return col.last_eof > fins_done ? col.last_eof - fins_done : 0;
}

static int peer(int port, int n, char **cmd)
{
	static int fds[MAX_N];
	static uint64_t lat[MAX_N];
	struct sockaddr_in sin = loopback(port);
	int lfd, sv[2], one = 1, status;
	char line[512];
	pid_t pid;

	raise_nofile();
	signal(SIGPIPE, SIG_IGN);
	setvbuf(stdout, NULL, _IOLBF, 0);
	lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (lfd < 0 || bind(lfd, (struct sockaddr *)&sin, sizeof(sin)) < 0 ||
	    listen(lfd, 4096) < 0)
		die("listen");
	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0)
		die("socketpair");
	pid = fork();
	if (pid < 0)
		die("fork");
	if (!pid) {
		if (dup2(sv[1], CTL_FD) < 0)
			die("dup2");
		execvp(cmd[0], cmd);
		die(cmd[0]);
	}
	close(sv[1]);
	for (int round = 0; round < 2; round++) {
		const char *name = round ? "burst" : "paced";
		uint64_t tail = 0;
		int bad = 0;

		ctl_write(sv[0], "round\n");
		accept_n(lfd, fds, n);
		ctl_read(sv[0], line, sizeof(line));
		if (round)
			tail = burst(fds, n, lat, &bad);
		else
			paced(fds, n, lat, &bad);
		qsort(lat, (size_t)n, sizeof(lat[0]), cmp_u64);
		printf("round=%s n=%d %s fin_to_close_p50_us=%.1f fin_to_close_p99_us=%.1f "
		       "fin_to_close_max_us=%.1f last_fin_to_last_close_us=%.1f failed=%d\n", name,
		       n, line, pct(lat, n, 0.5) / 1e3, pct(lat, n, 0.99) / 1e3, lat[n - 1] / 1e3,
		       tail / 1e3, bad);
	}
	ctl_write(sv[0], "exit\n");
	ctl_read(sv[0], line, sizeof(line));
	printf("%s\n", line);
	if (waitpid(pid, &status, 0) < 0 || !WIFEXITED(status) || WEXITSTATUS(status))
		fprintf(stderr, "deferscale: closer ended with status %d\n", status);
	return 0;
}

int main(int argc, char **argv)
{
	if (argc >= 6 && !strcmp(argv[1], "peer") && !strcmp(argv[4], "--") &&
	    atoi(argv[3]) > 0 && atoi(argv[3]) <= MAX_N)
		return peer(atoi(argv[2]), atoi(argv[3]), argv + 5);
	if ((argc == 4 || argc == 5) && !strcmp(argv[1], "closer") && atoi(argv[3]) > 0)
		return closer(atoi(argv[2]), atoi(argv[3]),
			      argc == 5 && !strcmp(argv[4], "--manual"));
	fprintf(stderr, "usage: deferscale peer PORT N -- CLOSER_COMMAND... | "
		"deferscale closer PORT N [--manual]\n");
	return 2;
}
