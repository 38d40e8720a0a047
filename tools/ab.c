// SPDX-License-Identifier: MIT
/*
 * twshim ab: one program under two settings, run alternately, each run's
 * close records in a file of its own, the kernel's TIME_WAIT count sampled
 * while it runs; A and B side by side.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <limits.h>
#include <net/if.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
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

#include <jansson.h>

#include "config.h"
#include "defaults.h"
#include "diag.h"
#include "record.h"
#include "tool.h"

#define AB_RUNS_DEFAULT	3
#define AB_RUNS_MAX	1000
#define SAMPLE_MS	50
/*
 * Quiet time between runs and after each: the TIME_WAIT sockets of one run
 * are told from older ones by their age (see count_new_tw), which needs a
 * gap of a few timer ticks between runs.
 */
#define GAP_MS		50
#define SETTLE_MS	100
/* longest wait for the holders a run left (twshim-hold: at most defer_ms each) */
#define HOLDERS_MS	(TW_MS_MAX + 5000)
/* a socket whose remaining TIME_WAIT is this close to "made at the start" counts as new */
#define AGE_MARGIN_MS	25

static const char ab_usage[] =
	"usage: twshim ab -a A -b B [-n RUNS] [--json] [--netns] [--keep] -- PROGRAM [ARGS...]\n"
	"\n"
	"Runs PROGRAM with libtwshim.so preloaded, under settings A and B alternately,\n"
	"RUNS times each, and compares them: exit codes, median wall time, the close\n"
	"records of each run (connections, tw local/peer/none, deferred, timeouts, held,\n"
	"learned, connect waits) and\n"
	"the TIME_WAIT sockets of this network namespace, sampled every 50 ms (peak and\n"
	"at the end of each run, counting only sockets the run made).\n"
	"\n"
	"  -a A, -b B       a config file (when such a file exists) or an option string\n"
	"                   such as close=defer,defer_ms=500; TWSHIM_CONFIG and\n"
	"                   TWSHIM_OPTIONS from the environment are not used\n"
	"  -n, --runs RUNS  runs per arm (default 3)\n"
	"  -j, --json       one JSON object instead of the table\n"
	"      --netns      each run in a fresh network namespace with loopback up\n"
	"                   (needs root): exact counts, nothing left from other runs\n"
	"  -k, --keep       keep the records directory and say where it is\n"
	"  -h, --help       this text\n"
	"\n"
	"The program's standard output goes to standard error, its standard input is\n"
	"/dev/null. Exit status: 0 when every run exited 0, 1 when some run did not or\n"
	"a run could not be made, 2 usage error (bad settings, no such program).\n";

struct run_result {
	int status;		/* wait status; -1: could not run */
	uint64_t wall_ns;
	long tw_peak, tw_end;	/* TIME_WAIT sockets made by this run; -1: not known */
	struct counts c;
	unsigned long long malformed;
};

struct arm {
	const char *name;
	const char *spec;
	char file[PATH_MAX];	/* absolute path when the spec is a config file */
	bool is_file;
	struct run_result *runs;
	int nruns;
};

struct ab {
	struct arm arm[2];
	int runs;
	bool json, netns, keep;
	char **argv;
	const char *lib;
	char dir[PATH_MAX];
};

static volatile sig_atomic_t stop_requested;

static void on_signal(int sig)
{
	(void)sig;
	stop_requested = 1;
}

static void sleep_ms(long ms)
{
	struct timespec ts = { .tv_sec = ms / 1000, .tv_nsec = (ms % 1000) * 1000000L };

	while (nanosleep(&ts, &ts) && errno == EINTR && !stop_requested)
		;
}

struct tw_age {
	uint64_t elapsed_ms;
	long n;
};

static int age_cb(const struct diag_sock *s, void *arg)
{
	struct tw_age *a = arg;

	if (a->elapsed_ms >= TW_TIMEWAIT_SEC * 1000ull ||
	    s->expires_ms + a->elapsed_ms + AGE_MARGIN_MS > TW_TIMEWAIT_SEC * 1000ull)
		a->n++;
	return 0;
}

/*
 * TIME_WAIT sockets made since t0. A socket made before t0 has less than
 * 60 s - elapsed left, one made since has more; after 60 s every socket that
 * was there at t0 is gone. So no list of old sockets is needed, and
 * TIME_WAIT left over from earlier runs or other work is not counted.
 */
