// SPDX-License-Identifier: MIT
/*
 * `twshim report` on record files, run as a user would run it: the built
 * tool, fixtures in tests/fixtures/records/, its stdout, stderr and exit
 * status. No root needed.
 */
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <limits.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <criterion/criterion.h>
#include <jansson.h>

#define FIXTURES	"tests/fixtures/records/"

struct tool_run {
	int code;		/* exit status, 128 + signal */
	char *out, *err;
	long maxrss_kb;
	double secs;
};

/* build/twshim: TWSHIM_BUILD, else next to this test binary's directory (B/tests/unit) */
static const char *tool_path(void)
{
	static char path[PATH_MAX];
	const char *b = getenv("TWSHIM_BUILD");
	char self[PATH_MAX];
	ssize_t n;

	if (b && *b) {
		snprintf(path, sizeof(path), "%s/twshim", b);
		return path;
	}
	n = readlink("/proc/self/exe", self, sizeof(self) - 1);
	if (n > 0) {
		self[n] = '\0';
		snprintf(path, sizeof(path), "%s/twshim", dirname(dirname(self)));
		if (access(path, X_OK) == 0)
			return path;
	}
	return "build/twshim";
}

static char *slurp_fd(int fd)
{
	size_t cap = 4096, len = 0;
	char *buf = malloc(cap);
	ssize_t n;

	cr_assert(buf);
	lseek(fd, 0, SEEK_SET);
	while ((n = read(fd, buf + len, cap - len - 1)) > 0) {
		len += (size_t)n;
		if (cap - len < 2) {
			cap *= 2;
			buf = realloc(buf, cap);
			cr_assert(buf);
		}
	}
	buf[len] = '\0';
	return buf;
}

static int temp_fd(void)
{
	char name[] = "/tmp/twshim-report-test.XXXXXX";
	int fd = mkstemp(name);

	cr_assert_geq(fd, 0, "mkstemp: %s", strerror(errno));
	unlink(name);
	return fd;
}

/*
 * Runs the tool with argv (NULL-terminated, without argv[0]). feed, when not
 * NULL, writes its standard input through a pipe.
 */
static void tool_run_feed(struct tool_run *r, void (*feed)(FILE *in, void *arg), void *arg,
			  const char *const *argv)
{
	const char *tool = tool_path();
	int out = temp_fd(), err = temp_fd(), p[2] = { -1, -1 }, status;
	struct timespec t0, t1;
	struct rusage ru;
	pid_t pid;
	char *args[64];
	int n = 0;

	cr_assert_eq(access(tool, X_OK), 0, "%s is not built", tool);
	args[n++] = (char *)"twshim";
	for (; argv[n - 1] && n < 63; n++)
		args[n] = (char *)argv[n - 1];
	args[n] = NULL;
	if (feed)
		cr_assert_eq(pipe(p), 0);
	clock_gettime(CLOCK_MONOTONIC, &t0);
	pid = fork();
	cr_assert_geq(pid, 0);
	if (pid == 0) {
		dup2(out, 1);
		dup2(err, 2);
		if (feed) {
			dup2(p[0], 0);
			close(p[1]);
		} else {
			int null = open("/dev/null", O_RDONLY);

			dup2(null, 0);
		}
		execv(tool, args);
		_exit(127);
	}
	if (feed) {
		FILE *in;

		close(p[0]);
		signal(SIGPIPE, SIG_IGN);
		in = fdopen(p[1], "w");
		cr_assert(in);
		feed(in, arg);
		fclose(in);
	}
	cr_assert_eq(wait4(pid, &status, 0, &ru), pid);
	clock_gettime(CLOCK_MONOTONIC, &t1);
	r->code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
	r->out = slurp_fd(out);
	r->err = slurp_fd(err);
	r->maxrss_kb = ru.ru_maxrss;
	r->secs = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
	close(out);
	close(err);
}

static void tool_run(struct tool_run *r, const char *const *argv)
{
	tool_run_feed(r, NULL, NULL, argv);
}

#define TOOL(r, ...)	tool_run((r), (const char *const[]){ __VA_ARGS__, NULL })

