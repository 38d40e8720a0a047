// SPDX-License-Identifier: MIT
/*
 * tw-stress: the programs of the stress, fault and compatibility tests. Each
 * mode does one hostile thing to the preload library while it makes TCP
 * connections to tw-server (or to itself), and prints one summary line of
 * key=value pairs that the tests read:
 *
 *   fork-race ADDR    client threads connect and close while another thread
 *                     forks children that exit or exec at once
 *   fork-hold ADDR    makes a socket, forks, and connects it in the parent,
 *                     which closes it while the child still holds it (the
 *                     child then exits or execs after --child-ms); with
 *                     --child-connects the child connects and closes it
 *                     while the parent holds it, and the parent closes it
 *                     once the child is gone
 *   signals ADDR      serves on ADDR and connects to itself while a thread
 *                     sends a signal every --signal-us to every other thread,
 *                     interrupting connect, accept, read and close
 *   sweep ADDR        makes connections whose closes are deferred, then
 *                     closes every fd (--how close_range, closefrom, procfd,
 *                     loop, logfd, dup2log), then makes more
 *   spawn ADDR        makes connections and, between them, starts children
 *                     with posix_spawn, vfork + exec and system()
 *   handler-close ADDR
 *                     connects to itself and closes both ends, the server's
 *                     first, one pair after the other, while a thread sends
 *                     it a signal every --signal-us whose handler closes a
 *                     server end left for it (a close in a signal handler,
 *                     which may interrupt a close of the main thread)
 *   handler-exit ADDR connects to itself and closes both ends, the server's
 *                     first, until a SIGUSR1 arrives, whose handler ends the
 *                     process with _exit(0) (exit status 3 if none came):
 *                     a handler that ends the process from inside a close
 *   cancel ADDR       makes connections and has each closed by a thread with
 *                     a cancel pending: close() is a cancellation point, so
 *                     the thread ends there and the fd stays open (as libc
 *                     does it); then closes it again, from the main thread
 *
 * Every wait is bounded (SO_RCVTIMEO/SO_SNDTIMEO, poll timeouts, counts).
 * Exit status: 0 when every connection succeeded, 1 otherwise, 2 on a usage
 * error.
 */
#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <spawn.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define PROG		"tw-stress"
#define IO_MS		5000
#define MAX_THREADS	64

extern char **environ;

struct opts {
	const char *mode;
	struct sockaddr_storage addr;
	socklen_t addrlen;
	int threads;		/* client threads */
	int acceptors;		/* signals: accepting threads */
	long count;		/* connections per client thread */
	int signal_us;		/* signals: period */
	const char *how;	/* sweep: how every fd is closed */
	const char *log;	/* sweep logfd/dup2log: the log file to find */
	int child_ms;		/* spawn/fork-race: how long children live */
	bool inherit;		/* sockets without SOCK_CLOEXEC: children inherit them */
	bool child_connects;	/* fork-hold: the child connects, not the parent */
	int sleep_end_ms;	/* before the final fd count */
};

static struct opts o = {
	.threads = 1,
	.acceptors = 2,
	.count = 1,
	.signal_us = 100,
	.how = "close_range",
	.sleep_end_ms = 0,
};

static _Atomic long n_ok, n_failed, n_served, n_serve_failed;
static _Atomic long n_connect_eintr, n_accept_eintr, n_io_eintr, n_close_fail, n_errno_changed;
static _Atomic long n_signals, n_forks, n_children_failed;
static _Atomic long n_cancelled, n_kept_open, n_handler_closes;
static _Atomic int errno_seen;	/* the last errno a successful call left behind */
static const char *_Atomic errno_where;	/* and which call it was */
static _Atomic int first_error;
static _Atomic bool done;

static void usage(void)
{
	fprintf(stderr,
"Usage: " PROG " MODE [OPTIONS] ADDR:PORT\n"
"Modes: fork-race, fork-hold, signals, handler-close, handler-exit, sweep, spawn,\n"
"cancel (see the source).\n"
"  --threads N        client threads (default 1)\n"
"  --acceptors N      signals: accepting threads (default 2)\n"
"  -n N               connections per client thread (default 1)\n"
"  --signal-us US     signals, handler-close: period of the signals (default 100)\n"
"  --how HOW          sweep: close_range, closefrom, procfd, loop, logfd, dup2log\n"
"  --log PATH         sweep logfd/dup2log: the log file the library writes\n"
"  --child-ms MS      spawn, fork-race: how long each child lives\n"
"  --inherit          sockets without SOCK_CLOEXEC\n"
"  --child-connects   fork-hold: the child connects and closes first\n"
"  --sleep-end MS     wait MS before the final fd count\n");
	exit(2);
}

