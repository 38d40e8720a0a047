// SPDX-License-Identifier: MIT
/*
 * The integration-test lab (lab.h): namespace set-up, spawning and stopping
 * programs, the kernel's TIME_WAIT sockets, close records.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <limits.h>
#include <net/if.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <criterion/criterion.h>

#include "addr.h"
#include "defaults.h"
#include "diag.h"
#include "lab.h"
#include "record.h"

#define LAB_MAX_PROCS	256

extern char **environ;

static char scratch[PATH_MAX];
static struct lab_proc *procs[LAB_MAX_PROCS];
static size_t nprocs;
static bool cleanup_registered;

static long lab_now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void lab_sleep_ms(int ms)
{
	struct timespec ts = { ms / 1000, (ms % 1000) * 1000000L };

	while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
		;
}

const char *lab_fmt(const char *fmt, ...)
{
	va_list ap;
	char *s;
	int n;

	va_start(ap, fmt);
	n = vasprintf(&s, fmt, ap);
	va_end(ap);
	cr_assert(n >= 0, "out of memory");
	return s;
}

static int rm_entry(const char *path, const struct stat *sb, int type, struct FTW *ftw)
{
	(void)sb;
	(void)type;
	(void)ftw;
	remove(path);
	return 0;
}

/*
 * At the end of the test process: no spawned program may outlive the test
 * (each leads its own process group, so forked children go too), and the
 * scratch directory goes unless it was asked to be kept.
 */