/* report --json output, parsed; fails the test when it is not JSON */
static json_t *report_json(const char *by, const char *file)
{
	struct tool_run r;
	json_error_t jerr;
	json_t *j;

	TOOL(&r, "report", "--json", "--by", by, file);
	cr_assert_eq(r.code, 0, "exit %d: %s", r.code, r.err);
	j = json_loads(r.out, 0, &jerr);
	cr_assert(j, "--json output is not JSON: %s\n%s", jerr.text, r.out);
	free(r.out);
	free(r.err);
	return j;
}

static json_t *group(json_t *report, const char *key)
{
	json_t *groups = json_object_get(report, "groups"), *g;
	size_t i;

	cr_assert(json_is_array(groups));
	json_array_foreach(groups, i, g)
		if (!strcmp(json_string_value(json_object_get(g, "key")), key))
			return g;
	cr_assert_fail("no group \"%s\" in %s", key, json_dumps(report, 0));
	return NULL;
}

static long num(json_t *o, const char *key)
{
	json_t *v = json_object_get(o, key);

	cr_assert(json_is_integer(v), "\"%s\" is not an integer", key);
	return (long)json_integer_value(v);
}

/* connections, tw_local, tw_peer, tw_none, deferred, timeouts, tw_now */
static void expect_counts(json_t *g, long conns, long local, long peer, long none,
			  long deferred, long timeouts, long now)
{
	const char *key = json_string_value(json_object_get(g, "key"));

	cr_expect_eq(num(g, "connections"), conns, "%s: connections", key ? key : "totals");
	cr_expect_eq(num(g, "tw_local"), local, "%s: tw_local", key ? key : "totals");
	cr_expect_eq(num(g, "tw_peer"), peer, "%s: tw_peer", key ? key : "totals");
	cr_expect_eq(num(g, "tw_none"), none, "%s: tw_none", key ? key : "totals");
	cr_expect_eq(num(g, "deferred"), deferred, "%s: deferred", key ? key : "totals");
	cr_expect_eq(num(g, "timeouts"), timeouts, "%s: timeouts", key ? key : "totals");
	cr_expect_eq(num(g, "tw_now"), now, "%s: tw_now", key ? key : "totals");
}

Test(report, counts_per_process_equal_the_records)
{
	json_t *j = report_json("process", FIXTURES "basic.jsonl");

	cr_expect_str_eq(json_string_value(json_object_get(j, "by")), "process");
	cr_expect_eq(json_array_size(json_object_get(j, "groups")), 3);
	expect_counts(group(j, "curl"), 4, 2, 1, 1, 2, 0, 0);
	expect_counts(group(j, "nginx"), 4, 2, 1, 1, 1, 0, 0);
	expect_counts(group(j, "redis-cli"), 2, 2, 0, 0, 1, 1, 0);
	expect_counts(json_object_get(j, "totals"), 10, 6, 2, 2, 4, 1, 0);
	cr_expect_eq(num(j, "records"), 10);
	cr_expect_eq(num(j, "malformed"), 0);
	json_decref(j);
}

Test(report, sampled_records_count_for_the_connections_they_stand_for)
{
	json_t *j = report_json("process", FIXTURES "sampled.jsonl");

	/* two records of 1 in 10, one whole; a sample of 0 or "3" is no record */
	expect_counts(group(j, "edge"), 21, 11, 10, 0, 10, 10, 0);
	cr_expect_eq(num(j, "records"), 3);
	cr_expect_eq(num(j, "malformed"), 2);
	json_decref(j);
}

Test(report, by_remote_groups_hosts_and_folds_mapped_ipv4)
{
	json_t *j = report_json("remote", FIXTURES "basic.jsonl");

	cr_expect_eq(json_array_size(json_object_get(j, "groups")), 5);
	expect_counts(group(j, "192.0.2.10"), 2, 2, 0, 0, 0, 0, 0);
	expect_counts(group(j, "2001:db8::5"), 3, 1, 1, 1, 2, 0, 0);
	expect_counts(group(j, "198.51.100.7"), 2, 1, 1, 0, 1, 0, 0);
	expect_counts(group(j, "198.51.100.8"), 1, 0, 0, 1, 0, 0, 0);
	/* "127.0.0.1:6379" and "[::ffff:127.0.0.1]:6379" are one host */
	expect_counts(group(j, "127.0.0.1"), 2, 2, 0, 0, 1, 1, 0);
	json_decref(j);
}