static long num(const char *s, long min, long max)
{
	char *end;
	long v;

	errno = 0;
	v = strtol(s, &end, 10);
	if (errno || end == s || *end || v < min || v > max) {
		fprintf(stderr, PROG ": bad number '%s'\n", s);
		exit(2);
	}
	return v;
}

static int parse_addr(const char *text)
{
	struct sockaddr_in *s4 = (struct sockaddr_in *)&o.addr;
	struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&o.addr;
	char host[64];
	const char *colon = strrchr(text, ':');
	size_t hl;

	if (!colon || colon == text)
		return -1;
	hl = (size_t)(colon - text);
	if (text[0] == '[') {
		if (hl < 2 || text[hl - 1] != ']' || hl - 2 >= sizeof(host))
			return -1;
		memcpy(host, text + 1, hl - 2);
		host[hl - 2] = 0;
		s6->sin6_family = AF_INET6;
		s6->sin6_port = htons((uint16_t)num(colon + 1, 1, 65535));
		o.addrlen = sizeof(*s6);
		return inet_pton(AF_INET6, host, &s6->sin6_addr) == 1 ? 0 : -1;
	}
	if (hl >= sizeof(host))
		return -1;
	memcpy(host, text, hl);
	host[hl] = 0;
	s4->sin_family = AF_INET;
	s4->sin_port = htons((uint16_t)num(colon + 1, 1, 65535));
	o.addrlen = sizeof(*s4);
	return inet_pton(AF_INET, host, &s4->sin_addr) == 1 ? 0 : -1;
}

static void note_error(int err)
{
	int zero = 0;

	atomic_compare_exchange_strong(&first_error, &zero, err);
}

static void set_timeouts(int fd)
{
	struct timeval tv = { IO_MS / 1000, (IO_MS % 1000) * 1000 };

	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
}

/* write all of buf; EINTR is retried (and counted) */
static int write_all(int fd, const char *buf, size_t len)
{
	while (len) {
		ssize_t n = write(fd, buf, len);

		if (n < 0 && errno == EINTR) {
			n_io_eintr++;
			continue;
		}
		if (n <= 0)
			return n < 0 ? -errno : -EPIPE;
		buf += n;
		len -= (size_t)n;
	}
	return 0;
}

/* reads until a newline; returns 0, -errno, or -ENODATA at EOF */
static int read_line(int fd)
{
	char buf[512];

	for (;;) {
		ssize_t n = read(fd, buf, sizeof(buf));

		if (n < 0 && errno == EINTR) {
			n_io_eintr++;
			continue;
		}
		if (n < 0)
			return -errno;
		if (n == 0)
			return -ENODATA;
		if (memchr(buf, '\n', (size_t)n))
			return 0;
	}
}

/*
 * connect(), and when a signal interrupts it (EINTR), wait for the
 * connection the kernel goes on making, as connect(2) says to.
 */
static int connect_bounded(int fd)
{
	struct pollfd p = { .fd = fd, .events = POLLOUT };
	socklen_t l = sizeof(int);
	int err = 0, r;

	errno = 4242;
	if (connect(fd, (struct sockaddr *)&o.addr, o.addrlen) == 0) {
		if (errno != 4242) {
			n_errno_changed++;
			errno_seen = errno;
			errno_where = "connect";
		}
		return 0;
	}
	if (errno != EINTR)
		return -errno;
	n_connect_eintr++;
	for (int i = 0; i < 1000; i++) {
		r = poll(&p, 1, IO_MS);
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0)
			return r == 0 ? -ETIMEDOUT : -errno;
		break;
	}
	if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &l) < 0)
		return -errno;
	return -err;
}

/* close() must return 0 and leave errno alone on success, whatever the library does */
static void close_checked(int fd)
{
	errno = 4242;
	if (close(fd) < 0) {
		n_close_fail++;
		note_error(errno);
		return;
	}
	if (errno != 4242) {
		n_errno_changed++;
		errno_seen = errno;
		errno_where = "close";
	}
}

