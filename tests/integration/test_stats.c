// SPDX-License-Identifier: MIT
/*
 * The counters in the stats directory equal the records connection for
 * connection (threads, forked children); log_sample and log_only thin the
 * log and leave the counters exact; `twshim exporter`'s output passes
 * promtool and a real Prometheus scrapes it.
 */
#include <dirent.h>
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/stat.h>

#include <criterion/criterion.h>
#include <jansson.h>

#include "config.h"
#include "lab.h"
#include "record.h"
#include "stats.h"

/* Counters summed over every stats file in dir. */
struct sums {
	unsigned long long conns[TW_STATS_ROLES][TW_STATS_POLICIES][TW_STATS_ENDS];
	unsigned long long total, timeouts;
	long long deferred_now;
	int files;
	int pids[64];
};

static void stats_sum(const char *dir, struct sums *s)
{
	struct tw_stats_file f;
	struct dirent *de;
	DIR *d = opendir(dir);

	memset(s, 0, sizeof(*s));
	cr_assert_not_null(d, "%s", dir);
	while ((de = readdir(d))) {
		const char *dot = strrchr(de->d_name, '.');
		int fd;
		ssize_t n;

		if (!dot || strcmp(dot, TW_STATS_SUFFIX))
			continue;
		fd = openat(dirfd(d), de->d_name, O_RDONLY);
		cr_assert_geq(fd, 0, "%s", de->d_name);
		n = pread(fd, &f, sizeof(f), 0);
		close(fd);
		cr_assert_eq(stats_file_check(&f, (size_t)n), 0, "%s is no stats file", de->d_name);
		cr_assert(strstr(de->d_name, lab_fmt("%d-", f.pid)) == de->d_name,
			  "%s is named after its pid %d", de->d_name, f.pid);
		if (s->files < 64)
			s->pids[s->files] = f.pid;
		s->files++;
		for (int r = 0; r < TW_STATS_ROLES; r++)
			for (int p = 0; p < TW_STATS_POLICIES; p++)
				for (int a = 0; a < TW_STATS_ARMS; a++)
					for (int e = 0; e < TW_STATS_ENDS; e++) {
						s->conns[r][p][e] += f.conns[r][p][a][e];
						s->total += f.conns[r][p][a][e];
					}
		s->timeouts += f.defer_timeouts;
		s->deferred_now += f.deferred_now;
	}
	closedir(d);
}

/* Fails unless the counters hold, per role, policy and end, what the records hold. */
static void assert_counts_equal_records(const struct sums *s, const json_t *recs)
{
	static const char *const roles[] = { "client", "server" };
	static const char *const ends[] = { "active", "passive", "abort", "reset" };

	for (int r = 0; r < TW_STATS_ROLES; r++)
		for (int p = 0; p < TW_STATS_POLICIES; p++)
			for (int e = 0; e < TW_STATS_ENDS; e++) {
				const char *f = lab_fmt("role=%s,policy=%s,end=%s", roles[r],
							record_policy_name(p), ends[e]);

				cr_expect_eq(s->conns[r][p][e], lab_rec_count(recs, f),
					     "%s: counters %llu, records %zu (%s)", f,
					     s->conns[r][p][e], lab_rec_count(recs, f),
					     lab_rec_summary(recs));
			}
	cr_expect_eq(s->total, json_array_size(recs));
}

/*
 * A threaded client and a server that forks a child per connection, both
 * counting and logging: each process has a file of its own, and the counts
 * equal the records of every role, policy and end.
 */
Test(stats, counters_equal_records_across_threads_and_fork, .timeout = 120)
{
	const char *dir, *slog, *clog, *addr;
	struct lab_proc *srv, *c;
	json_t *srecs, *crecs;
	struct sums s;

	lab_enter(1000);
	dir = lab_path("stats");
	cr_assert_eq(mkdir(dir, 0755), 0);
	slog = lab_path("server.jsonl");
	clog = lab_path("client.jsonl");
	addr = lab_addr4(lab_port());
	srv = lab_start_server("server", lab_traced(slog, lab_fmt("stats=%s", dir)),
			       lab_example("tw-server"), "--fork", "-l", addr, NULL);
	c = lab_run("client", lab_traced(clog, lab_fmt("stats=%s,close=defer", dir)), 60000,
		    lab_example("tw-client"), "--threads", "4", "-n", "50", addr, NULL);
	lab_assert_ok(c, 200);
	srecs = lab_records_wait(slog, "", 200, 20000);
	cr_assert_eq(lab_stop(srv, 5000), 0, "%s", lab_stderr(srv));
	crecs = lab_records_checked(clog);
	cr_assert_eq(json_array_size(crecs), 200, "%s", lab_rec_summary(crecs));
	cr_assert_eq(json_array_size(srecs), 200, "%s", lab_rec_summary(srecs));
	json_array_extend(srecs, crecs);

	stats_sum(dir, &s);
	assert_counts_equal_records(&s, srecs);
	cr_expect_eq(s.deferred_now, 0, "no deferred connection is left in flight");
	/* the client, the server, and the server's children that ended a connection */
	cr_expect_geq(s.files, 3, "%d files", s.files);
	for (int i = 0; i < s.files && i < 64; i++)
		for (int k = 0; k < i; k++)
			cr_expect_neq(s.pids[i], s.pids[k], "one file per process");
	json_decref(srecs);
	json_decref(crecs);
}