static long count_new_tw(uint64_t t0)
{
	struct tw_age a = { .elapsed_ms = (now_mono_ns() - t0) / 1000000u };
	int ret = diag_dump(1u << TW_TIME_WAIT, age_cb, &a);

	return ret < 0 ? -1 : a.n;
}

/* The child: settings in the environment, then the program. Never returns. */
static void exec_program(const struct ab *ab, const struct arm *arm, const char *log)
{
	char *opts = NULL;
	int fd;

	if (arm->is_file) {
		setenv(TW_ENV_CONFIG, arm->file, 1);
		if (asprintf(&opts, "log=%s", log) < 0)
			_exit(127);
	} else {
		/* "": no file at all, not even /etc/twshim.conf */
		setenv(TW_ENV_CONFIG, "", 1);
		if (asprintf(&opts, "%s%slog=%s", arm->spec, *arm->spec ? "," : "", log) < 0)
			_exit(127);
	}
	setenv(TW_ENV_OPTIONS, opts, 1);
	if (env_prepend_preload(ab->lib))
		_exit(127);
	/* our stdout holds the comparison; the program's output goes to stderr */
	dup2(STDERR_FILENO, STDOUT_FILENO);
	fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
	if (fd >= 0)
		dup2(fd, STDIN_FILENO);
	signal(SIGINT, SIG_DFL);
	signal(SIGTERM, SIG_DFL);
	execvp(ab->argv[0], ab->argv);
	fprintf(stderr, "twshim ab: %s: %s\n", ab->argv[0], strerror(errno));
	_exit(127);
}

static int pidfd_of(pid_t pid)
{
#ifdef SYS_pidfd_open
	return (int)syscall(SYS_pidfd_open, pid, 0);
#else
	(void)pid;
	errno = ENOSYS;
	return -1;
#endif
}

/*
 * Is a child of this process a holder (`twshim-hold`)? As the subreaper, ab
 * adopts the holders of the program it runs: the program's deferred
 * connections end in them after it exits, and so do their records.
 */
static bool holders_left(void)
{
	char path[64], comm[32];
	bool found = false;
	FILE *list, *f;
	long pid;

	snprintf(path, sizeof(path), "/proc/self/task/%d/children", (int)getpid());
	list = fopen(path, "re");
	if (!list)
		return false;
	while (!found && fscanf(list, "%ld", &pid) == 1) {
		snprintf(path, sizeof(path), "/proc/%ld/comm", pid);
		f = fopen(path, "re");
		if (f && fgets(comm, sizeof(comm), f) && !strcmp(comm, "twshim-hold\n"))
			found = true;
		if (f)
			fclose(f);
	}
	fclose(list);
	return found;
}

/*
 * Starts the program and samples this namespace's new TIME_WAIT sockets
 * every SAMPLE_MS until it exits. Fills status, wall time, peak and end.
 */
static void run_and_sample(const struct ab *ab, const struct arm *arm, const char *log,
			   struct run_result *res)
{
	uint64_t t0 = now_mono_ns();
	bool sample_ok = true, killed = false;
	int pidfd, status = 0;
	pid_t pid;
	long n;

	res->status = -1;
	res->tw_peak = res->tw_end = -1;
	fflush(NULL);
	prctl(PR_SET_CHILD_SUBREAPER, 1);
	pid = fork();
	if (pid < 0) {
		fprintf(stderr, "twshim ab: fork: %s\n", strerror(errno));
		return;
	}
	if (pid == 0)
		exec_program(ab, arm, log);