Test(report, by_port_is_remote_port_of_clients_and_local_port_of_servers)
{
	json_t *j = report_json("port", FIXTURES "basic.jsonl");

	cr_expect_eq(json_array_size(json_object_get(j, "groups")), 3);
	expect_counts(group(j, "80"), 5, 3, 1, 1, 1, 0, 0);
	expect_counts(group(j, "443"), 3, 1, 1, 1, 2, 0, 0);
	expect_counts(group(j, "6379"), 2, 2, 0, 0, 1, 1, 0);
	json_decref(j);
}

Test(report, by_arm_puts_records_without_arm_under_dash)
{
	json_t *j = report_json("arm", FIXTURES "basic.jsonl");

	cr_expect_eq(json_array_size(json_object_get(j, "groups")), 3);
	expect_counts(group(j, "-"), 4, 4, 0, 0, 1, 1, 0);
	expect_counts(group(j, "control"), 3, 2, 0, 1, 0, 0, 0);
	expect_counts(group(j, "defer"), 3, 0, 2, 1, 3, 0, 0);
	json_decref(j);
}

Test(report, escapes_utf8_spacing_and_nesting_are_read_as_json)
{
	json_t *j = report_json("process", FIXTURES "escaped.jsonl");

	cr_expect_eq(num(j, "records"), 3);
	cr_expect_eq(num(j, "malformed"), 0);
	expect_counts(group(j, "we\"ird"), 1, 1, 0, 0, 0, 0, 0);
	expect_counts(group(j, "na\xc3\xafve"), 1, 0, 1, 0, 0, 0, 0);
	/* a later duplicate key wins, as in jansson */
	expect_counts(group(j, "spaced"), 1, 0, 1, 0, 0, 0, 0);
	json_decref(j);
}

Test(report, table_has_aligned_columns_and_a_total_row)
{
	struct tool_run r;
	char *line, *save;
	size_t width = 0;
	int rows = 0;
	bool total = false;

	TOOL(&r, "report", FIXTURES "basic.jsonl");
	cr_assert_eq(r.code, 0, "%s", r.err);
	cr_expect_str_eq(r.err, "");
	for (line = strtok_r(r.out, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
		if (!strncmp(line, "TW_NOW:", 7))
			continue;
		/* numbers are right-aligned: every row ends in the same column */
		if (!width)
			width = strlen(line);
		cr_expect_eq(strlen(line), width, "ragged row: '%s'", line);
		rows++;
		if (!strncmp(line, "TOTAL", 5)) {
			total = true;
			cr_expect(strstr(line, " 10 ") && strstr(line, " 6 "), "total: %s", line);
		}
	}
	cr_expect_eq(rows, 5, "header, 3 processes, total");
	cr_expect(total);
}

Test(report, broken_lines_are_named_counted_and_skipped)
{
	static const int bad[] = { 2, 4, 6, 7, 8, 9, 11, 12, 13 };
	struct tool_run r;
	char want[128];
	json_t *j;

	TOOL(&r, "report", "--json", FIXTURES "broken.jsonl");
	cr_assert_eq(r.code, 0, "malformed lines are never fatal: %s", r.err);
	j = json_loads(r.out, 0, NULL);
	cr_assert(j, "%s", r.out);
	cr_expect_eq(num(j, "records"), 3);
	cr_expect_eq(num(j, "malformed"), 9);
	expect_counts(group(j, "worker"), 3, 2, 1, 0, 0, 0, 0);
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		snprintf(want, sizeof(want), "broken.jsonl:%d: ", bad[i]);
		cr_expect(strstr(r.err, want), "stderr does not name line %d:\n%s", bad[i], r.err);
	}
	/* line 5 is blank: not a record, not an error */
	cr_expect_null(strstr(r.err, "broken.jsonl:5:"), "%s", r.err);
	cr_expect(strstr(r.err, "real number overflow"), "jansson's own words: %s", r.err);
	json_decref(j);
}