static int new_socket(void)
{
	return socket(o.addr.ss_family, SOCK_STREAM | (o.inherit ? 0 : SOCK_CLOEXEC), 0);
}

/* On a new socket: connect, a request line, the reply line, close first. */
static int use_conn(int fd)
{
	int err;

	set_timeouts(fd);
	err = connect_bounded(fd);
	if (!err)
		err = write_all(fd, "req\n", 4);
	if (!err)
		err = read_line(fd);
	close_checked(fd);
	return err;
}

static int one_conn(void)
{
	int fd = new_socket();

	return fd < 0 ? -errno : use_conn(fd);
}

static void count_result(int err)
{
	if (!err) {
		n_ok++;
		return;
	}
	n_failed++;
	note_error(-err);
}

static _Atomic int clients_done;

static void *client_thread(void *arg)
{
	(void)arg;
	for (long i = 0; i < o.count; i++)
		count_result(one_conn());
	clients_done++;
	return NULL;
}

/* sockets and all fds in /proc/self/fd, the directory's own fd left out */
static void count_fds(long *fds, long *sockets)
{
	DIR *d = opendir("/proc/self/fd");
	struct dirent *e;

	*fds = *sockets = 0;
	if (!d)
		return;
	while ((e = readdir(d))) {
		struct stat st;
		int fd;

		if (e->d_name[0] == '.')
			continue;
		fd = atoi(e->d_name);
		if (fd == dirfd(d))
			continue;
		(*fds)++;
		if (fstat(fd, &st) == 0 && S_ISSOCK(st.st_mode))
			(*sockets)++;
	}
	closedir(d);
}

static void sleep_ms(int ms)
{
	struct timespec ts = { ms / 1000, (ms % 1000) * 1000000L };

	while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
		;
}

static int run_clients(void)
{
	pthread_t t[MAX_THREADS];

	for (int i = 0; i < o.threads; i++)
		if (pthread_create(&t[i], NULL, client_thread, NULL)) {
			fprintf(stderr, PROG ": pthread_create failed\n");
			exit(1);
		}
	for (int i = 0; i < o.threads; i++)
		pthread_join(t[i], NULL);
	return 0;
}

/* -- fork-race ------------------------------------------------------------ */

/* A forked child's end: _exit(), exit() or an exec of /bin/true, by k. */
static void child_end(long k, int status)
{
	static char *const true_argv[] = { (char *)"true", NULL };

	switch (k % 3) {
	case 0:
		_exit(status);
	case 1:
		exit(status);
	default:
		if (!status)
			execve("/bin/true", true_argv, environ);
		_exit(status ? status : 127);
	}
}

/*
 * Forks until the clients are done. Children alternate between _exit()
 * after child_ms, exit() (the library's destructor runs in the child) and
 * exec of /bin/true (the library is loaded again in the child).
 */
static void *forker_thread(void *arg)
{
	long k = 0;

	(void)arg;
	while (!atomic_load(&done) && k < 100000) {
		pid_t pid = fork();
		int status;

		if (pid < 0) {
			n_children_failed++;
			sleep_ms(1);
			continue;
		}
		if (pid == 0) {
			if (o.child_ms)
				sleep_ms((int)(k % (o.child_ms + 1)));
			child_end(k, 0);
		}
		k++;
		n_forks++;
		if (waitpid(pid, &status, 0) != pid || !WIFEXITED(status) ||
		    WEXITSTATUS(status) != 0)
			n_children_failed++;
	}
	return NULL;
}

/* -- fork-hold ------------------------------------------------------------ */

static int mode_fork_hold(void)
{
	for (long i = 0; i < o.count; i++) {
		int fd = new_socket(), status, err = 0;
		pid_t pid;

		if (fd < 0) {
			count_result(-errno);
			continue;
		}
		pid = fork();
		if (pid < 0) {
			n_children_failed++;
			close(fd);
			continue;
		}
		if (pid == 0) {
			if (o.child_connects)
				child_end(i, use_conn(fd) ? 1 : 0);
			sleep_ms(o.child_ms);
			child_end(i, 0);
		}
		n_forks++;
		if (!o.child_connects)
			err = use_conn(fd);
		if (waitpid(pid, &status, 0) != pid || !WIFEXITED(status) ||
		    WEXITSTATUS(status) != 0)
			n_children_failed++;
		if (o.child_connects)
			close_checked(fd);
		count_result(err);
	}
	return 0;
}