	pidfd = pidfd_of(pid);
	res->tw_peak = 0;
	for (;;) {
		n = count_new_tw(t0);
		if (n < 0)
			sample_ok = false;
		else if (n > res->tw_peak)
			res->tw_peak = n;
		if (stop_requested && !killed) {
			kill(pid, SIGTERM);
			killed = true;
		}
		if (pidfd >= 0) {
			struct pollfd pfd = { .fd = pidfd, .events = POLLIN };

			if (poll(&pfd, 1, SAMPLE_MS) > 0)
				break;
		} else {
			pid_t w = waitpid(pid, &status, WNOHANG);

			if (w == pid)
				goto reaped;
			sleep_ms(SAMPLE_MS);
		}
	}
	while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
		;
reaped:
	res->wall_ns = now_mono_ns() - t0;
	res->status = status;
	if (pidfd >= 0)
		close(pidfd);
	/* the program's deferred connections end in its holders: their records count too */
	for (long waited = 0; waited < HOLDERS_MS && !stop_requested && holders_left();
	     waited += SAMPLE_MS) {
		n = count_new_tw(t0);
		if (n > res->tw_peak)
			res->tw_peak = n;
		sleep_ms(SAMPLE_MS);
		while (waitpid(-1, NULL, WNOHANG) > 0)
			;
	}
	while (waitpid(-1, NULL, WNOHANG) > 0)
		;
	/* the last FIN/ACK exchanges of the run land in the next few ms */
	sleep_ms(SETTLE_MS);
	n = count_new_tw(t0);
	if (n < 0) {
		sample_ok = false;
	} else {
		res->tw_end = n;
		if (n > res->tw_peak)
			res->tw_peak = n;
	}
	if (!sample_ok)
		res->tw_peak = res->tw_end = -1;
}

static int loopback_up(void)
{
	struct ifreq ifr;
	int fd, ret = 0;

	fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	memset(&ifr, 0, sizeof(ifr));
	strcpy(ifr.ifr_name, "lo");
	if (ioctl(fd, SIOCGIFFLAGS, &ifr) < 0) {
		ret = -errno;
		goto out;
	}
	ifr.ifr_flags |= IFF_UP;
	if (ioctl(fd, SIOCSIFFLAGS, &ifr) < 0)
		ret = -errno;
out:
	close(fd);
	return ret;
}

/*
 * --netns: a child enters a new network namespace, brings loopback up, and
 * runs and samples the program from inside it; the result comes back
 * through a pipe.
 */
static void run_in_netns(const struct ab *ab, const struct arm *arm, const char *log,
			 struct run_result *res)
{
	int p[2], status;
	ssize_t got = 0, n;
	pid_t pid;

	res->status = -1;
	res->tw_peak = res->tw_end = -1;
	if (pipe2(p, O_CLOEXEC) < 0) {
		fprintf(stderr, "twshim ab: pipe: %s\n", strerror(errno));
		return;
	}
	fflush(NULL);
	pid = fork();
	if (pid < 0) {
		fprintf(stderr, "twshim ab: fork: %s\n", strerror(errno));
		close(p[0]);
		close(p[1]);
		return;
	}
	if (pid == 0) {
		int err;

		close(p[0]);
		if (unshare(CLONE_NEWNET) < 0) {
			fprintf(stderr, "twshim ab: unshare(CLONE_NEWNET): %s\n", strerror(errno));
			_exit(1);
		}
		err = loopback_up();
		if (err) {
			fprintf(stderr, "twshim ab: loopback up: %s\n", strerror(-err));
			_exit(1);
		}
		run_and_sample(ab, arm, log, res);
		if (write(p[1], res, sizeof(*res)) != (ssize_t)sizeof(*res))
			_exit(1);
		_exit(0);
	}
	close(p[1]);
	while (got < (ssize_t)sizeof(*res)) {
		n = read(p[0], (char *)res + got, sizeof(*res) - (size_t)got);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			break;
		got += n;
	}
	close(p[0]);
	while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
		;
	if (got != (ssize_t)sizeof(*res)) {
		res->status = -1;
		res->tw_peak = res->tw_end = -1;
	}
}

static int count_cb(const struct rec *r, void *arg)
{
	counts_add(arg, r, now_realtime());
	return 0;
}

/* The records of one run; a run that made no connection wrote no file. */
static void read_records(const char *log, struct run_result *res)
{
	struct rec_stats st = { 0 };

	if (access(log, F_OK) < 0)
		return;
	records_read("twshim ab", log, count_cb, &res->c, &st);
	records_summary("twshim ab", &st);
	res->malformed = st.malformed;
}

/* 0..255 for an exit, 128 + signal for a signal, -1 when it did not run */
static int exit_code(int status)
{
	if (status < 0)
		return -1;
	if (WIFEXITED(status))
		return WEXITSTATUS(status);
	if (WIFSIGNALED(status))
		return 128 + WTERMSIG(status);
	return -1;
}

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	return x < y ? -1 : x > y;
}

static int cmp_long(const void *a, const void *b)
{
	long x = *(const long *)a, y = *(const long *)b;

	return x < y ? -1 : x > y;
}