/*
 * log_sample=10 over 2000 connections: the number written is binomial
 * (2000, 1/10), mean 200, standard deviation 13.4; 6 deviations either way
 * bound it. Every record says "sample": 10; the counters count all 2000.
 */
Test(stats, log_sample_writes_about_a_tenth_and_counts_all, .timeout = 120)
{
	const char *dir, *log, *addr;
	struct lab_proc *srv, *c;
	json_t *recs;
	struct sums s;
	double sd = sqrt(2000 * 0.1 * 0.9);
	size_t n;

	lab_enter(1000);
	dir = lab_path("stats");
	cr_assert_eq(mkdir(dir, 0755), 0);
	log = lab_path("client.jsonl");
	addr = lab_addr4(lab_port());
	srv = lab_start_server("server", NULL, lab_example("tw-server"), "-l", addr, NULL);
	c = lab_run("client", lab_traced(log, lab_fmt("stats=%s,log_sample=10", dir)), 60000,
		    lab_example("tw-client"), "-n", "2000", addr, NULL);
	lab_assert_ok(c, 2000);
	cr_assert_eq(lab_stop(srv, 5000), 0, "%s", lab_stderr(srv));
	recs = lab_records_checked(log);
	n = json_array_size(recs);
	cr_expect(n >= 200 - 6 * sd && n <= 200 + 6 * sd, "%zu records of 2000 at 1/10", n);
	lab_rec_assert_all(recs, "", "sample=10");
	stats_sum(dir, &s);
	cr_expect_eq(s.total, 2000, "the counters count every connection");
	cr_expect_eq(s.files, 1);
	json_decref(recs);
}

/* log_only=tw_local: only the ends that left TIME_WAIT here are written; all are counted. */
Test(stats, log_only_tw_local_writes_local_timewait_only, .timeout = 60)
{
	const char *dir, *log, *addr, *opts;
	struct lab_proc *srv, *c;
	json_t *recs;
	struct sums s;

	lab_enter(1000);
	dir = lab_path("stats");
	cr_assert_eq(mkdir(dir, 0755), 0);
	log = lab_path("client.jsonl");
	addr = lab_addr4(lab_port());
	opts = lab_fmt("stats=%s,log_only=tw_local", dir);
	srv = lab_start_server("server", NULL, lab_example("tw-server"), "--close", "last",
			       "-l", addr, NULL);
	c = lab_run("first", lab_traced(log, opts), 30000, lab_example("tw-client"), "-n", "30",
		    "--close", "first", addr, NULL);
	lab_assert_ok(c, 30);
	cr_assert_eq(lab_stop(srv, 5000), 0, "%s", lab_stderr(srv));
	/* now the server closes first: the TIME_WAIT is the server's, nothing is written */
	srv = lab_start_server("server2", NULL, lab_example("tw-server"), "-l", addr, NULL);
	c = lab_run("last", lab_traced(log, opts), 30000, lab_example("tw-client"), "-n", "20",
		    "--close", "last", addr, NULL);
	lab_assert_ok(c, 20);
	cr_assert_eq(lab_stop(srv, 5000), 0, "%s", lab_stderr(srv));
	recs = lab_records_checked(log);
	lab_rec_assert_count(recs, "", 30);
	lab_rec_assert_all(recs, "", "tw=local,!sample");
	stats_sum(dir, &s);
	cr_expect_eq(s.total, 50);
	cr_expect_eq(s.conns[TW_ROLE_CLIENT][TW_CLOSE_NORMAL][TW_END_ACTIVE], 30);
	json_decref(recs);
}