static void feed_many_bad(FILE *in, void *arg)
{
	(void)arg;
	for (int i = 0; i < 25; i++)
		fprintf(in, "garbage %d\n", i);
	fprintf(in, "{\"ts\":1.5,\"pid\":7,\"comm\":\"ok\",\"role\":\"client\","
		"\"local\":\"127.0.0.1:1\",\"remote\":\"127.0.0.1:2\",\"tw\":\"none\"}\n");
}

Test(report, many_broken_lines_are_all_counted_but_few_named)
{
	struct tool_run r;
	int named = 0;
	json_t *j;

	tool_run_feed(&r, feed_many_bad, NULL, (const char *const[]){ "report", "--json", "-",
								      NULL });
	cr_assert_eq(r.code, 0, "%s", r.err);
	j = json_loads(r.out, 0, NULL);
	cr_assert(j, "%s", r.out);
	cr_expect_eq(num(j, "malformed"), 25);
	cr_expect_eq(num(j, "records"), 1);
	for (const char *p = r.err; (p = strstr(p, "<stdin>:")); p++)
		named++;
	cr_expect_eq(named, 10, "%s", r.err);
	cr_expect(strstr(r.err, "15 more"), "%s", r.err);
	json_decref(j);
}

/* records made now and 100 s ago: only the recent tw=local ones are still held */
static void feed_recent(FILE *in, void *arg)
{
	double now = *(double *)arg;
	static const char *const tw[] = { "local", "local", "local", "peer", "none" };

	for (int i = 0; i < 5; i++)
		fprintf(in, "{\"ts\":%.6f,\"pid\":9,\"comm\":\"fresh\",\"role\":\"client\","
			"\"local\":\"127.0.0.1:%d\",\"remote\":\"127.0.0.1:80\",\"tw\":\"%s\"}\n",
			now - 10, 40000 + i, tw[i]);
	for (int i = 0; i < 4; i++)
		fprintf(in, "{\"ts\":%.6f,\"pid\":9,\"comm\":\"fresh\",\"role\":\"client\","
			"\"local\":\"127.0.0.1:%d\",\"remote\":\"127.0.0.1:80\","
			"\"tw\":\"local\"}\n",
			now - 100, 41000 + i);
}