struct summary {
	struct counts c;
	unsigned long long malformed;
	double wall_ms;		/* median */
	double tw_peak, tw_end;	/* medians; -1: not known */
	long tw_peak_max;
	bool all_ok;
};

static void summarize(const struct arm *arm, struct summary *s)
{
	uint64_t wall[AB_RUNS_MAX];
	long peak[AB_RUNS_MAX], end[AB_RUNS_MAX];
	int n = arm->nruns, m = 0;

	memset(s, 0, sizeof(*s));
	s->all_ok = n > 0;
	s->tw_peak = s->tw_end = -1;
	s->tw_peak_max = -1;
	for (int i = 0; i < n; i++) {
		const struct run_result *r = &arm->runs[i];

		counts_sum(&s->c, &r->c);
		s->malformed += r->malformed;
		if (exit_code(r->status) != 0)
			s->all_ok = false;
		wall[i] = r->wall_ns;
		if (r->tw_peak >= 0 && r->tw_end >= 0) {
			peak[m] = r->tw_peak;
			end[m] = r->tw_end;
			if (r->tw_peak > s->tw_peak_max)
				s->tw_peak_max = r->tw_peak;
			m++;
		}
	}
	if (n) {
		qsort(wall, (size_t)n, sizeof(wall[0]), cmp_u64);
		s->wall_ms = (n % 2 ? (double)wall[n / 2]
				    : ((double)wall[n / 2 - 1] + (double)wall[n / 2]) / 2) / 1e6;
	}
	if (m == n && m) {
		qsort(peak, (size_t)m, sizeof(peak[0]), cmp_long);
		qsort(end, (size_t)m, sizeof(end[0]), cmp_long);
		s->tw_peak = m % 2 ? (double)peak[m / 2] : (peak[m / 2 - 1] + peak[m / 2]) / 2.0;
		s->tw_end = m % 2 ? (double)end[m / 2] : (end[m / 2 - 1] + end[m / 2]) / 2.0;
	}
}

static void fmt_num(char *buf, size_t len, double v)
{
	if (v < 0)
		snprintf(buf, len, "?");
	else if (v == (double)(long long)v)
		snprintf(buf, len, "%lld", (long long)v);
	else
		snprintf(buf, len, "%.1f", v);
}

static void print_table(const struct ab *ab, const struct summary *s)
{
	static const char *const labels[] = {
		"settings", "runs", "exit codes", "wall time, median", "connections, all runs",
		"tw local", "tw peer", "tw none", "deferred", "timeouts",
		"held (after exit)", "learned (no wait)", "connect waits",
		"TIME_WAIT peak, median", "TIME_WAIT at end, median",
	};
	enum { NROWS = sizeof(labels) / sizeof(labels[0]) };
	char cell[2][NROWS][1024];
	const char *row[3];
	struct table t;

	for (int k = 0; k < 2; k++) {
		const struct arm *arm = &ab->arm[k];
		const struct summary *sm = &s[k];
		const unsigned long long v[9] = { sm->c.conns, sm->c.tw_local, sm->c.tw_peer,
						  sm->c.tw_none, sm->c.deferred, sm->c.timeouts,
						  sm->c.held, sm->c.learned, sm->c.connect_waits };
		size_t off = 0;

		snprintf(cell[k][0], sizeof(cell[k][0]), "%s%s", arm->is_file ? "file " : "",
			 arm->spec[0] ? arm->spec : "(defaults)");
		snprintf(cell[k][1], sizeof(cell[k][1]), "%d", arm->nruns);
		cell[k][2][0] = '\0';
		for (int i = 0; i < arm->nruns && off + 8 < sizeof(cell[k][2]); i++) {
			int code = exit_code(arm->runs[i].status);

			if (code < 0)
				off += (size_t)snprintf(cell[k][2] + off, sizeof(cell[k][2]) - off,
							"%s-", i ? " " : "");
			else
				off += (size_t)snprintf(cell[k][2] + off, sizeof(cell[k][2]) - off,
							"%s%d", i ? " " : "", code);
		}
		snprintf(cell[k][3], sizeof(cell[k][3]), "%.3f s", sm->wall_ms / 1000);
		for (int i = 0; i < 9; i++)
			snprintf(cell[k][4 + i], sizeof(cell[k][4 + i]), "%llu", v[i]);
		fmt_num(cell[k][13], sizeof(cell[k][13]), sm->tw_peak);
		fmt_num(cell[k][14], sizeof(cell[k][14]), sm->tw_end);
	}
	table_init(&t, 3);
	row[0] = "";
	row[1] = "A";
	row[2] = "B";
	table_add(&t, row);
	for (int i = 0; i < NROWS; i++) {
		row[0] = labels[i];
		row[1] = cell[0][i];
		row[2] = cell[1][i];
		table_add(&t, row);
	}
	table_print(&t, stdout);
	table_free(&t);
	if (!ab->netns)
		printf("TIME_WAIT: sockets this namespace made during each run, whoever made "
		       "them; older ones are not counted\n");
	for (int k = 0; k < 2; k++)
		if (s[k].malformed)
			printf("%s: %llu malformed record lines skipped\n", ab->arm[k].name,
			       s[k].malformed);
}

