// SPDX-License-Identifier: MIT
/*
 * tw-runtime: host programs that use what a process expects to have to
 * itself (its threads, fds, address space, children) while the library
 * holds deferred connections. Each mode connects to itself on 127.0.0.1 (a
 * listener of its own, port from the kernel) and prints one line of
 * key=value pairs:
 *
 *   connect N         makes and closes N connections, the client's close
 *                     first, then the server's FIN (ok=N)
 *   closefrom         one connection, then a forked child calls closefrom(3):
 *                     faults= the child's minor page faults in that call
 *   malloc MIB        one connection, then malloc(MIB MiB): ok=1 or ok=0
 *   closer-fds        one deferred connection, then the raw close_range
 *                     system call over the library's epoll and eventfd (found
 *                     in /proc/self/fd); then cpu_ms= the process's CPU time
 *                     in the next second, and a second connection
 *   unshare           one deferred connection, then unshare(CLONE_NEWUSER):
 *                     unshare=0 or the errno; then a second connection
 *   unshare-files     one connection closed first (deferred), then
 *                     unshare(CLONE_FILES): unshare=0 or the errno; then its
 *                     server end's FIN, and eof_ms= until that end read the
 *                     end of the stream; then a second connection
 *   clone-child       clone() with no fn: clone_null= its errno; then one
 *                     connection closed first (deferred), then a child made
 *                     by clone() without CLONE_VM, on a 4 KiB stack, that
 *                     sleeps 1 s; then
 *                     the connection's server end sends its FIN: eof_ms= until
 *                     it read the end of the stream; then a second connection
 *   fork-server       accepts, forks; the parent closes its copy, the child
 *                     closes the connection and exits; the peer then sends
 *                     its FIN (a forking server)
 *   fork-exec N       holds N accepted and N client connections
 *                     (close-on-exec), forks, and the child execs /bin/true
 *   exec-client       execs itself as "hold FD" with a client connection
 *                     open across the exec; the listener's port is the
 *                     kernel's pick from the ephemeral range
 *   hold FD           (after exec-client) closes FD and exits
 *   fds N             at RLIMIT_NOFILE: opens N connections, closes them,
 *                     then opens /dev/null until EMFILE: opened=
 *   fork-signal-exit N
 *                     one deferred connection; then N children, each of
 *                     which forks (and reaps) in a loop until a SIGALRM
 *                     1 to 21 ms away runs a handler that calls _exit(3):
 *                     exit3= the children that ended so, hung= those still
 *                     there after 3 s (killed)
 *   main-exits        one deferred connection; a thread that returns after
 *                     100 ms; then the main thread's pthread_exit(): the
 *                     last thread's end ends the process (exit(0)), whose
 *                     exit handler prints atexit=1
 *   nofile-lowered    soft = hard = 4096 (setrlimit), one connection
 *                     closed; then soft = hard = 2048 by the raw prlimit64
 *                     system call, and a second: first= and second= the
 *                     fd that holds each socket after its close (-1: none)
 *   dup2-eventfd FILE one deferred connection; with every fd taken, dup2s
 *                     FILE (which holds "data\n") onto the closer's eventfd;
 *                     then a second deferred connection: size= FILE's size
 *
 * Every wait is bounded. Exit status: 0 done, 1 a call failed, 2 usage.
 */
#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static struct sockaddr_in where;

static void fail(const char *what)
{
	printf("error=%s errno=%s\n", what, strerrorname_np(errno));
	fflush(stdout);
	exit(1);
}

static int listener(void)
{
	socklen_t l = sizeof(where);
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

	where.sin_family = AF_INET;
	where.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if (fd < 0 || bind(fd, (struct sockaddr *)&where, sizeof(where)) < 0 ||
	    listen(fd, 4096) < 0 || getsockname(fd, (struct sockaddr *)&where, &l) < 0)
		fail("listen");
	return fd;
}

static int dial_flags(int flags)
{
	int fd = socket(AF_INET, SOCK_STREAM | flags, 0);

	if (fd < 0 || connect(fd, (struct sockaddr *)&where, sizeof(where)) < 0)
		fail("connect");
	return fd;
}

static int dial(void)
{
	return dial_flags(SOCK_CLOEXEC);
}

static int take(int l)
{
	int fd = accept4(l, NULL, NULL, SOCK_CLOEXEC);

	if (fd < 0)
		fail("accept");
	return fd;
}