Test(report, tw_now_counts_local_timewait_of_the_last_60_seconds)
{
	struct timespec ts;
	struct tool_run r;
	double now;
	json_t *j;

	clock_gettime(CLOCK_REALTIME, &ts);
	now = (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
	tool_run_feed(&r, feed_recent, &now, (const char *const[]){ "report", "--json", "-",
								    NULL });
	cr_assert_eq(r.code, 0, "%s", r.err);
	j = json_loads(r.out, 0, NULL);
	cr_assert(j, "%s", r.out);
	expect_counts(group(j, "fresh"), 9, 7, 1, 1, 0, 0, 3);
	json_decref(j);
}

Test(report, several_files_add_up_and_a_missing_one_fails)
{
	struct tool_run r;
	json_t *j;

	TOOL(&r, "report", "--json", FIXTURES "basic.jsonl", FIXTURES "basic.jsonl");
	cr_assert_eq(r.code, 0);
	j = json_loads(r.out, 0, NULL);
	expect_counts(json_object_get(j, "totals"), 20, 12, 4, 4, 8, 2, 0);
	json_decref(j);

	TOOL(&r, "report", "--json", FIXTURES "basic.jsonl", "/nonexistent/twshim.jsonl");
	cr_expect_eq(r.code, 1);
	cr_expect(strstr(r.err, "/nonexistent/twshim.jsonl"), "%s", r.err);
	j = json_loads(r.out, 0, NULL);
	cr_assert(j, "the readable file is still reported: %s", r.out);
	cr_expect_eq(num(j, "records"), 10);
	json_decref(j);
}

Test(report, usage_errors_exit_2_and_help_exits_0)
{
	struct tool_run r;

	TOOL(&r, "report");
	cr_expect_eq(r.code, 2, "no LOG");
	cr_expect(strstr(r.err, "no LOG") && strstr(r.err, "--help"), "%s", r.err);
	TOOL(&r, "report", "--by", "colour", FIXTURES "basic.jsonl");
	cr_expect_eq(r.code, 2);
	cr_expect(strstr(r.err, "colour"), "%s", r.err);
	TOOL(&r, "report", "--bogus", FIXTURES "basic.jsonl");
	cr_expect_eq(r.code, 2);
	TOOL(&r, "report", "--help");
	cr_expect_eq(r.code, 0);
	cr_expect(strstr(r.out, "--by"), "%s", r.out);
	TOOL(&r, "frobnicate");
	cr_expect_eq(r.code, 2);
	TOOL(&r, "--help");
	cr_expect_eq(r.code, 0);
	cr_expect(strstr(r.out, "report"), "%s", r.out);
	for (int i = 0; i < 4; i++) {
		static const char *const cmds[] = { "run", "report", "tw", "ab" };

		TOOL(&r, cmds[i], "--help");
		cr_expect_eq(r.code, 0, "%s --help", cmds[i]);
		cr_expect(strstr(r.out, "usage: twshim"), "%s --help: %s", cmds[i], r.out);
	}
}

#define MANY 1000000

static void feed_million(FILE *in, void *arg)
{
	(void)arg;
	setvbuf(in, NULL, _IOFBF, 1 << 16);
	for (long i = 0; i < MANY; i++)
		fprintf(in, "{\"ts\":1700000000.%06ld,\"pid\":%ld,\"comm\":\"proc%ld\","
			"\"role\":\"client\",\"local\":\"10.1.%ld.%ld:%ld\","
			"\"remote\":\"192.0.2.%ld:443\",\"policy\":\"normal\","
			"\"state\":\"ESTABLISHED\",\"end\":\"active\",\"tw\":\"%s\","
			"\"via\":\"close\",\"dur_ms\":1.250,\"bytes_acked\":517,"
			"\"bytes_received\":4096,\"fd\":7}\n",
			i % 1000000, 1000 + i % 5, i % 5, (i >> 8) & 255, i & 255,
			30000 + i % 30000, i % 7, i % 4 ? "local" : "peer");
}

/* Streaming: a million records in seconds, with memory that does not grow with them. */
Test(report, million_records_stream_in_bounded_memory, .timeout = 120)
{
	struct tool_run r;
	json_t *j;

	tool_run_feed(&r, feed_million, NULL, (const char *const[]){ "report", "--json", "-",
								     NULL });
	cr_assert_eq(r.code, 0, "%s", r.err);
	j = json_loads(r.out, 0, NULL);
	cr_assert(j, "%s", r.out);
	cr_expect_eq(num(j, "records"), MANY);
	expect_counts(json_object_get(j, "totals"), MANY, MANY * 3 / 4, MANY / 4, 0, 0, 0, 0);
	expect_counts(group(j, "proc3"), MANY / 5, 150000, 50000, 0, 0, 0, 0);
	/* ~270 MB went through; the tool's peak RSS stays small */
	cr_expect_lt(r.maxrss_kb, 32 * 1024, "peak RSS %ld kB", r.maxrss_kb);
	cr_expect_lt(r.secs, 20.0, "took %.1f s", r.secs);
	json_decref(j);
}

/* what defer adds: ended by the holder, learned at once, connects that waited */
Test(report, held_learned_and_waited_connects_are_counted)
{
	json_t *j = report_json("process", FIXTURES "defer.jsonl");
	json_t *curl = group(j, "curl"), *wget = group(j, "wget");

	cr_expect_eq(num(curl, "held"), 1);
	cr_expect_eq(num(curl, "learned"), 1);
	cr_expect_eq(num(curl, "connect_waits"), 1);
	cr_expect_eq(num(wget, "held"), 0, "held: false is not held");
	cr_expect_eq(num(wget, "learned"), 0, "another why is not learned");
	cr_expect_eq(num(json_object_get(j, "totals"), "connections"), 4);
	json_decref(j);
}