static json_t *num_or_null(double v)
{
	if (v < 0)
		return json_null();
	if (v == (double)(long long)v)
		return json_integer((json_int_t)v);
	return json_real(v);
}

/* milliseconds to the microsecond, without libm */
static double ms3(double ms)
{
	return (double)(long long)(ms * 1000 + 0.5) / 1000;
}

static void print_json(const struct ab *ab, const struct summary *s)
{
	json_t *root, *arms = json_object(), *argv = json_array();

	for (char **a = ab->argv; *a; a++)
		json_array_append_new(argv, json_text(*a));
	for (int k = 0; k < 2; k++) {
		const struct arm *arm = &ab->arm[k];
		const struct summary *sm = &s[k];
		json_t *codes = json_array(), *runs = json_array(), *o;

		for (int i = 0; i < arm->nruns; i++) {
			const struct run_result *r = &arm->runs[i];
			int code = exit_code(r->status);

			json_array_append_new(codes, code < 0 ? json_null() : json_integer(code));
			json_t *run = json_pack(
				"{s:o,s:f,s:I,s:I,s:I,s:I,s:I,s:I,s:o,s:o}",
				"exit", code < 0 ? json_null() : json_integer(code),
				"wall_ms", ms3((double)r->wall_ns / 1e6),
				"connections", (json_int_t)r->c.conns,
				"tw_local", (json_int_t)r->c.tw_local,
				"tw_peer", (json_int_t)r->c.tw_peer,
				"tw_none", (json_int_t)r->c.tw_none,
				"deferred", (json_int_t)r->c.deferred,
				"timeouts", (json_int_t)r->c.timeouts,
				"tw_peak", num_or_null((double)r->tw_peak),
				"tw_end", num_or_null((double)r->tw_end));

			counts_json_defer(run, &r->c);
			json_array_append_new(runs, run);
		}
		o = json_pack("{s:o,s:s,s:i,s:o,s:f,s:I,s:I,s:I,s:I,s:I,s:I,s:o,s:o,s:o,s:I,s:o}",
			      "settings", json_text(arm->spec),
			      "kind", arm->is_file ? "file" : "options",
			      "runs", arm->nruns,
			      "exit_codes", codes,
			      "wall_ms_median", ms3(sm->wall_ms),
			      "connections", (json_int_t)sm->c.conns,
			      "tw_local", (json_int_t)sm->c.tw_local,
			      "tw_peer", (json_int_t)sm->c.tw_peer,
			      "tw_none", (json_int_t)sm->c.tw_none,
			      "deferred", (json_int_t)sm->c.deferred,
			      "timeouts", (json_int_t)sm->c.timeouts,
			      "tw_peak_median", num_or_null(sm->tw_peak),
			      "tw_peak_max", num_or_null((double)sm->tw_peak_max),
			      "tw_end_median", num_or_null(sm->tw_end),
			      "malformed", (json_int_t)sm->malformed,
			      "per_run", runs);
		counts_json_defer(o, &sm->c);
		json_object_set_new(arms, arm->name, o);
	}
	root = json_pack("{s:o,s:i,s:b,s:o}", "program", argv, "runs_per_arm", ab->runs,
			 "netns", ab->netns, "arms", arms);
	if (ab->keep)
		json_object_set_new(root, "records_dir", json_string(ab->dir));
	json_dumpf(root, stdout, JSON_INDENT(2) | JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(12));
	fputc('\n', stdout);
	json_decref(root);
}