/* A directory that cannot be used: one line on stderr, the program unaffected. */
Test(stats, missing_directory_is_said_once_and_changes_nothing, .timeout = 60)
{
	const char *log, *addr;
	struct lab_proc *srv, *c;
	char *err;

	lab_enter(1000);
	log = lab_path("client.jsonl");
	addr = lab_addr4(lab_port());
	srv = lab_start_server("server", NULL, lab_example("tw-server"), "-l", addr, NULL);
	c = lab_run("client", lab_traced(log, lab_fmt("stats=%s", lab_path("no/such"))), 30000,
		    lab_example("tw-client"), "-n", "20", addr, NULL);
	lab_assert_ok(c, 20);
	cr_assert_eq(lab_stop(srv, 5000), 0, "%s", lab_stderr(srv));
	err = lab_stderr(c);
	cr_expect(strstr(err, "stats: cannot make a file in"), "%s", err);
	cr_expect_null(strstr(strstr(err, "stats:") + 1, "stats:"), "one line only:\n%s", err);
	json_decref(lab_records_expect(log, 20, NULL));
}

/* Field 22 of /proc/PID/stat, as the library names its file. */
static unsigned long long start_ticks(int pid)
{
	char *text = lab_read_file(lab_fmt("/proc/%d/stat", pid)), *p = strrchr(text, ')');
	unsigned long long v = 0;

	cr_assert_not_null(p);
	for (int field = 2; *p && field < 22; p++)
		if (*p == ' ')
			field++;
	sscanf(p, "%llu", &v);
	return v;
}

/*
 * The file's name taken by a symbolic link planted before the process's
 * first connection (and by a stale file): the link and its target stay
 * untouched, and the counters go to the next free name.
 */
Test(stats, planted_link_and_stale_file_are_left_alone, .timeout = 60)
{
	const char *dir, *victim, *base, *addr;
	struct lab_proc *srv, *c;
	struct sums s;
	char *after;

	lab_enter(1000);
	dir = lab_path("stats");
	cr_assert_eq(mkdir(dir, 0777), 0);
	victim = lab_path("victim");
	lab_write_file(victim, "precious\n");
	addr = lab_addr4(lab_port());
	srv = lab_start_server("server", lab_traced(lab_path("s.jsonl"),
						    lab_fmt("stats=%s", dir)),
			       lab_example("tw-server"), "-l", addr, NULL);
	base = lab_fmt("%s/%d-%llu", dir, srv->pid, start_ticks(srv->pid));
	cr_assert_eq(symlink(victim, lab_fmt("%s%s", base, TW_STATS_SUFFIX)), 0);
	lab_write_file(lab_fmt("%s-1%s", base, TW_STATS_SUFFIX), "stale\n");
	c = lab_run("client", NULL, 30000, lab_example("tw-client"), "-n", "5", addr, NULL);
	lab_assert_ok(c, 5);
	cr_assert_eq(lab_stop(srv, 5000), 0, "%s", lab_stderr(srv));
	after = lab_read_file(victim);
	cr_expect_str_eq(after, "precious\n", "the link's target is untouched");
	cr_expect_str_eq(lab_read_file(lab_fmt("%s-1%s", base, TW_STATS_SUFFIX)), "stale\n");
	cr_expect_eq(access(lab_fmt("%s-2%s", base, TW_STATS_SUFFIX), R_OK), 0,
		     "the counters go to the next name");
	/* stats_sum() checks every file: take the planted ones away first */
	unlink(lab_fmt("%s%s", base, TW_STATS_SUFFIX));
	unlink(lab_fmt("%s-1%s", base, TW_STATS_SUFFIX));
	stats_sum(dir, &s);
	cr_expect_eq(s.total, 5);
}

/*
 * Runs the pairs script in mode with n pairs under strace, first without
 * the library and then with `stats=DIR` and extra options, and fails
 * unless the library added `added` getsockname() calls. Fills *s from DIR.
 */
static void pairs_add_getsockname(const char *mode, const char *extra, int n, size_t added,
				  struct sums *s)
{
	const char *dir, *trace, *bare_trace, *py, *pairs;
	struct lab_opts *o = calloc(1, sizeof(*o)), *bare = calloc(1, sizeof(*bare));
	struct lab_proc *p;
	size_t want;

	if (getenv("TWSHIM_TEST_PRELOAD") && *getenv("TWSHIM_TEST_PRELOAD"))
		cr_skip_test("a sanitizer runtime makes system calls of its own");
	if (access("/usr/bin/strace", X_OK) != 0)
		cr_skip_test("/usr/bin/strace is not installed");
	py = "/usr/bin/python3";
	if (access(py, X_OK) != 0)
		cr_skip_test("%s is not installed", py);
	lab_enter(200);
	pairs = lab_pairs_script();
	dir = lab_path("stats");
	cr_assert_eq(mkdir(dir, 0755), 0);
	trace = lab_path("strace.out");
	bare_trace = lab_path("strace-bare.out");
	p = lab_run("bare", bare, 60000, "/usr/bin/strace", "-f", "--seccomp-bpf", "-e",
		    "trace=getsockname", "-o", bare_trace, py, pairs, mode, lab_fmt("%d", n),
		    NULL);
	cr_assert_eq(lab_exit_code(p), 0, "%s%s", lab_stdout(p), lab_stderr(p));
	want = lab_lines_with(lab_read_file(bare_trace), "getsockname(");
	lab_settle(5000);
	o->preload = true;
	o->options = lab_fmt("stats=%s%s", dir, extra);
	p = lab_run("pairs", o, 60000, "/usr/bin/strace", "-f", "--seccomp-bpf", "-e",
		    "trace=getsockname", "-o", trace, py, pairs, mode, lab_fmt("%d", n), NULL);
	cr_assert_eq(lab_exit_code(p), 0, "%s%s", lab_stdout(p), lab_stderr(p));
	stats_sum(dir, s);
	cr_assert_eq(lab_lines_with(lab_read_file(trace), "getsockname("), want + added,
		     "getsockname() calls, %zu without the library, %zu more expected: %s", want,
		     added, lab_read_file(trace));
}