/* closes fd; returns the fd that still holds its socket (a deferral's copy), or -1 */
static long copy_of(int fd)
{
	struct stat st, other;
	long found = -1;
	DIR *d;
	struct dirent *e;

	if (fstat(fd, &st) < 0)
		fail("fstat");
	close(fd);
	d = opendir("/proc/self/fd");
	while (d && (e = readdir(d))) {
		int n = atoi(e->d_name);

		if (e->d_name[0] != '.' && n != dirfd(d) && fstat(n, &other) == 0 &&
		    other.st_ino == st.st_ino && other.st_dev == st.st_dev)
			found = n;
	}
	if (d)
		closedir(d);
	return found;
}

static double now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

static int sleep_1s(void *arg)
{
	(void)arg;
	usleep(1000000);
	return 0;
}

/* waits up to ms for fd to become readable; reads what is there */
static void await(int fd, int ms)
{
	struct pollfd p = { .fd = fd, .events = POLLIN };
	char buf[256];

	if (poll(&p, 1, ms) == 1 && read(fd, buf, sizeof(buf)) < 0) {
		/* a reset: the record says so */
	}
}

/*
 * One connection to itself: the client closes first (deferred under defer),
 * then the server sends its FIN with shutdown() (its close would be deferred
 * too, and each side would wait for the other's FIN), reads the end of the
 * stream (bounded) and closes.
 */
static void one(int l)
{
	int a = dial(), b = take(l);

	close(a);
	shutdown(b, SHUT_WR);
	await(b, 3000);
	close(b);
}

/* A connection whose client end is closed first (deferred under defer): its server end. */
static int deferred_one(int l)
{
	int a = dial(), b = take(l);

	close(a);
	return b;
}

/* The server end b sends its FIN: eof_ms= until it read the end of the stream; closes it. */
static void fin_timed(int b)
{
	double t0 = now_ms();

	shutdown(b, SHUT_WR);
	await(b, 3000);
	printf("eof_ms=%.0f\n", now_ms() - t0);
	fflush(stdout);
	close(b);
}