/* true when prog can be executed as execvp() would find it */
static bool program_exists(const char *prog)
{
	const char *path = getenv("PATH"), *p, *colon;
	char buf[PATH_MAX];

	if (strchr(prog, '/'))
		return access(prog, X_OK) == 0;
	if (!path)
		path = "/bin:/usr/bin";
	for (p = path; ; p = colon + 1) {
		size_t n;

		colon = strchr(p, ':');
		n = colon ? (size_t)(colon - p) : strlen(p);
		if (snprintf(buf, sizeof(buf), "%.*s/%s", (int)n, n ? p : ".", prog) <
		    (int)sizeof(buf) && access(buf, X_OK) == 0)
			return true;
		if (!colon)
			return false;
	}
}

/* A config file when such a file exists, else an option string; checked with conf_load. */
static int arm_setup(struct arm *arm, const char *prog)
{
	static const char opt_prefix[] = TW_ENV_OPTIONS ": ";
	struct conf_source src = { 0 };
	const char *base = strrchr(prog, '/'), *msg;
	char flag = arm->name[0] == 'A' ? 'a' : 'b';
	struct conf *conf;
	struct stat st;
	char err[512];

	src.comm = base ? base + 1 : prog;
	if (arm->spec[0] && stat(arm->spec, &st) == 0 && !S_ISDIR(st.st_mode)) {
		if (!realpath(arm->spec, arm->file)) {
			fprintf(stderr, "twshim ab: -%c %s: %s\n", flag, arm->spec,
				strerror(errno));
			return -errno;
		}
		arm->is_file = true;
		src.file = arm->file;
		/* as the runs will have it: ab's own log at the top level */
		src.options = "log=/twshim-ab.jsonl";
	} else if (arm->spec[0] && !strchr(arm->spec, '=')) {
		fprintf(stderr, "twshim ab: -%c %s: no such file, nor KEY=VAL settings\n", flag,
			arm->spec);
		return -ENOENT;
	} else {
		src.options = arm->spec;
	}
	if (conf_load(&conf, &src, err, sizeof(err))) {
		/* the option string came from -a/-b, not from the environment */
		msg = strncmp(err, opt_prefix, strlen(opt_prefix)) ? err
								    : err + strlen(opt_prefix);
		fprintf(stderr, "twshim ab: -%c %s: %s\n", flag, arm->spec, msg);
		return -EINVAL;
	}
	/*
	 * A rule or arm with a log of its own sends its records where ab does
	 * not read them: the arm would show 0 connections.
	 */
	if (arm->is_file && conf_nsinks(conf) > 1) {
		fprintf(stderr, "twshim ab: -%c %s: a rule or arm sets its own log; ab counts "
			"only the records it collects itself: remove that log\n", flag,
			arm->spec);
		conf_free(conf);
		return -EINVAL;
	}
	conf_free(conf);
	return 0;
}

static void remove_records(struct ab *ab)
{
	char path[PATH_MAX + 32];

	for (int k = 0; k < 2; k++)
		for (int i = 0; i < ab->runs; i++) {
			snprintf(path, sizeof(path), "%s/%s-%d.jsonl", ab->dir, ab->arm[k].name,
				 i + 1);
			unlink(path);
		}
	rmdir(ab->dir);
}

static int make_dir(struct ab *ab)
{
	const char *tmp = getenv("TMPDIR");

	/* the path goes into TWSHIM_OPTIONS: no commas, no % expansions */
	if (!tmp || !*tmp || tmp[0] != '/' || strpbrk(tmp, ",%=") || strlen(tmp) > 256)
		tmp = "/tmp";
	snprintf(ab->dir, sizeof(ab->dir), "%s/twshim-ab.XXXXXX", tmp);
	if (!mkdtemp(ab->dir)) {
		fprintf(stderr, "twshim ab: %s: %s\n", ab->dir, strerror(errno));
		return -errno;
	}
	return 0;
}