static int mode_fork_race(void)
{
	pthread_t f;

	pthread_create(&f, NULL, forker_thread, NULL);
	run_clients();
	atomic_store(&done, true);
	pthread_join(f, NULL);
	return 0;
}

/* -- signals -------------------------------------------------------------- */

static pthread_t workers[MAX_THREADS * 2];
static _Atomic int nworkers;
static int listen_fd = -1;

static void on_signal(int sig)
{
	(void)sig;
	n_signals++;
}

/* serves until done: accept (EINTR counted), a line, a reply, close */
static void *acceptor_thread(void *arg)
{
	static const char reply[] = "reply\n";

	(void)arg;
	while (!atomic_load(&done)) {
		int fd, err;

		/* blocking: a signal interrupts it; shutdown() of the listener ends it */
		errno = 4242;
		fd = accept4(listen_fd, NULL, NULL, SOCK_CLOEXEC);
		if (fd < 0) {
			if (errno == EINTR)
				n_accept_eintr++;
			else if (!atomic_load(&done))
				note_error(errno);
			continue;
		}
		if (errno != 4242) {
			n_errno_changed++;
			errno_seen = errno;
			errno_where = "accept";
		}
		set_timeouts(fd);
		err = read_line(fd);
		if (!err)
			err = write_all(fd, reply, sizeof(reply) - 1);
		close_checked(fd);
		if (err) {
			n_serve_failed++;
			note_error(-err);
		} else {
			n_served++;
		}
	}
	return NULL;
}

static void *signal_thread(void *arg)
{
	struct timespec ts = { 0, o.signal_us * 1000L };
	unsigned i = 0;

	(void)arg;
	while (!atomic_load(&done)) {
		int n = atomic_load(&nworkers);

		if (n)
			pthread_kill(workers[i++ % (unsigned)n], SIGUSR1);
		clock_nanosleep(CLOCK_MONOTONIC, 0, &ts, NULL);
	}
	return NULL;
}