static long cpu_ms(void)
{
	struct rusage ru;

	getrusage(RUSAGE_SELF, &ru);
	return (ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) * 1000 +
	       (ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1000;
}

/*
 * Closes the closer's epoll and eventfd (the fds linked to an anonymous
 * inode) by the raw system call, all at once, as close_range(3, ~0) would.
 */
static int raw_close_anon(void)
{
	DIR *d = opendir("/proc/self/fd");
	struct dirent *e;
	char path[64], link[128];
	int fds[16], n = 0;

	if (!d)
		fail("opendir");
	while ((e = readdir(d)) && n < 16) {
		int fd = atoi(e->d_name);
		ssize_t k;

		if (e->d_name[0] == '.' || fd == dirfd(d))
			continue;
		snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
		k = readlink(path, link, sizeof(link) - 1);
		if (k <= 0)
			continue;
		link[k] = 0;
		if (!strcmp(link, "anon_inode:[eventpoll]") || !strcmp(link, "anon_inode:[eventfd]"))
			fds[n++] = fd;
	}
	closedir(d);
	for (int i = 0; i < n; i++)
		syscall(SYS_close_range, fds[i], fds[i], 0);
	return n;
}

static void exit3(int sig)
{
	(void)sig;
	_exit(3);
}

/* forks and reaps until the alarm's handler ends the process */
static void fork_until_alarm(unsigned seed)
{
	struct itimerval t = { .it_value = { 0, 1000 + (long)(rand_r(&seed) % 20000) } };

	signal(SIGALRM, exit3);
	setitimer(ITIMER_REAL, &t, NULL);
	for (;;) {
		pid_t pid = fork();

		if (pid == 0)
			_exit(0);
		if (pid > 0)
			waitpid(pid, NULL, 0);
	}
}

/* waits up to ms for pid: its status, or -1 (then it is killed and reaped) */
static int wait_bounded(pid_t pid, int ms)
{
	int st;

	for (int i = 0; i < ms; i++) {
		if (waitpid(pid, &st, WNOHANG) == pid)
			return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
		usleep(1000);
	}
	kill(pid, SIGKILL);
	waitpid(pid, &st, 0);
	return -1;
}

static void *sleep_100ms(void *arg)
{
	usleep(100000);
	return arg;
}

static void say_atexit(void)
{
	printf("atexit=1\n");
	fflush(stdout);
}

static int run(int argc, char **argv)
{
	const char *mode = argv[1];
	int l, a, b;

	if (!strcmp(mode, "hold") && argc > 2) {
		close(atoi(argv[2]));
		printf("ok=1\n");
		return 0;
	}
	l = listener();
	if (!strcmp(mode, "connect") && argc > 2) {
		int n = atoi(argv[2]);

		for (int i = 0; i < n; i++)
			one(l);
		printf("ok=%d\n", n);
		return 0;
	}
	if (!strcmp(mode, "closefrom")) {
		int st = 0;
		pid_t pid;

		one(l);
		fflush(stdout);
		pid = fork();
		if (pid < 0)
			fail("fork");
		if (pid == 0) {
			struct rusage r0, r1;

			getrusage(RUSAGE_SELF, &r0);
			closefrom(3);
			getrusage(RUSAGE_SELF, &r1);
			printf("faults=%ld\n", r1.ru_minflt - r0.ru_minflt);
			fflush(stdout);
			_exit(0);
		}
		waitpid(pid, &st, 0);
		return WIFEXITED(st) ? WEXITSTATUS(st) : 1;
	}
	if (!strcmp(mode, "malloc") && argc > 2) {
		size_t mib = strtoul(argv[2], NULL, 10);
		char *p;

		one(l);
		p = malloc(mib << 20);
		printf("ok=%d\n", p != NULL);
		free(p);
		return 0;
	}
	if (!strcmp(mode, "closer-fds")) {
		long c0, c1;
		int n;

		one(l);
		n = raw_close_anon();
		c0 = cpu_ms();
		usleep(1000000);
		c1 = cpu_ms();
		one(l);
		printf("closed=%d cpu_ms=%ld\n", n, c1 - c0);
		return 0;
	}
	if (!strcmp(mode, "unshare")) {
		int r;

		one(l);
		r = unshare(CLONE_NEWUSER);
		printf("unshare=%s\n", r == 0 ? "0" : strerrorname_np(errno));
		fflush(stdout);
		one(l);
		return 0;
	}
	if (!strcmp(mode, "unshare-files")) {
		int r;

		b = deferred_one(l);
		r = unshare(CLONE_FILES);
		printf("unshare=%s\n", r == 0 ? "0" : strerrorname_np(errno));
		fin_timed(b);
		one(l);
		return 0;
	}
	if (!strcmp(mode, "clone-child")) {
		/* a small stack, as runc's clone_parent() gives its child */
		static char stack[4096] __attribute__((aligned(16)));
		pid_t pid;
		int st, r;

		r = clone(NULL, stack + sizeof(stack), SIGCHLD, NULL);
		printf("clone_null=%s\n", r < 0 ? strerrorname_np(errno) : "a child");
		b = deferred_one(l);
		pid = clone(sleep_1s, stack + sizeof(stack), SIGCHLD, NULL);
		if (pid < 0)
			fail("clone");
		fin_timed(b);
		if (waitpid(pid, &st, 0) != pid || !WIFEXITED(st) || WEXITSTATUS(st) != 0)
			fail("clone child");
		one(l);
		return 0;
	}
	if (!strcmp(mode, "fork-server")) {
		int st = 0;
		pid_t pid;

		a = dial();
		b = take(l);
		pid = fork();
		if (pid < 0)
			fail("fork");
		if (pid == 0) {
			usleep(50000);	/* the parent has let go of its copy */
			close(b);
			_exit(0);
		}
		close(b);
		await(a, 200);	/* nothing comes: the child's close is deferred */
		shutdown(a, SHUT_WR);
		waitpid(pid, &st, 0);
		close(a);
		printf("ok=1\n");
		return 0;
	}
	if (!strcmp(mode, "fork-exec") && argc > 2) {
		int n = atoi(argv[2]), st = 0;
		pid_t pid;

		for (int i = 0; i < n; i++) {
			a = dial();
			b = take(l);
			(void)a;
			(void)b;
		}
		pid = fork();
		if (pid < 0)
			fail("fork");
		if (pid == 0) {
			execl("/bin/true", "true", (char *)NULL);
			_exit(127);
		}
		waitpid(pid, &st, 0);
		printf("ok=%d status=%d\n", n, WIFEXITED(st) ? WEXITSTATUS(st) : -1);
		return 0;
	}
	if (!strcmp(mode, "exec-client")) {
		char fd[16];

		a = dial_flags(0);
		b = take(l);
		(void)b;
		snprintf(fd, sizeof(fd), "%d", a);
		fflush(stdout);
		if (fork() == 0) {
			execl("/proc/self/exe", argv[0], "hold", fd, (char *)NULL);
			_exit(127);
		}
		close(a);
		await(b, 3000);
		close(b);
		wait(NULL);
		return 0;
	}
	if (!strcmp(mode, "nofile-lowered")) {
		struct rlimit rl = { 4096, 4096 };
		int c2, d2;
		long first, second;

		if (setrlimit(RLIMIT_NOFILE, &rl) < 0)
			fail("setrlimit");
		a = dial();
		b = take(l);
		first = copy_of(a);
		rl.rlim_cur = rl.rlim_max = 2048;
		if (syscall(SYS_prlimit64, 0, RLIMIT_NOFILE, &rl, NULL) < 0)
			fail("prlimit64");
		c2 = dial();
		d2 = take(l);
		second = copy_of(c2);
		printf("first=%ld second=%ld\n", first, second);
		await(b, 3000);
		await(d2, 3000);
		close(b);
		close(d2);
		return 0;
	}
	if (!strcmp(mode, "fds") && argc > 2) {
		int n = atoi(argv[2]), opened = 0, c[n > 0 ? n : 1], s[n > 0 ? n : 1];

		for (int i = 0; i < n; i++) {
			c[i] = dial();
			s[i] = take(l);
		}
		for (int i = 0; i < n; i++)
			close(c[i]);
		while (open("/dev/null", O_RDONLY) >= 0)
			opened++;
		printf("opened=%d errno=%s\n", opened, strerrorname_np(errno));
		for (int i = 0; i < n; i++)
			close(s[i]);
		return 0;
	}
	if (!strcmp(mode, "fork-signal-exit") && argc > 2) {
		int n = atoi(argv[2]), ok = 0, hung = 0;

		one(l);
		fflush(stdout);
		for (int i = 0; i < n; i++) {
			pid_t pid = fork();
			int st;

			if (pid < 0)
				fail("fork");
			if (pid == 0)
				fork_until_alarm((unsigned)getpid() * 2654435761u + (unsigned)i);
			st = wait_bounded(pid, 3000);
			ok += st == 3;
			hung += st < 0;
		}
		printf("exit3=%d hung=%d\n", ok, hung);
		return 0;
	}
	if (!strcmp(mode, "main-exits")) {
		pthread_t t;

		one(l);
		atexit(say_atexit);
		if (pthread_create(&t, NULL, sleep_100ms, NULL))
			fail("pthread_create");
		pthread_exit(NULL);
	}
	if (!strcmp(mode, "dup2-eventfd") && argc > 2) {
		int evfd = -1, data, nul[4096], n = 0, a2, b2;
		DIR *d;
		struct dirent *e;
		char path[300], link[128];
		off_t size;

		a = dial();
		b = take(l);
		close(a);
		d = opendir("/proc/self/fd");
		while (d && (e = readdir(d))) {
			ssize_t k;

			snprintf(path, sizeof(path), "/proc/self/fd/%s", e->d_name);
			k = readlink(path, link, sizeof(link) - 1);
			if (k > 0 && (link[k] = 0, !strcmp(link, "anon_inode:[eventfd]")))
				evfd = atoi(e->d_name);
		}
		if (d)
			closedir(d);
		if (evfd < 0)
			fail("no eventfd");
		while (n < 4096 && (nul[n] = open("/dev/null", O_RDONLY)) >= 0)
			n++;
		close(nul[--n]);
		data = open(argv[2], O_RDWR | O_APPEND);
		if (data < 0)
			fail("open");
		if (dup2(data, evfd) != evfd)
			fail("dup2");
		for (int i = 0; i < 4 && n > 0; i++)
			close(nul[--n]);
		a2 = dial();
		b2 = take(l);
		close(a2);
		shutdown(b, SHUT_WR);
		shutdown(b2, SHUT_WR);
		await(b, 3000);
		await(b2, 3000);
		close(b);
		close(b2);
		size = lseek(evfd, 0, SEEK_END);
		printf("evfd=%d size=%ld\n", evfd, (long)size);
		return 0;
	}
	return 2;
}

int main(int argc, char **argv)
{
	int r;

	if (argc < 2)
		return 2;
	r = run(argc, argv);
	fflush(stdout);
	return r;
}