int cmd_ab(int argc, char **argv)
{
	static const struct option longopts[] = {
		{ "runs", required_argument, NULL, 'n' },
		{ "json", no_argument, NULL, 'j' },
		{ "netns", no_argument, NULL, 'N' },
		{ "keep", no_argument, NULL, 'k' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	struct ab ab = { .runs = AB_RUNS_DEFAULT };
	struct summary sum[2];
	struct sigaction sa;
	char log[PATH_MAX + 32], *end;
	int opt, ret = EXIT_USAGE, total, done = 0;
	long v;

	ab.arm[0].name = "A";
	ab.arm[1].name = "B";
	opterr = 0;
	optind = 1;
	while ((opt = getopt_long(argc, argv, "+a:b:n:jkh", longopts, NULL)) != -1) {
		switch (opt) {
		case 'a':
			ab.arm[0].spec = optarg;
			break;
		case 'b':
			ab.arm[1].spec = optarg;
			break;
		case 'n':
			errno = 0;
			v = strtol(optarg, &end, 10);
			if (errno || *end || end == optarg || v < 1 || v > AB_RUNS_MAX) {
				return usage_error("ab", "-n %s: expected a number from 1 to %d",
						   optarg, AB_RUNS_MAX);
			}
			ab.runs = (int)v;
			break;
		case 'j':
			ab.json = true;
			break;
		case 'N':
			ab.netns = true;
			break;
		case 'k':
			ab.keep = true;
			break;
		case 'h':
			fputs(ab_usage, stdout);
			return EXIT_OK;
		default:
			return usage_error("ab", "%s: unknown option or missing argument",
					   argv[optind - 1]);
		}
	}
	if (!ab.arm[0].spec || !ab.arm[1].spec) {
		return usage_error("ab", "both -a and -b are needed");
	}
	if (optind >= argc) {
		return usage_error("ab", "no program given");
	}
	ab.argv = argv + optind;
	for (int k = 0; k < 2; k++)
		if (arm_setup(&ab.arm[k], ab.argv[0]))
			return EXIT_USAGE;
	if (!program_exists(ab.argv[0])) {
		fprintf(stderr, "twshim ab: %s: program not found\n", ab.argv[0]);
		return EXIT_USAGE;
	}
	if (ab.netns && geteuid() != 0) {
		fprintf(stderr, "twshim ab: --netns needs root (unshare CLONE_NEWNET)\n");
		return EXIT_FAIL;
	}
	ab.lib = preload_lib_path("ab");
	if (!ab.lib)
		return EXIT_FAIL;
	if (make_dir(&ab))
		return EXIT_FAIL;
	ret = EXIT_FAIL;
	for (int k = 0; k < 2; k++) {
		ab.arm[k].runs = calloc((size_t)ab.runs, sizeof(struct run_result));
		if (!ab.arm[k].runs)
			goto out;
	}

	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_signal;
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);

	total = 2 * ab.runs;
	for (int i = 0; i < ab.runs && !stop_requested; i++) {
		for (int k = 0; k < 2 && !stop_requested; k++) {
			struct arm *arm = &ab.arm[k];
			struct run_result *res = &arm->runs[i];
			int code;

			snprintf(log, sizeof(log), "%s/%s-%d.jsonl", ab.dir, arm->name, i + 1);
			fprintf(stderr, "twshim ab: run %d/%d: %s (%s) ...\n", ++done, total,
				arm->name, arm->spec[0] ? arm->spec : "defaults");
			if (ab.netns)
				run_in_netns(&ab, arm, log, res);
			else
				run_and_sample(&ab, arm, log, res);
			arm->nruns = i + 1;
			read_records(log, res);
			code = exit_code(res->status);
			fprintf(stderr, "twshim ab: run %d/%d: %s: exit %d, %.3f s, "
				"%llu connections, TIME_WAIT peak %ld, at end %ld\n", done, total,
				arm->name, code,
				(double)res->wall_ns / 1e9, res->c.conns, res->tw_peak,
				res->tw_end);
			sleep_ms(GAP_MS);
		}
	}
	if (stop_requested) {
		fprintf(stderr, "twshim ab: interrupted after %d of %d runs\n", done, total);
		goto out;
	}

	for (int k = 0; k < 2; k++)
		summarize(&ab.arm[k], &sum[k]);
	if (ab.json)
		print_json(&ab, sum);
	else
		print_table(&ab, sum);
	if (ab.keep)
		fprintf(stderr, "twshim ab: records kept in %s\n", ab.dir);
	ret = sum[0].all_ok && sum[1].all_ok ? EXIT_OK : EXIT_FAIL;
	if (fflush(stdout))
		ret = EXIT_FAIL;
out:
	if (!ab.keep)
		remove_records(&ab);
	for (int k = 0; k < 2; k++)
		free(ab.arm[k].runs);
	return ret;
}