static void lab_cleanup(void)
{
	const char *keep = getenv("TWSHIM_TEST_KEEP");
	size_t i;

	for (i = 0; i < nprocs; i++) {
		struct lab_proc *p = procs[i];

		/* the leader, dead or alive, still holds its number: no other group has it */
		kill(-p->pid, SIGKILL);
		kill(p->pid, SIGKILL);
		waitpid(p->pid, NULL, 0);
	}
	if (scratch[0] && !(keep && !strcmp(keep, "1")))
		nftw(scratch, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

void lab_sysctl(const char *path, const char *value)
{
	int fd = open(path, O_WRONLY | O_CLOEXEC);
	ssize_t n;

	cr_assert(fd >= 0, "open %s: %s", path, strerror(errno));
	n = write(fd, value, strlen(value));
	cr_assert(n == (ssize_t)strlen(value), "write '%s' to %s: %s", value, path,
		  strerror(errno));
	close(fd);
}

/* lo up with SIOCSIFFLAGS: no dependence on ip(8). */
static void lo_up(void)
{
	struct ifreq ifr;
	int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);

	cr_assert(fd >= 0, "socket: %s", strerror(errno));
	memset(&ifr, 0, sizeof(ifr));
	strcpy(ifr.ifr_name, "lo");
	cr_assert(ioctl(fd, SIOCGIFFLAGS, &ifr) == 0, "SIOCGIFFLAGS lo: %s", strerror(errno));
	ifr.ifr_flags |= IFF_UP;
	cr_assert(ioctl(fd, SIOCSIFFLAGS, &ifr) == 0, "SIOCSIFFLAGS lo: %s", strerror(errno));
	close(fd);
}

void lab_enter(unsigned ports)
{
	char range[32];
	const char *tmp;

	if (geteuid() != 0)
		cr_skip_test("needs root: integration tests run in a network namespace of "
			     "their own (unshare -n)");
	if (unshare(CLONE_NEWNET) < 0) {
		if (errno == EPERM || errno == EINVAL || errno == ENOSYS)
			cr_skip_test("unshare(CLONE_NEWNET) is not allowed here: %s",
				     strerror(errno));
		cr_assert_fail("unshare(CLONE_NEWNET): %s", strerror(errno));
	}
	lo_up();
	if (ports < 1)
		ports = 1;
	cr_assert(LAB_PORT_FIRST + ports - 1 <= 65535, "too many ports: %u", ports);
	lab_sysctl("/proc/sys/net/ipv4/tcp_tw_reuse", "0");
	snprintf(range, sizeof(range), "%u %u", LAB_PORT_FIRST, LAB_PORT_FIRST + ports - 1);
	lab_sysctl("/proc/sys/net/ipv4/ip_local_port_range", range);

	/* TMPDIR as mktemp(1) takes it: an absolute path, else /tmp */
	tmp = getenv("TMPDIR");
	snprintf(scratch, sizeof(scratch), "%s/twlab-XXXXXX", tmp && *tmp == '/' ? tmp : "/tmp");
	cr_assert(mkdtemp(scratch), "mkdtemp: %s", strerror(errno));
	if (!cleanup_registered) {
		atexit(lab_cleanup);
		cleanup_registered = true;
	}
}

/*
 * Ports differ from test to test (by pid), not only within one: the
 * kernel's table that spreads clients over source ports is shared by all
 * namespaces and indexed by destination, so tests running side by side to
 * the same port would push each other's clients onto ports used moments
 * before, and a reused port recycles a server-side TIME_WAIT.
 */
int lab_port(void)
{
	static int next;

	if (!next)
		next = 10000 + (int)(getpid() % 2900) * 10;
	return next++;
}

const char *lab_addr4(int port)
{
	return lab_fmt("127.0.0.1:%d", port);
}

const char *lab_addr6(int port)
{
	return lab_fmt("[::1]:%d", port);
}

const char *lab_dir(void)
{
	cr_assert(scratch[0], "lab_enter() was not called");
	return scratch;
}

const char *lab_path(const char *name)
{
	return lab_fmt("%s/%s", lab_dir(), name);
}

const char *lab_build_path(const char *name)
{
	const char *b = getenv("TWSHIM_BUILD");

	if (!b || !*b)
		b = "build";
	return lab_fmt("%s/%s", b, name);
}

const char *lab_example(const char *name)
{
	return lab_build_path(lab_fmt("examples/%s", name));
}

/* Is this environment entry one that lab_spawn() sets itself? */
static bool env_ours(const char *e)
{
	static const char *const names[] = { "LD_PRELOAD=", TW_ENV_OPTIONS "=",
					     TW_ENV_CONFIG "=" };
	size_t i;

	for (i = 0; i < sizeof(names) / sizeof(names[0]); i++)
		if (!strncmp(e, names[i], strlen(names[i])))
			return true;
	return false;
}

/* The environment for a spawned program, built before fork(). */
static char **build_env(const struct lab_opts *o)
{
	size_t n = 0, k = 0, i;
	char **env;

	while (environ[n])
		n++;
	if (o && o->env)
		while (o->env[k])
			k++;
	env = calloc(n + k + 4, sizeof(*env));
	cr_assert(env, "out of memory");
	n = 0;
	for (i = 0; environ[i]; i++)
		if (!env_ours(environ[i]))
			env[n++] = environ[i];
	if (o && o->preload) {
		const char *lib = lab_build_path(TW_LIB_NAME);
		const char *first = getenv("TWSHIM_TEST_PRELOAD");
		char real[PATH_MAX];

		/* an absolute path: the program may chdir before ld.so needs it again */
		cr_assert(realpath(lib, real), "library %s: %s (build it first: make)", lib,
			  strerror(errno));
		env[n++] = (char *)(first && *first ? lab_fmt("LD_PRELOAD=%s:%s", first, real)
						    : lab_fmt("LD_PRELOAD=%s", real));
	}
	if (o && o->options)
		env[n++] = (char *)lab_fmt("%s=%s", TW_ENV_OPTIONS, o->options);
	if (o && o->config)
		env[n++] = (char *)lab_fmt("%s=%s", TW_ENV_CONFIG, o->config);
	for (i = 0; i < k; i++)
		env[n++] = (char *)o->env[i];
	env[n] = NULL;
	return env;
}

struct lab_proc *lab_spawnv(const char *name, const struct lab_opts *o, const char *prog,
			    char *const argv[])
{
	struct lab_proc *p;
	pid_t parent = getpid();
	char **env;
	int outfd, errfd;
	size_t i;

	cr_assert(nprocs < LAB_MAX_PROCS, "too many programs in one test");
	cr_assert(access(prog, X_OK) == 0, "%s: %s (build it first)", prog, strerror(errno));
	p = calloc(1, sizeof(*p));
	cr_assert(p, "out of memory");
	/* the same name twice in a test gets a suffix, so outputs never mix */
	snprintf(p->name, sizeof(p->name), "%s", name);
	for (i = 0; i < nprocs; i++)
		if (!strcmp(procs[i]->name, p->name))
			snprintf(p->name, sizeof(p->name), "%.40s.%zu", name, nprocs);
	p->out = (char *)lab_path(lab_fmt("%s.out", p->name));
	p->err = (char *)lab_path(lab_fmt("%s.err", p->name));
	env = build_env(o);
	outfd = open(p->out, O_WRONLY | O_CREAT | O_TRUNC | O_APPEND | O_CLOEXEC, 0644);
	errfd = open(p->err, O_WRONLY | O_CREAT | O_TRUNC | O_APPEND | O_CLOEXEC, 0644);
	cr_assert(outfd >= 0 && errfd >= 0, "open %s: %s", p->out, strerror(errno));
	fflush(NULL);

	p->pid = fork();
	cr_assert(p->pid >= 0, "fork: %s", strerror(errno));
	if (p->pid == 0) {
		int nullfd = open("/dev/null", O_RDONLY);

		/* its own group: lab_cleanup() kills what it forked too */
		setpgid(0, 0);
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		if (getppid() != parent)
			_exit(127);
		dup2(nullfd, 0);
		dup2(outfd, 1);
		dup2(errfd, 2);
		/* nothing of the test runner's (its pipes, its sockets) leaks into the program */
		syscall(SYS_close_range, 3U, ~0U, 0U);
		signal(SIGPIPE, SIG_DFL);
		execve(prog, argv, env);
		dprintf(2, "lab: exec %s: %s\n", prog, strerror(errno));
		_exit(127);
	}
	/* both sides set the group, so that no kill(-pid) can miss it */
	setpgid(p->pid, p->pid);
	close(outfd);
	close(errfd);
	free(env);
	procs[nprocs++] = p;
	return p;
}

/* argv from a NULL-terminated va_list, argv[0] the basename of prog */
static char **collect_argv(const char *prog, va_list ap)
{
	const char *base = strrchr(prog, '/');
	char **argv = calloc(256, sizeof(*argv));
	size_t n = 0;
	const char *a;

	cr_assert(argv, "out of memory");
	argv[n++] = (char *)(base ? base + 1 : prog);
	while ((a = va_arg(ap, const char *))) {
		cr_assert(n < 255, "too many arguments");
		argv[n++] = (char *)a;
	}
	argv[n] = NULL;
	return argv;
}

/* lab_spawnv() with the arguments of a NULL-terminated va_list */
static struct lab_proc *spawn_va(const char *name, const struct lab_opts *o, const char *prog,
				 va_list ap)
{
	char **argv = collect_argv(prog, ap);
	struct lab_proc *p = lab_spawnv(name, o, prog, argv);

	free(argv);
	return p;
}

struct lab_proc *lab_spawn(const char *name, const struct lab_opts *o, const char *prog, ...)
{
	struct lab_proc *p;
	va_list ap;

	va_start(ap, prog);
	p = spawn_va(name, o, prog, ap);
	va_end(ap);
	return p;
}

const struct lab_opts *lab_traced(const char *log, const char *more)
{
	struct lab_opts *o = calloc(1, sizeof(*o));

	cr_assert(o, "out of memory");
	o->preload = true;
	o->options = more ? lab_fmt("log=%s,%s", log, more) : lab_fmt("log=%s", log);
	return o;
}

const struct lab_opts *lab_configured(const char *conf)
{
	struct lab_opts *o = calloc(1, sizeof(*o));

	cr_assert(o, "out of memory");
	o->preload = true;
	o->config = conf;
	return o;
}

int lab_exit_code(const struct lab_proc *p)
{
	if (!p->reaped)
		return -1;
	if (WIFEXITED(p->status))
		return WEXITSTATUS(p->status);
	if (WIFSIGNALED(p->status))
		return 128 + WTERMSIG(p->status);
	return -1;
}

/*
 * Has p exited? Its status is taken but the zombie is left (WNOWAIT) until
 * the test ends: while it stays, its pid cannot go to another process, so
 * the kill of its process group at the end never reaches a stranger's (pids
 * wrap quickly when several suites run at once: pid_max is often 32768).
 */
static bool try_reap(struct lab_proc *p)
{
	siginfo_t si = { 0 };

	if (p->reaped)
		return true;
	if (waitid(P_PID, (id_t)p->pid, &si, WEXITED | WNOHANG | WNOWAIT) < 0 || si.si_pid != p->pid)
		return false;
	p->status = si.si_code == CLD_EXITED ? W_EXITCODE(si.si_status, 0)
					      : (si.si_status & 0x7f) | (si.si_code == CLD_DUMPED ? 0x80 : 0);
	p->reaped = true;
	return true;
}

bool lab_running(struct lab_proc *p)
{
	return !try_reap(p);
}

/* Waits until p exits or timeout_ms passes; true when it was reaped. */
static bool wait_exit(struct lab_proc *p, int timeout_ms)
{
	long deadline = lab_now_ms() + timeout_ms;
	int pidfd;

	if (try_reap(p))
		return true;
	/* a pidfd becomes readable when the process exits: no polling loop */
	pidfd = (int)syscall(SYS_pidfd_open, p->pid, 0);
	for (;;) {
		long left = deadline - lab_now_ms();

		if (try_reap(p))
			break;
		if (left <= 0)
			break;
		if (pidfd >= 0) {
			struct pollfd pfd = { .fd = pidfd, .events = POLLIN };

			poll(&pfd, 1, (int)left);
		} else {
			lab_sleep_ms(left < 5 ? (int)left : 5);
		}
	}
	if (pidfd >= 0)
		close(pidfd);
	return p->reaped;
}

int lab_wait(struct lab_proc *p, int timeout_ms)
{
	if (wait_exit(p, timeout_ms))
		return lab_exit_code(p);
	kill(-p->pid, SIGKILL);
	kill(p->pid, SIGKILL);
	wait_exit(p, 60000);
	return -1;
}

int lab_stop(struct lab_proc *p, int timeout_ms)
{
	if (try_reap(p))
		return lab_exit_code(p);
	kill(p->pid, SIGTERM);
	return lab_wait(p, timeout_ms);
}

struct lab_proc *lab_start_server(const char *name, const struct lab_opts *o,
				  const char *prog, ...)
{
	struct lab_proc *p;
	va_list ap;

	va_start(ap, prog);
	p = spawn_va(name, o, prog, ap);
	va_end(ap);
	lab_wait_listening(p, 5000);
	return p;
}

struct lab_proc *lab_run(const char *name, const struct lab_opts *o, int timeout_ms,
			 const char *prog, ...)
{
	struct lab_proc *p;
	va_list ap;
	int rc;

	va_start(ap, prog);
	p = spawn_va(name, o, prog, ap);
	va_end(ap);
	rc = lab_wait(p, timeout_ms);
	cr_assert(rc != -1, "%s did not finish within %d ms (killed); stdout:\n%s\nstderr:\n%s",
		  p->name, timeout_ms, lab_stdout(p), lab_stderr(p));
	return p;
}

const char *lab_source_dir(void)
{
	const char *b = getenv("TWSHIM_BUILD");
	char real[PATH_MAX];

	if (access("tests/integration/lab.h", R_OK) == 0)
		return ".";
	if (b && *b && realpath(lab_fmt("%s/..", b), real) &&
	    access(lab_fmt("%s/tests/integration/lab.h", real), R_OK) == 0)
		return lab_fmt("%s", real);
	return NULL;
}

/*
 * A sanitizer build (tests/sanitize.sh) brings its own instrumented copy;
 * otherwise the program is compiled here, as the build would, so that the
 * tests need no make target of their own.
 */
const char *lab_test_program(const char *name, int timeout_ms)
{
	const char *built = lab_build_path(lab_fmt("programs/%s", name));
	const char *src = lab_source_dir(), *out;
	struct lab_proc *p;

	if (access(built, X_OK) == 0)
		return built;
	if (!src)
		cr_skip_test("%s: no build in %s and no source tree here to build it from", name,
			     lab_build_path("programs"));
	out = lab_path(name);
	p = lab_run("cc", NULL, timeout_ms, "/bin/sh", "-c",
		    lab_fmt("exec ${CC:-cc} -std=gnu11 -D_GNU_SOURCE -O2 -g -o '%s' "
			    "'%s/tests/programs/%s.c' -lpthread", out, src, name), NULL);
	cr_assert_eq(lab_exit_code(p), 0, "building %s: %s", name, lab_stderr(p));
	return out;
}

char *lab_read_file(const char *path)
{
	FILE *f = fopen(path, "re");
	char *buf;
	size_t cap = 65536, len = 0, n;

	buf = malloc(cap + 1);
	cr_assert(buf, "out of memory");
	if (!f) {
		buf[0] = '\0';
		return buf;
	}
	while ((n = fread(buf + len, 1, cap - len, f)) > 0) {
		len += n;
		if (len == cap) {
			cap *= 2;
			buf = realloc(buf, cap + 1);
			cr_assert(buf, "out of memory");
		}
	}
	fclose(f);
	buf[len] = '\0';
	return buf;
}

void lab_write_file(const char *path, const char *text)
{
	FILE *f = fopen(path, "we");

	cr_assert(f, "open %s: %s", path, strerror(errno));
	fputs(text, f);
	cr_assert(fclose(f) == 0, "write %s: %s", path, strerror(errno));
}

char *lab_stdout(const struct lab_proc *p)
{
	return lab_read_file(p->out);
}

char *lab_stderr(const struct lab_proc *p)
{
	return lab_read_file(p->err);
}

/* Start of the value of the last "key=" at a line start or after a space. */
static const char *find_value(const char *text, const char *key)
{
	size_t kl = strlen(key);
	const char *p = text, *found = NULL;

	while ((p = strstr(p, key))) {
		if ((p == text || p[-1] == ' ' || p[-1] == '\n') && p[kl] == '=')
			found = p + kl + 1;
		p += kl;
	}
	return found;
}

long lab_value_long(const char *text, const char *key)
{
	const char *v = find_value(text, key);
	char *end;
	long n;

	if (!v)
		return -1;
	n = strtol(v, &end, 10);
	return end == v ? -1 : n;
}

void lab_value_str(const char *text, const char *key, char *buf, size_t len)
{
	const char *v = find_value(text, key);
	size_t n = 0;

	if (len == 0)
		return;
	if (v)
		while (v[n] && v[n] != ' ' && v[n] != '\n' && n + 1 < len)
			n++;
	if (v)
		memcpy(buf, v, n);
	buf[n] = '\0';
}

void lab_assert_ok(const struct lab_proc *p, long n)
{
	char *out = lab_stdout(p);
	long ok = lab_value_long(out, "ok");

	cr_assert_eq(ok, n, "%s (exit %d): ok=%ld, expected %ld; stdout:\n%s\nstderr:\n%s", p->name,
		     lab_exit_code(p), ok, n, out, lab_stderr(p));
	free(out);
}

int lab_wait_listening(struct lab_proc *p, int timeout_ms)
{
	long deadline = lab_now_ms() + timeout_ms;

	for (;;) {
		char *out = lab_stdout(p);
		const char *l = out;

		while ((l = strstr(l, "listening "))) {
			char *end;
			long port;

			if (l != out && l[-1] != '\n') {
				l++;
				continue;
			}
			port = strtol(l + 10, &end, 10);
			if (*end == '\n' && port > 0 && port <= 65535) {
				free(out);
				p->port = (int)port;
				return p->port;
			}
			l++;
		}
		free(out);
		if (!lab_running(p))
			cr_assert_fail("%s exited (status %d) before listening; stderr:\n%s",
				       p->name, lab_exit_code(p), lab_stderr(p));
		if (lab_now_ms() > deadline) {
			lab_stop(p, 1000);
			cr_assert_fail("%s did not print 'listening PORT' within %d ms; "
				       "stderr:\n%s", p->name, timeout_ms, lab_stderr(p));
		}
		lab_sleep_ms(5);
	}
}

/* -- the kernel's view ---------------------------------------------------- */

struct tw_count_ctx {
	struct lab_tw *c;
	int port;
};

static int tw_count_cb(const struct diag_sock *s, void *arg)
{
	struct tw_count_ctx *ctx = arg;

	ctx->c->total++;
	if (ctx->port && s->local.port == ctx->port)
		ctx->c->server++;
	else if (ctx->port && s->remote.port == ctx->port)
		ctx->c->client++;
	return 0;
}

bool lab_settle(int timeout_ms)
{
	const uint32_t closing = 1u << TW_FIN_WAIT1 | 1u << TW_FIN_WAIT2 | 1u << TW_CLOSING |
				 1u << TW_LAST_ACK;
	long deadline = lab_now_ms() + timeout_ms;

	while (lab_tcp_count(closing) > 0) {
		if (lab_now_ms() > deadline)
			return false;
		lab_sleep_ms(5);
	}
	return true;
}

void lab_tw_count(struct lab_tw *out, int server_port)
{
	struct tw_count_ctx ctx = { .c = out, .port = server_port };
	int ret;

	lab_settle(1000);
	memset(out, 0, sizeof(*out));
	ret = diag_dump(1u << TW_TIME_WAIT, tw_count_cb, &ctx);
	cr_assert(ret == 0, "sock_diag dump: %s", strerror(-ret));
}

long lab_tw_total(void)
{
	struct lab_tw c;

	lab_tw_count(&c, 0);
	return c.total;
}

static int tw_list_cb(const struct diag_sock *s, void *arg)
{
	char l[TW_ADDR_STRLEN], r[TW_ADDR_STRLEN];

	l[addr_format(l, &s->local)] = '\0';
	r[addr_format(r, &s->remote)] = '\0';
	json_array_append_new(arg, json_pack("{s:s, s:s}", "local", l, "remote", r));
	return 0;
}

json_t *lab_tw_list(void)
{
	json_t *a = json_array();
	int ret;

	lab_settle(1000);
	ret = diag_dump(1u << TW_TIME_WAIT, tw_list_cb, a);
	cr_assert(ret == 0, "sock_diag dump: %s", strerror(-ret));
	return a;
}

static int count_cb(const struct diag_sock *s, void *arg)
{
	(void)s;
	(*(long *)arg)++;
	return 0;
}

const char *lab_tuple_key(const json_t *obj)
{
	const char *local = json_string_value(json_object_get(obj, "local"));
	const char *remote = json_string_value(json_object_get(obj, "remote"));

	cr_assert(local && remote, "no local/remote address");
	return lab_fmt("%s %s", local, remote);
}

/* The port of "ADDR:PORT" or "[ADDR]:PORT" (the record's address format). */
static int addr_port(const char *addr)
{
	return atoi(strrchr(addr, ':') + 1);
}

/*
 * The kernel's sockets go into a set keyed by 4-tuple; each record with
 * tw=local takes its own out of the set or, finding none, is an extra; what
 * is left in the set at the end are the orphans. A record repeating a
 * 4-tuple finds it taken and counts as an extra too. A record older than
 * LAB_TW_FRESH_S whose socket is gone is no extra: TIME_WAIT lasts 60 s.
 */
#define LAB_TW_FRESH_S	55.0
void lab_tw_match(struct lab_tw_diff *out, const json_t *recs, enum lab_tw_side side,
		  int server_port, const json_t *skip)
{
	json_t *tw = lab_tw_list(), *left = json_object(), *v;
	const char *text = "", *k;
	size_t i, extra = 0, orphans = 0;
	struct timespec ts;
	double now;

	clock_gettime(CLOCK_REALTIME, &ts);
	now = (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
	for (i = 0; i < json_array_size(tw); i++) {
		json_t *t = json_array_get(tw, i);
		const char *local = json_string_value(json_object_get(t, "local"));
		const char *remote = json_string_value(json_object_get(t, "remote"));

		if ((side == LAB_TW_SERVER && addr_port(local) != server_port) ||
		    (side == LAB_TW_CLIENT && addr_port(remote) != server_port) ||
		    (skip && json_object_get(skip, lab_tuple_key(t))))
			continue;
		json_object_set_new(left, lab_tuple_key(t), json_true());
	}
	for (i = 0; i < json_array_size(recs); i++) {
		json_t *r = json_array_get(recs, i);
		const char *key;

		if (!lab_rec_match(r, "tw=local"))
			continue;
		key = lab_tuple_key(r);
		if (json_object_get(left, key)) {
			json_object_del(left, key);
			continue;
		}
		/* its TIME_WAIT may have ended already: 60 s (a slow run, a sanitizer) */
		if (now - json_number_value(json_object_get(r, "ts")) > LAB_TW_FRESH_S)
			continue;
		if (extra++ < 5)
			text = lab_fmt("%s\n  tw=local but no TIME_WAIT: %s", text,
				       json_dumps(r, JSON_COMPACT));
	}
	json_object_foreach(left, k, v)
		if (orphans++ < 5)
			text = lab_fmt("%s\n  TIME_WAIT without a record: %s", text, k);
	if (extra + orphans)
		text = lab_fmt("%zu records with tw=local and no TIME_WAIT, %zu TIME_WAIT sockets "
			       "without a record:%s", extra, orphans, text);
	out->extra = extra;
	out->orphans = orphans;
	out->text = text;
	json_decref(left);
	json_decref(tw);
}

long lab_tcp_count(uint32_t states)
{
	long n = 0;
	int ret;

	ret = diag_dump(states, count_cb, &n);
	cr_assert(ret == 0, "sock_diag dump: %s", strerror(-ret));
	return n;
}

void lab_assert_tw(int server_port, long client, long server)
{
	struct lab_tw tw;

	lab_tw_count(&tw, server_port);
	if (client >= 0)
		cr_assert_eq(tw.client, client, "client-side TIME_WAIT of port %d: %ld, "
			     "expected %ld", server_port, tw.client, client);
	if (server >= 0)
		cr_assert_eq(tw.server, server, "server-side TIME_WAIT of port %d: %ld, "
			     "expected %ld", server_port, tw.server, server);
}

/* -- close records -------------------------------------------------------- */

/*
 * Parses a JSON-Lines file. strict: every line must be complete; otherwise a
 * last line still being written is left out.
 */
static json_t *parse_records(const char *path, bool strict)
{
	char *text = lab_read_file(path);
	json_t *recs = json_array();
	char *line = text;
	int lineno = 0;

	while (*line) {
		char *nl = strchr(line, '\n');
		json_error_t jerr;
		json_t *rec;

		lineno++;
		if (!nl) {
			cr_assert(!strict, "%s:%d: last line has no newline (partial record): %s",
				  path, lineno, line);
			break;
		}
		*nl = '\0';
		rec = json_loads(line, JSON_REJECT_DUPLICATES, &jerr);
		cr_assert(rec, "%s:%d: not valid JSON (%s): %s", path, lineno, jerr.text, line);
		cr_assert(json_is_object(rec), "%s:%d: not a JSON object: %s", path, lineno, line);
		json_array_append_new(recs, rec);
		line = nl + 1;
	}
	free(text);
	return recs;
}

int lab_holders(int *pids, int max)
{
	char self[128] = "", ns[128], path[300], comm[32];
	struct dirent *e;
	DIR *d = opendir("/proc");
	int n = 0;
	ssize_t l;

	cr_assert(d, "/proc: %s", strerror(errno));
	l = readlink("/proc/self/ns/net", self, sizeof(self) - 1);
	cr_assert(l > 0, "/proc/self/ns/net: %s", strerror(errno));
	self[l] = 0;
	while ((e = readdir(d)) && n < max) {
		FILE *f;

		if (e->d_name[0] < '1' || e->d_name[0] > '9')
			continue;
		snprintf(path, sizeof(path), "/proc/%s/comm", e->d_name);
		f = fopen(path, "re");
		if (!f)
			continue;
		if (!fgets(comm, sizeof(comm), f))
			comm[0] = 0;
		fclose(f);
		if (strcmp(comm, "twshim-hold\n"))
			continue;
		snprintf(path, sizeof(path), "/proc/%s/ns/net", e->d_name);
		l = readlink(path, ns, sizeof(ns) - 1);
		if (l <= 0)
			continue;
		ns[l] = 0;
		if (!strcmp(ns, self))
			pids[n++] = atoi(e->d_name);
	}
	closedir(d);
	return n;
}

json_t *lab_records(const char *path)
{
	long deadline = lab_now_ms() + 15000;
	int pid;

	while (lab_holders(&pid, 1) && lab_now_ms() < deadline)
		lab_sleep_ms(10);
	return parse_records(path, true);
}

static bool in_list(const char *s, const char *const *list)
{
	for (; *list; list++)
		if (!strcmp(s, *list))
			return true;
	return false;
}

/* "1.2.3.4:80" or "[v6]:80" */
static bool addr_text_ok(const char *s)
{
	const char *colon;
	char *end;
	long port;

	if (s[0] == '[') {
		colon = strstr(s, "]:");
		if (!colon)
			return false;
		colon++;
	} else {
		colon = strrchr(s, ':');
		if (!colon || strspn(s, "0123456789.") != (size_t)(colon - s))
			return false;
	}
	port = strtol(colon + 1, &end, 10);
	return *end == '\0' && end != colon + 1 && port >= 0 && port <= 65535;
}

static void check_one(const json_t *r, size_t i)
{
	static const char *const roles[] = { "client", "server", NULL };
	static const char *const policies[] = { "normal", "defer", "abort", NULL };
	static const char *const ends[] = { "active", "passive", "abort", "reset", NULL };
	static const char *const vias[] = { "close", "shutdown", "dup2", "dup3", "close_range",
					    "closefrom", "fclose", "exit", "exec", NULL };
	static const char *const states[] = { "ESTABLISHED", "SYN_SENT", "SYN_RECV",
					      "FIN_WAIT1", "FIN_WAIT2", "TIME_WAIT", "CLOSE",
					      "CLOSE_WAIT", "LAST_ACK", "LISTEN", "CLOSING",
					      "UNKNOWN", NULL };
	static const char *const strs[] = { "comm", "role", "local", "remote", "policy",
					    "state", "end", "tw", "via", NULL };
	static const char *const ints[] = { "pid", "bytes_acked", "bytes_received", "fd", NULL };
	const char *const *k;
	const char *end, *tw, *want;
	char *dump = json_dumps(r, JSON_COMPACT);
	json_t *v;

	cr_assert(json_is_number(json_object_get(r, "ts")) &&
		  json_number_value(json_object_get(r, "ts")) > 1e9,
		  "record %zu: ts missing or not a Unix time: %s", i, dump);
	cr_assert(json_is_number(json_object_get(r, "dur_ms")) &&
		  json_number_value(json_object_get(r, "dur_ms")) >= 0,
		  "record %zu: dur_ms missing or negative: %s", i, dump);
	for (k = strs; *k; k++)
		cr_assert(json_is_string(json_object_get(r, *k)),
			  "record %zu: %s missing or not a string: %s", i, *k, dump);
	for (k = ints; *k; k++)
		cr_assert(json_is_integer(json_object_get(r, *k)),
			  "record %zu: %s missing or not an integer: %s", i, *k, dump);
	cr_assert(json_integer_value(json_object_get(r, "pid")) > 0, "record %zu: pid: %s", i,
		  dump);
	cr_assert(json_integer_value(json_object_get(r, "bytes_acked")) >= 0 &&
		  json_integer_value(json_object_get(r, "bytes_received")) >= 0,
		  "record %zu: byte counts: %s", i, dump);
	cr_assert(json_string_value(json_object_get(r, "comm"))[0], "record %zu: empty comm: %s",
		  i, dump);
	cr_assert(in_list(json_string_value(json_object_get(r, "role")), roles),
		  "record %zu: role: %s", i, dump);
	cr_assert(in_list(json_string_value(json_object_get(r, "policy")), policies),
		  "record %zu: policy: %s", i, dump);
	cr_assert(in_list(json_string_value(json_object_get(r, "via")), vias),
		  "record %zu: via: %s", i, dump);
	cr_assert(in_list(json_string_value(json_object_get(r, "state")), states),
		  "record %zu: state: %s", i, dump);
	cr_assert(addr_text_ok(json_string_value(json_object_get(r, "local"))) &&
		  addr_text_ok(json_string_value(json_object_get(r, "remote"))),
		  "record %zu: local/remote not ADDR:PORT: %s", i, dump);
	end = json_string_value(json_object_get(r, "end"));
	tw = json_string_value(json_object_get(r, "tw"));
	cr_assert(in_list(end, ends), "record %zu: end: %s", i, dump);
	want = !strcmp(end, "active") ? "local" : !strcmp(end, "passive") ? "peer" : "none";
	cr_assert(!strcmp(tw, want), "record %zu: end %s needs tw %s: %s", i, end, want, dump);
	v = json_object_get(r, "deferred_ms");
	if (v) {
		const char *pol = json_string_value(json_object_get(r, "policy"));

		cr_assert(json_is_number(v) && json_number_value(v) >= 0,
			  "record %zu: deferred_ms: %s", i, dump);
		cr_assert(strcmp(pol, "normal") != 0,
			  "record %zu: deferred_ms with policy normal: %s", i, dump);
	}
	v = json_object_get(r, "timeout");
	cr_assert(!v || json_is_true(v), "record %zu: timeout present but not true: %s", i, dump);
	v = json_object_get(r, "held");
	cr_assert(!v || json_is_true(v), "record %zu: held present but not true: %s", i, dump);
	v = json_object_get(r, "connect_waited");
	cr_assert(!v || json_is_true(v), "record %zu: connect_waited present but not true: %s", i,
		  dump);
	v = json_object_get(r, "arm");
	cr_assert(!v || json_is_string(v), "record %zu: arm not a string: %s", i, dump);
	free(dump);
}

void lab_records_check(const json_t *recs)
{
	size_t i;

	cr_assert(json_is_array(recs), "records are not an array");
	for (i = 0; i < json_array_size(recs); i++)
		check_one(json_array_get(recs, i), i);
}

json_t *lab_records_checked(const char *path)
{
	json_t *recs = lab_records(path);

	lab_records_check(recs);
	return recs;
}

json_t *lab_records_expect(const char *path, size_t n, const char *want)
{
	json_t *recs = lab_records_checked(path);

	lab_rec_assert_count(recs, "", n);
	if (want)
		lab_rec_assert_all(recs, "", want);
	return recs;
}

/* Does the JSON value v read as the text want? */
static bool value_is(const json_t *v, const char *want)
{
	char buf[64];

	switch (json_typeof(v)) {
	case JSON_STRING:
		return !strcmp(json_string_value(v), want);
	case JSON_INTEGER:
		snprintf(buf, sizeof(buf), "%lld", (long long)json_integer_value(v));
		return !strcmp(buf, want);
	case JSON_REAL:
		return json_real_value(v) == strtod(want, NULL);
	case JSON_TRUE:
		return !strcmp(want, "true");
	case JSON_FALSE:
		return !strcmp(want, "false");
	case JSON_NULL:
		return !strcmp(want, "null");
	default:
		return false;
	}
}

bool lab_rec_match(const json_t *rec, const char *filter)
{
	char *copy = strdup(filter), *save = NULL, *term;
	bool ok = true;

	cr_assert(copy, "out of memory");
	for (term = strtok_r(copy, ",", &save); term && ok; term = strtok_r(NULL, ",", &save)) {
		char *eq = strchr(term, '=');
		bool neg = false;
		json_t *v;

		if (!eq) {
			if (term[0] == '!')
				ok = json_object_get(rec, term + 1) == NULL;
			else
				ok = json_object_get(rec, term) != NULL;
			continue;
		}
		if (eq > term && eq[-1] == '!') {
			neg = true;
			eq[-1] = '\0';
		}
		*eq = '\0';
		v = json_object_get(rec, term);
		ok = (v && value_is(v, eq + 1)) != neg;
	}
	free(copy);
	return ok;
}

size_t lab_rec_count(const json_t *recs, const char *filter)
{
	size_t i, n = 0;

	for (i = 0; i < json_array_size(recs); i++)
		if (lab_rec_match(json_array_get(recs, i), filter))
			n++;
	return n;
}

void lab_rec_assert_count(const json_t *recs, const char *filter, size_t n)
{
	size_t got = lab_rec_count(recs, filter);

	cr_assert_eq(got, n, "records matching '%s': %zu, expected %zu\n(%s)", filter, got, n,
		     lab_rec_summary(recs));
}

json_t *lab_rec_find(const json_t *recs, const char *filter)
{
	size_t i;

	for (i = 0; i < json_array_size(recs); i++)
		if (lab_rec_match(json_array_get(recs, i), filter))
			return json_array_get(recs, i);
	return NULL;
}

void lab_rec_assert_all(const json_t *recs, const char *sel, const char *want)
{
	size_t i;

	for (i = 0; i < json_array_size(recs); i++) {
		json_t *r = json_array_get(recs, i);
		char *dump;

		if (!lab_rec_match(r, sel) || lab_rec_match(r, want))
			continue;
		dump = json_dumps(r, JSON_COMPACT);
		cr_assert_fail("record %zu matches '%s' but not '%s': %s\n(%s)", i, sel, want,
			       dump, lab_rec_summary(recs));
	}
}

const char *lab_rec_summary(const json_t *recs)
{
	static const char *const keys[] = { "role", "policy", "state", "end", "tw", "via",
					    "timeout", NULL };
	const char *const *k;
	char *out = NULL;
	size_t len = 0;
	FILE *f = open_memstream(&out, &len);

	cr_assert(f, "out of memory");
	fprintf(f, "%zu records:", json_array_size(recs));
	for (k = keys; *k; k++) {
		json_t *seen = json_object();
		const char *val;
		json_t *n;
		size_t i;

		for (i = 0; i < json_array_size(recs); i++) {
			json_t *v = json_object_get(json_array_get(recs, i), *k);
			char *text = v ? json_dumps(v, JSON_ENCODE_ANY) : strdup("-");

			n = json_object_get(seen, text);
			json_object_set_new(seen, text, json_integer(n ? json_integer_value(n) + 1
								       : 1));
			free(text);
		}
		fprintf(f, " %s", *k);
		json_object_foreach(seen, val, n)
			fprintf(f, " %s=%lld", val, (long long)json_integer_value(n));
		fprintf(f, ";");
		json_decref(seen);
	}
	fclose(f);
	return out;
}

json_t *lab_records_wait(const char *path, const char *filter, size_t n, int timeout_ms)
{
	long deadline = lab_now_ms() + timeout_ms;

	for (;;) {
		json_t *recs = parse_records(path, false);

		if (lab_rec_count(recs, filter) >= n || lab_now_ms() > deadline) {
			json_decref(recs);
			return lab_records(path);
		}
		json_decref(recs);
		lab_sleep_ms(10);
	}
}

json_t *lab_records_wait_expect(const char *path, size_t n, const char *want, int timeout_ms)
{
	json_t *recs = lab_records_wait(path, "", n, timeout_ms);

	lab_records_check(recs);
	lab_rec_assert_count(recs, "", n);
	if (want)
		lab_rec_assert_all(recs, "", want);
	return recs;
}

/* The lines of text that hold word (anywhere, or at their start only). */
static size_t lines_with(const char *text, const char *word, bool at_start)
{
	size_t n = 0;

	for (const char *l = text; l && *l; l = strchr(l, '\n') ? strchr(l, '\n') + 1 : NULL) {
		const char *e = strchr(l, '\n'), *w = at_start ? NULL : strstr(l, word);

		if (at_start)
			n += !strncmp(l, word, strlen(word));
		else
			n += w && (!e || w < e);
	}
	return n;
}

size_t lab_lines_with(const char *text, const char *word)
{
	return lines_with(text, word, false);
}

size_t lab_shim_lines(const char *text)
{
	return lines_with(text, "twshim[", true);
}

/* Connection pairs inside one process: each close is an active or a passive one. */
static const char pairs_py[] =
"import socket, subprocess, sys, time\n"
"mode, n = sys.argv[1], int(sys.argv[2])\n"
"if mode == 'defer-owner':\n"
"    # SIGIO for a pipe: no socket of the program's has an owner\n"
"    import fcntl, os\n"
"    r, w = os.pipe(); fcntl.fcntl(r, fcntl.F_SETOWN, os.getpid()); mode = 'defer'\n"
"l = socket.socket(); l.bind(('127.0.0.1', 0)); l.listen(64)\n"
"for i in range(n if not mode.startswith('defer') else 0):\n"
"    c = socket.create_connection(l.getsockname())\n"
"    s, _ = l.accept()\n"
"    c.sendall(b'q'); s.recv(1); s.sendall(b'a'); c.recv(1)\n"
"    if mode == 'vfork':\n"
"        # the child (vfork) closes every fd but 0-2 before its exec\n"
"        subprocess.run(['/bin/true'], check=True)\n"
"    first, last = (c, s) if mode == 'client' else (s, c)\n"
"    first.close()\n"
"    while last.recv(1): pass\n"
"    last.close()\n"
"if mode in ('defer', 'defer-peer'):\n"
"    # every server end closed (deferred until defer_ms); then each client end at its\n"
"    # EOF, or (defer-peer) every client end shut down, whose FIN ends each deferral\n"
"    pairs = []\n"
"    for i in range(n):\n"
"        c = socket.create_connection(l.getsockname())\n"
"        s, _ = l.accept()\n"
"        pairs.append((c, s))\n"
"    for c, s in pairs: s.close()\n"
"    if mode == 'defer-peer':\n"
"        for c, s in pairs: c.shutdown(socket.SHUT_WR)\n"
"        time.sleep(0.3)\n"
"    for c, s in pairs:\n"
"        while mode == 'defer' and c.recv(1): pass\n"
"        c.close()\n"
"print('done', flush=True)\n";

const char *lab_pairs_script(void)
{
	const char *p = lab_path("pairs.py");

	lab_write_file(p, pairs_py);
	return p;
}