/*
 * Counters alone (stats, no log) need no local address: both ends of each
 * connection (in one single-threaded program) are counted exactly, and
 * strace counts as many getsockname() calls as without the library (the
 * program's own; the library read one at every connect and accept before).
 */
Test(stats, counters_alone_read_no_local_address, .timeout = 60)
{
	const int n = 40;
	struct sums s;

	pairs_add_getsockname("plain", "", n, 0, &s);
	cr_expect_eq(s.conns[TW_ROLE_SERVER][TW_CLOSE_NORMAL][TW_END_ACTIVE], (unsigned)n);
	cr_expect_eq(s.conns[TW_ROLE_CLIENT][TW_CLOSE_NORMAL][TW_END_PASSIVE], (unsigned)n);
	cr_expect_eq(s.total, 2u * n);
}

/*
 * The same under defer, each server end deferred until its client shuts
 * down: the closer settles it at that FIN and asks nothing, so it never
 * needs the local address, nor does the client's end, which its shutdown
 * decided (both read one, at every accept and connect, before). The run
 * without the library leaves its n TIME_WAIT on the server's side.
 */
Test(stats, deferred_counters_alone_read_no_local_address_at_accept, .timeout = 60)
{
	const int n = 20;
	struct sums s;
	unsigned long long client_active = 0;

	pairs_add_getsockname("defer-peer", ",close=defer,defer_ms=5000", n, 0, &s);
	cr_expect_eq(s.conns[TW_ROLE_SERVER][TW_CLOSE_DEFER][TW_END_PASSIVE], (unsigned)n,
		     "server: defer, passive: %llu",
		     s.conns[TW_ROLE_SERVER][TW_CLOSE_DEFER][TW_END_PASSIVE]);
	for (int p = 0; p < TW_STATS_POLICIES; p++)
		client_active += s.conns[TW_ROLE_CLIENT][p][TW_END_ACTIVE];
	cr_expect_eq(client_active, (unsigned)n);
	cr_expect_eq(s.timeouts, 0u, "timeouts %llu", s.timeouts);
	cr_expect_eq(s.total, 2u * n);
	cr_expect_eq(lab_tw_total(), 2 * n, "TIME_WAIT sockets, as the kernel counts them: %ld",
		     lab_tw_total());
}

/*
 * Counters alone: a client that read its peer's reset (ECONNRESET) before
 * it closed counts `reset`, as its record would say. Its peek finds the end
 * of the stream, as after a FIN: only the state tells the two apart.
 */
Test(stats, counters_alone_tell_a_reset_read_from_the_peers_fin, .timeout = 60)
{
	struct lab_opts *o = calloc(1, sizeof(*o));
	const char *dir;
	struct lab_proc *p;
	struct sums s;

	lab_enter(100);
	dir = lab_path("stats");
	cr_assert_eq(mkdir(dir, 0755), 0);
	o->preload = true;
	o->options = lab_fmt("stats=%s", dir);
	p = lab_run("reset", o, 30000, lab_test_program("tw-scenario", 30000), "--netns",
		    "peer_reset", NULL);
	cr_assert_eq(lab_exit_code(p), 0, "%s%s", lab_stdout(p), lab_stderr(p));
	cr_assert(strstr(lab_stdout(p), "recv after peer reset"), "%s", lab_stdout(p));
	stats_sum(dir, &s);
	cr_expect_eq(s.conns[TW_ROLE_CLIENT][TW_CLOSE_NORMAL][TW_END_RESET], 1u,
		     "the client's reset: %llu",
		     s.conns[TW_ROLE_CLIENT][TW_CLOSE_NORMAL][TW_END_RESET]);
	cr_expect_eq(s.conns[TW_ROLE_CLIENT][TW_CLOSE_NORMAL][TW_END_PASSIVE], 0u);
	/* the peer runs without the library */
	cr_expect_eq(s.total, 1u);
}