/* SIGUSR1 to handler (flags: SA_RESTART or 0), and listen_fd on the address; 0 or -1 */
static int signals_and_listener(void (*handler)(int), int flags)
{
	struct sigaction sa = { .sa_handler = handler, .sa_flags = flags };
	int one = 1;

	sigemptyset(&sa.sa_mask);
	sigaction(SIGUSR1, &sa, NULL);
	listen_fd = socket(o.addr.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
	setsockopt(listen_fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (listen_fd < 0 || bind(listen_fd, (struct sockaddr *)&o.addr, o.addrlen) < 0 ||
	    listen(listen_fd, 4096) < 0) {
		fprintf(stderr, PROG ": listen: %s\n", strerror(errno));
		return -1;
	}
	return 0;
}

static int mode_signals(void)
{
	pthread_t sig, cl[MAX_THREADS];

	/* no SA_RESTART: every interrupted call returns EINTR */
	if (signals_and_listener(on_signal, 0) < 0)
		return 1;
	for (int i = 0; i < o.acceptors; i++)
		pthread_create(&workers[atomic_fetch_add(&nworkers, 1)], NULL, acceptor_thread,
			       NULL);
	for (int i = 0; i < o.threads; i++) {
		pthread_create(&cl[i], NULL, client_thread, NULL);
		workers[atomic_fetch_add(&nworkers, 1)] = cl[i];
	}
	pthread_create(&sig, NULL, signal_thread, NULL);
	/*
	 * No thread is joined while the signals go on: pthread_kill() of a
	 * thread that exited is fine until it is joined, not after.
	 */
	for (int i = 0; i < 6000 && clients_done < o.threads; i++)
		sleep_ms(20);
	/* the acceptors finish what is queued, then stop */
	for (int i = 0; i < 250 && n_served + n_serve_failed < n_ok + n_failed; i++)
		sleep_ms(20);
	atomic_store(&done, true);
	pthread_join(sig, NULL);
	shutdown(listen_fd, SHUT_RDWR);
	for (int i = 0; i < o.threads; i++)
		pthread_join(cl[i], NULL);
	for (int i = 0; i < o.acceptors; i++)
		pthread_join(workers[i], NULL);
	close_checked(listen_fd);
	return 0;
}

/* -- handler-close -------------------------------------------------------- */

static _Atomic int handler_fd = -1;	/* a server end left for the handler to close */

static void on_signal_close(int sig)
{
	int fd = atomic_exchange(&handler_fd, -1), e = errno;

	(void)sig;
	n_signals++;
	if (fd >= 0) {
		close_checked(fd);
		n_handler_closes++;
	}
	errno = e;
}

/* a connection to itself: the client end in *c, the server end in *s; 0 or -errno */
static int self_pair(int *c, int *s)
{
	int err;

	*c = new_socket();
	if (*c < 0)
		return -errno;
	err = connect_bounded(*c);
	*s = err ? -1 : accept4(listen_fd, NULL, NULL, SOCK_CLOEXEC);
	if (!err && *s < 0)
		err = -errno;
	if (err)
		close_checked(*c);
	return err;
}

static int mode_handler_close(void)
{
	int peer = -1, fd;
	pthread_t sig;

	if (signals_and_listener(on_signal_close, SA_RESTART) < 0)
		return 1;
	workers[0] = pthread_self();
	atomic_store(&nworkers, 1);
	pthread_create(&sig, NULL, signal_thread, NULL);
	for (long i = 0; i < o.count; i++) {
		int c, s, err = self_pair(&c, &s);

		count_result(err);
		if (err)
			continue;
		if (atomic_load(&handler_fd) < 0) {
			/* the handler closed the last one left for it: its peer's FIN now */
			if (peer >= 0)
				close_checked(peer);
			peer = c;
			atomic_store(&handler_fd, s);
			continue;
		}
		close_checked(s);	/* deferred: the peer's FIN follows at once */
		close_checked(c);
	}
	atomic_store(&done, true);
	pthread_join(sig, NULL);
	fd = atomic_exchange(&handler_fd, -1);
	if (fd >= 0)
		close_checked(fd);
	if (peer >= 0)
		close_checked(peer);
	close_checked(listen_fd);
	return 0;
}

/* -- handler-exit --------------------------------------------------------- */

static void on_signal_exit(int sig)
{
	(void)sig;
	_exit(0);
}

static int mode_handler_exit(void)
{
	if (signals_and_listener(on_signal_exit, SA_RESTART) < 0)
		return 1;
	for (long i = 0; i < o.count; i++) {
		int c, s, err = self_pair(&c, &s);

		count_result(err);
		if (err)
			continue;
		close_checked(s);	/* deferred: the peer's FIN follows at once */
		close_checked(c);
	}
	close_checked(listen_fd);
	return 3;
}

/* -- sweep ---------------------------------------------------------------- */

/* the fd whose /proc/self/fd link names path, or -1 */
static int find_fd_of(const char *path)
{
	DIR *d = opendir("/proc/self/fd");
	struct dirent *e;
	int found = -1;

	if (!d)
		return -1;
	while ((e = readdir(d))) {
		char link[300], target[PATH_MAX];
		ssize_t n;

		if (e->d_name[0] == '.')
			continue;
		snprintf(link, sizeof(link), "/proc/self/fd/%s", e->d_name);
		n = readlink(link, target, sizeof(target) - 1);
		if (n < 0)
			continue;
		target[n] = 0;
		if (!strcmp(target, path)) {
			found = atoi(e->d_name);
			break;
		}
	}
	closedir(d);
	return found;
}

/* closes every fd from 3 up the way --how says; returns how many close() calls failed */
static long sweep(void)
{
	long failed = 0;

	if (!strcmp(o.how, "close_range")) {
		if (close_range(3, ~0u, 0) < 0)
			failed++;
	} else if (!strcmp(o.how, "closefrom")) {
		closefrom(3);
	} else if (!strcmp(o.how, "procfd")) {
		/* as daemons do: list first, then close what was listed */
		int fds[4096], n = 0;
		DIR *d = opendir("/proc/self/fd");
		struct dirent *e;

		while (d && (e = readdir(d)) && n < 4096) {
			int fd = atoi(e->d_name);

			if (e->d_name[0] != '.' && fd > 2 && fd != dirfd(d))
				fds[n++] = fd;
		}
		if (d)
			closedir(d);
		for (int i = 0; i < n; i++)
			if (close(fds[i]) < 0 && errno != EBADF)
				failed++;
	} else if (!strcmp(o.how, "loop")) {
		struct rlimit rl;
		long top = 65536;

		if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < (rlim_t)top)
			top = (long)rl.rlim_cur;
		for (long fd = 3; fd < top; fd++)
			if (close((int)fd) < 0 && errno != EBADF)
				failed++;
	} else if (!strcmp(o.how, "logfd") || !strcmp(o.how, "dup2log")) {
		int fd = o.log ? find_fd_of(o.log) : -1;

		/* the library opens its log at the first record: wait for one (3 s at most) */
		for (int i = 0; fd < 0 && o.log && i < 300; i++) {
			usleep(10000);
			fd = find_fd_of(o.log);
		}
		printf("log_fd=%d\n", fd);
		if (fd < 0)
			return 1;
		if (!strcmp(o.how, "logfd")) {
			if (close(fd) < 0)
				failed++;
		} else {
			int nul = open("/dev/null", O_WRONLY | O_CLOEXEC);

			if (nul < 0 || dup2(nul, fd) != fd)
				failed++;
			close(nul);
			/* the program now owns fd: writing to it must reach /dev/null only */
			if (write(fd, "program\n", 8) != 8)
				failed++;
			close(fd);
		}
	} else {
		usage();
	}
	return failed;
}

static int mode_sweep(void)
{
	long failed;

	run_clients();
	failed = sweep();
	printf("sweep=%s sweep_failed=%ld\n", o.how, failed);
	fflush(stdout);
	run_clients();
	return failed ? 1 : 0;
}

/* -- spawn ---------------------------------------------------------------- */

/* vfork and exec; the exit status of the child or -1 */
static int vfork_exec(char *const argv[])
{
	pid_t pid = vfork();
	int status;

	if (pid == 0) {
		execve(argv[0], argv, environ);
		_exit(127);
	}
	if (pid < 0 || waitpid(pid, &status, 0) != pid || !WIFEXITED(status))
		return -1;
	return WEXITSTATUS(status);
}

/* one child of each kind; returns how many did not exit 0 */
static long spawn_children(void)
{
	char ms[32];
	char *argv_sleep[] = { (char *)"/bin/sleep", ms, NULL };
	long bad = 0;
	pid_t pid;
	int status;

	snprintf(ms, sizeof(ms), "%d.%03d", o.child_ms / 1000, o.child_ms % 1000);
	if (posix_spawn(&pid, "/bin/sleep", NULL, NULL, argv_sleep, environ) != 0 ||
	    waitpid(pid, &status, 0) != pid || !WIFEXITED(status) || WEXITSTATUS(status))
		bad++;
	if (vfork_exec(argv_sleep) != 0)
		bad++;
	if (system("exit 0") != 0)
		bad++;
	n_forks += 3;
	return bad;
}

/*
 * Between connections a child of each kind starts; with --inherit each
 * child is started while a connection is open and holds a copy of it.
 */
static int mode_spawn(void)
{
	for (long i = 0; i < o.count; i++) {
		int type = SOCK_STREAM | (o.inherit ? 0 : SOCK_CLOEXEC);
		int fd = socket(o.addr.ss_family, type, 0), err;

		if (fd < 0) {
			count_result(-errno);
			continue;
		}
		set_timeouts(fd);
		err = connect_bounded(fd);
		if (!err)
			err = write_all(fd, "req\n", 4);
		if (!err)
			err = read_line(fd);
		n_children_failed += spawn_children();
		close_checked(fd);
		count_result(err);
	}
	return 0;
}

/* -- cancel --------------------------------------------------------------- */

struct canceled_close {
	int fd;
	_Atomic bool pending;	/* the cancel has been sent */
};

static void *closing_thread(void *arg)
{
	struct canceled_close *cc = arg;
	int old;

	pthread_setcancelstate(PTHREAD_CANCEL_DISABLE, &old);
	for (int i = 0; i < 5000 && !atomic_load(&cc->pending); i++)
		sleep_ms(1);
	pthread_setcancelstate(PTHREAD_CANCEL_ENABLE, &old);
	close(cc->fd);		/* the pending cancel acts here */
	return NULL;
}

static int mode_cancel(void)
{
	for (long i = 0; i < o.count; i++) {
		struct canceled_close cc = { .fd = socket(o.addr.ss_family, SOCK_STREAM, 0) };
		pthread_t t;
		void *ret = NULL;
		int err;

		if (cc.fd < 0) {
			count_result(-errno);
			continue;
		}
		set_timeouts(cc.fd);
		err = connect_bounded(cc.fd);
		if (!err)
			err = write_all(cc.fd, "req\n", 4);
		if (!err)
			err = read_line(cc.fd);
		if (pthread_create(&t, NULL, closing_thread, &cc) == 0) {
			pthread_cancel(t);
			atomic_store(&cc.pending, true);
			pthread_join(t, &ret);
			if (ret == PTHREAD_CANCELED)
				n_cancelled++;
		}
		if (fcntl(cc.fd, F_GETFD) >= 0)
			n_kept_open++;
		close_checked(cc.fd);
		count_result(err);
	}
	return 0;
}

int main(int argc, char **argv)
{
	long fds_start, sockets_start, fds_end, sockets_end;
	const char *addr = NULL;
	int rc;

	count_fds(&fds_start, &sockets_start);
	if (argc < 3)
		usage();
	o.mode = argv[1];
	for (int i = 2; i < argc; i++) {
		const char *a = argv[i];

		if (!strcmp(a, "--threads") && i + 1 < argc)
			o.threads = (int)num(argv[++i], 1, MAX_THREADS);
		else if (!strcmp(a, "--acceptors") && i + 1 < argc)
			o.acceptors = (int)num(argv[++i], 1, MAX_THREADS);
		else if (!strcmp(a, "-n") && i + 1 < argc)
			o.count = num(argv[++i], 0, 10000000);
		else if (!strcmp(a, "--signal-us") && i + 1 < argc)
			o.signal_us = (int)num(argv[++i], 1, 1000000);
		else if (!strcmp(a, "--how") && i + 1 < argc)
			o.how = argv[++i];
		else if (!strcmp(a, "--log") && i + 1 < argc)
			o.log = argv[++i];
		else if (!strcmp(a, "--child-ms") && i + 1 < argc)
			o.child_ms = (int)num(argv[++i], 0, 60000);
		else if (!strcmp(a, "--sleep-end") && i + 1 < argc)
			o.sleep_end_ms = (int)num(argv[++i], 0, 600000);
		else if (!strcmp(a, "--inherit"))
			o.inherit = true;
		else if (!strcmp(a, "--child-connects"))
			o.child_connects = true;
		else if (!strcmp(a, "--"))
			continue;
		else if (a[0] != '-' && !addr)
			addr = a;
		else
			usage();
	}
	if (!addr || parse_addr(addr) < 0)
		usage();
	signal(SIGPIPE, SIG_IGN);

	if (!strcmp(o.mode, "fork-race"))
		rc = mode_fork_race();
	else if (!strcmp(o.mode, "fork-hold"))
		rc = mode_fork_hold();
	else if (!strcmp(o.mode, "signals"))
		rc = mode_signals();
	else if (!strcmp(o.mode, "handler-close"))
		rc = mode_handler_close();
	else if (!strcmp(o.mode, "handler-exit"))
		rc = mode_handler_exit();
	else if (!strcmp(o.mode, "sweep"))
		rc = mode_sweep();
	else if (!strcmp(o.mode, "spawn"))
		rc = mode_spawn();
	else if (!strcmp(o.mode, "cancel"))
		rc = mode_cancel();
	else
		usage();

	if (o.sleep_end_ms)
		sleep_ms(o.sleep_end_ms);
	count_fds(&fds_end, &sockets_end);
	printf("ok=%ld failed=%ld served=%ld serve_failed=%ld connect_eintr=%ld "
	       "accept_eintr=%ld io_eintr=%ld close_fail=%ld errno_changed=%ld signals=%ld "
	       "forks=%ld children_failed=%ld cancelled=%ld kept_open=%ld handler_closes=%ld "
	       "first_error=%s "
	       "errno_seen=%s errno_where=%s "
	       "fds_start=%ld fds_end=%ld sockets_start=%ld sockets_end=%ld\n",
	       n_ok, n_failed, n_served, n_serve_failed, n_connect_eintr, n_accept_eintr,
	       n_io_eintr, n_close_fail, n_errno_changed, n_signals, n_forks,
	       n_children_failed, n_cancelled, n_kept_open, n_handler_closes, first_error ? strerrorname_np(first_error) : "",
	       errno_seen == 4242 ? "4242" : errno_seen ? strerrorname_np(errno_seen) : "",
	       errno_where ? errno_where : "",
	       fds_start, fds_end, sockets_start, sockets_end);
	fflush(stdout);
	if (rc)
		return rc;
	return n_failed || n_serve_failed || n_close_fail ? 1 : 0;
}
