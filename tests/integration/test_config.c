// SPDX-License-Identifier: MIT
/*
 * Per-process and per-connection policies from a configuration file: rules
 * on the process name, the service port and the peer's address; A/B arms
 * drawn per connection and per process; and secure-execution mode, where a
 * set-user-ID program ignores TWSHIM_CONFIG and TWSHIM_OPTIONS.
 *
 * Each test checks two things: the policy the close records claim, and the
 * TIME_WAIT sockets the kernel really holds, matched one for one by 4-tuple
 * to the records that say tw=local. The servers are not preloaded and close
 * an idle connection 50 ms after the client went quiet: a client whose close
 * is passed through closes first (one client-side TIME_WAIT each), a client
 * whose close is deferred is freed by the server's FIN (none).
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <link.h>
#include <pwd.h>
#include <sched.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

#include "lab.h"

#define RUN_MS	60000	/* bound on one example program's run */

/* Writes a file in the scratch directory from a format; returns its path. */
__attribute__((format(printf, 2, 3)))
static const char *write_file(const char *path, const char *fmt, ...)
{
	va_list ap;
	FILE *f;

	f = fopen(path, "we");
	cr_assert(f, "fopen %s: %s", path, strerror(errno));
	va_start(ap, fmt);
	vfprintf(f, fmt, ap);
	va_end(ap);
	cr_assert(fclose(f) == 0, "write %s: %s", path, strerror(errno));
	return path;
}

/*
 * Copies a program or library to dst with the given mode. The mode is set
 * last: writing to a file clears its set-user-ID bit.
 */
static void copy_file(const char *src, const char *dst, mode_t mode)
{
	char buf[65536];
	ssize_t n;
	int in, out;

	in = open(src, O_RDONLY | O_CLOEXEC);
	cr_assert(in >= 0, "open %s: %s (build it first)", src, strerror(errno));
	out = open(dst, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0700);
	cr_assert(out >= 0, "create %s: %s", dst, strerror(errno));
	while ((n = read(in, buf, sizeof(buf))) > 0)
		cr_assert(write(out, buf, (size_t)n) == n, "write %s: %s", dst, strerror(errno));
	cr_assert(n == 0, "read %s: %s", src, strerror(errno));
	close(in);
	cr_assert(close(out) == 0, "close %s: %s", dst, strerror(errno));
	cr_assert(chmod(dst, mode) == 0, "chmod %s: %s", dst, strerror(errno));
}

/* A tw-server that is not preloaded and closes idle connections after 50 ms. */
static struct lab_proc *idle_server(const char *name, const char *addr)
{
	return lab_start_server(name, NULL, lab_example("tw-server"), "-l", addr, "--close",
				"last", "--idle-ms", "50", "--threads", "64", NULL);
}

/*
 * Runs prog (tw-client or a copy of it) under conf: n connections to addr,
 * each closed right after the reply. Asserts that all of them succeeded.
 */
static struct lab_proc *client(const char *name, const char *prog, const char *conf, int n,
			       const char *addr)
{
	struct lab_proc *c;
	char *out;

	c = lab_run(name, lab_configured(conf), RUN_MS, prog, "-n", lab_fmt("%d", n), "--close",
		    "first", addr, NULL);
	out = lab_stdout(c);
	cr_assert_eq(lab_exit_code(c), 0, "%s failed: %s\n%s", name, out, lab_stderr(c));
	cr_assert_eq(lab_value_long(out, "ok"), n, "%s: %s", name, out);
	free(out);
	return c;
}

/*
 * scratch/twshim.conf: records to log, and connections to the service port
 * deferred by a rule; the rest get the top level (more, when not NULL, is
 * put there). Returns its path.
 */
static const char *port_rule_conf(const char *log, int port, const char *more)
{
	return write_file(lab_path("twshim.conf"),
			  "log = \"%s\";\n"
			  "%s"
			  "rules = ( { port = %d; close = \"defer\"; } );\n", log, more ? more : "",
			  port);
}

/*
 * scratch/twshim.conf: records to log, and two A/B arms drawn per split
 * ("connection" or "process"): "normal" (the top level) and "defer", with
 * their weights. Returns its path.
 */
static const char *ab_conf(const char *log, const char *split, int w_normal, int w_defer)
{
	return write_file(lab_path("twshim.conf"),
			  "log = \"%s\";\n"
			  "ab = {\n"
			  "  split = \"%s\";\n"
			  "  arms = ( { name = \"normal\"; weight = %d; },\n"
			  "           { name = \"defer\"; close = \"defer\"; weight = %d; } );\n"
			  "};\n", log, split, w_normal, w_defer);
}

/*
 * How many of the kernel's TIME_WAIT sockets (lab_tw_list()) belong to a
 * record that matches filter. A client-side TIME_WAIT socket has the local
 * and remote address of the client's record; a port used again later gives
 * a second record with the same 4-tuple, and the socket belongs to the
 * latest of them (by ts).
 */
static size_t tw_of(const json_t *kernel, const json_t *recs, const char *filter)
{
	size_t i, j, n = 0;

	for (i = 0; i < json_array_size(kernel); i++) {
		json_t *k = json_array_get(kernel, i);
		const char *l = json_string_value(json_object_get(k, "local"));
		const char *r = json_string_value(json_object_get(k, "remote"));
		json_t *last = NULL;

		for (j = 0; j < json_array_size(recs); j++) {
			json_t *rec = json_array_get(recs, j);

			if (strcmp(l, json_string_value(json_object_get(rec, "local"))) ||
			    strcmp(r, json_string_value(json_object_get(rec, "remote"))))
				continue;
			if (!last || json_number_value(json_object_get(rec, "ts")) >
				     json_number_value(json_object_get(last, "ts")))
				last = rec;
		}
		if (last && lab_rec_match(last, filter))
			n++;
	}
	return n;
}

/*
 * The records that claim tw=local among those matching filter must be
 * exactly the TIME_WAIT sockets the kernel holds for them.
 */
static void assert_tw_matches(const json_t *kernel, const json_t *recs, const char *filter,
			      size_t want)
{
	size_t held = tw_of(kernel, recs, filter);
	size_t claimed = lab_rec_count(recs, lab_fmt("%s%stw=local", filter, *filter ? "," : ""));

	cr_assert_eq(held, want, "kernel TIME_WAIT sockets with the 4-tuple of a '%s' record: "
		     "%zu, expected %zu", filter, held, want);
	cr_assert_eq(claimed, want, "'%s' records with tw=local: %zu, expected %zu", filter,
		     claimed, want);
}

/*
 * Two programs, one file: the rule on the process name gives the copy named
 * batch-client close=defer; tw-client gets the top level (records only).
 * Both write to a log named after the process (%n).
 */
Test(config, two_programs_under_one_file_get_the_policies_their_rules_name, .timeout = 90)
{
	const char *conf, *batch, *alog, *blog;
	struct lab_proc *s, *a, *b;
	struct lab_tw tw;
	json_t *ar, *br, *kernel;
	int port;

	lab_enter(1000);
	batch = lab_path("batch-client");
	copy_file(lab_example("tw-client"), batch, 0755);
	conf = write_file(lab_path("twshim.conf"),
			  "log = \"%s/%%n.jsonl\";\n"
			  "rules = (\n"
			  "  { process = \"batch-*\"; close = \"defer\"; }\n"
			  ");\n", lab_dir());
	alog = lab_path("batch-client.jsonl");
	blog = lab_path("tw-client.jsonl");
	port = lab_port();
	s = idle_server("server", lab_addr4(port));

	a = client("batch", batch, conf, 50, lab_addr4(port));
	b = client("observed", lab_example("tw-client"), conf, 50, lab_addr4(port));

	ar = lab_records_checked(alog);
	lab_rec_assert_count(ar, "", 50);
	lab_rec_assert_all(ar, "", lab_fmt("pid=%d,comm=batch-client,role=client,policy=defer,"
					   "end=passive,tw=peer,!timeout,!arm", a->pid));
	br = lab_records_checked(blog);
	lab_rec_assert_count(br, "", 50);
	lab_rec_assert_all(br, "", lab_fmt("pid=%d,comm=tw-client,role=client,policy=normal,"
					   "end=active,tw=local,!arm", b->pid));

	/* the kernel: 50 client-side TIME_WAIT sockets, every one of them tw-client's */
	lab_tw_count(&tw, port);
	cr_assert_eq(tw.client, 50, "client-side TIME_WAIT: %ld (batch-client defers, "
		     "tw-client closes first)", tw.client);
	kernel = lab_tw_list();
	assert_tw_matches(kernel, br, "", 50);
	assert_tw_matches(kernel, ar, "", 0);
	lab_stop(s, 5000);
}

/*
 * A rule on the service port: connections to port X are deferred, those to
 * port Y (no rule) are passed through. The same program, the same file.
 */
Test(config, port_rule_defers_connections_to_one_service_port_only, .timeout = 90)
{
	const char *conf, *log;
	struct lab_proc *sx, *sy;
	struct lab_tw tw;
	json_t *recs, *kernel;
	int px, py;

	lab_enter(1000);
	log = lab_path("client.jsonl");
	px = lab_port();
	py = lab_port();
	conf = port_rule_conf(log, px, NULL);
	sx = idle_server("server-x", lab_addr4(px));
	sy = idle_server("server-y", lab_addr4(py));

	client("client-x", lab_example("tw-client"), conf, 30, lab_addr4(px));
	client("client-y", lab_example("tw-client"), conf, 30, lab_addr4(py));

	recs = lab_records_checked(log);
	lab_rec_assert_count(recs, "", 60);
	lab_rec_assert_count(recs, lab_fmt("remote=127.0.0.1:%d", px), 30);
	lab_rec_assert_count(recs, lab_fmt("remote=127.0.0.1:%d", py), 30);
	lab_rec_assert_all(recs, lab_fmt("remote=127.0.0.1:%d", px),
			   "policy=defer,end=passive,tw=peer,!timeout");
	lab_rec_assert_all(recs, lab_fmt("remote=127.0.0.1:%d", py),
			   "policy=normal,end=active,tw=local");

	lab_tw_count(&tw, px);
	cr_assert_eq(tw.client, 0, "client-side TIME_WAIT towards port %d (defer): %ld", px,
		     tw.client);
	lab_tw_count(&tw, py);
	cr_assert_eq(tw.client, 30, "client-side TIME_WAIT towards port %d (normal): %ld", py,
		     tw.client);
	kernel = lab_tw_list();
	assert_tw_matches(kernel, recs, lab_fmt("remote=127.0.0.1:%d", py), 30);
	assert_tw_matches(kernel, recs, lab_fmt("remote=127.0.0.1:%d", px), 0);
	lab_stop(sx, 5000);
	lab_stop(sy, 5000);
}

/*
 * The same within one process: bash's /dev/tcp connects to X and Y in
 * turn, and each connection takes the rule its port selects.
 */
Test(config, port_rule_selects_per_connection_within_one_process, .timeout = 60)
{
	static const char script[] =
		"for i in 1 2 3 4 5 6 7 8 9 10; do\n"
		"  for p in \"$1\" \"$2\"; do\n"
		"    exec 3<>\"/dev/tcp/127.0.0.1/$p\" || exit 1\n"
		"    echo hi >&3\n"
		"    read -r -t 5 line <&3 || exit 1\n"
		"    exec 3>&-\n"
		"  done\n"
		"done\n";
	const char *conf, *log, *rx, *ry;
	struct lab_proc *sx, *sy, *c;
	struct lab_tw tw;
	json_t *recs, *kernel;
	int px, py;

	lab_enter(1000);
	log = lab_path("bash.jsonl");
	px = lab_port();
	py = lab_port();
	rx = lab_fmt("remote=127.0.0.1:%d", px);
	ry = lab_fmt("remote=127.0.0.1:%d", py);
	conf = port_rule_conf(log, px, NULL);
	sx = idle_server("server-x", lab_addr4(px));
	sy = idle_server("server-y", lab_addr4(py));

	c = lab_run("bash", lab_configured(conf), RUN_MS, "/bin/bash", "-c", script, "bash",
		    lab_fmt("%d", px), lab_fmt("%d", py), NULL);
	cr_assert_eq(lab_exit_code(c), 0, "bash: %s%s", lab_stdout(c), lab_stderr(c));

	recs = lab_records_checked(log);
	lab_rec_assert_count(recs, "", 20);
	lab_rec_assert_all(recs, "", lab_fmt("pid=%d,comm=bash,role=client", c->pid));
	lab_rec_assert_count(recs, rx, 10);
	lab_rec_assert_count(recs, ry, 10);
	lab_rec_assert_all(recs, rx, "policy=defer,end=passive,tw=peer,!timeout");
	lab_rec_assert_all(recs, ry, "policy=normal,end=active,tw=local");

	lab_tw_count(&tw, px);
	cr_assert_eq(tw.client, 0, "client-side TIME_WAIT towards port %d (defer): %ld", px,
		     tw.client);
	lab_tw_count(&tw, py);
	cr_assert_eq(tw.client, 10, "client-side TIME_WAIT towards port %d (normal): %ld", py,
		     tw.client);
	kernel = lab_tw_list();
	assert_tw_matches(kernel, recs, ry, 10);
	assert_tw_matches(kernel, recs, rx, 0);
	lab_stop(sx, 5000);
	lab_stop(sy, 5000);
}

/*
 * TWSHIM_OPTIONS replace the file's top level, but a rule that matches
 * still has the last word: with close=abort in the options, connections to
 * the rule's port are deferred, the others reset.
 */
Test(config, options_override_the_top_level_but_not_a_matching_rule, .timeout = 60)
{
	const char *conf, *log;
	struct lab_proc *sx, *sy;
	struct lab_opts o;
	struct lab_tw tw;
	json_t *recs;
	int px, py, i;

	lab_enter(1000);
	log = lab_path("client.jsonl");
	px = lab_port();
	py = lab_port();
	conf = port_rule_conf(log, px, "close = \"normal\";\n");
	o = *lab_configured(conf);
	o.options = "close=abort";
	sx = idle_server("server-x", lab_addr4(px));
	sy = idle_server("server-y", lab_addr4(py));

	for (i = 0; i < 2; i++) {
		int port = i ? py : px;
		struct lab_proc *c = lab_run(i ? "client-y" : "client-x", &o, RUN_MS,
					     lab_example("tw-client"), "-n", "20", "--close",
					     "first", lab_addr4(port), NULL);

		cr_assert_eq(lab_value_long(lab_stdout(c), "ok"), 20, "%s%s", lab_stdout(c),
			     lab_stderr(c));
	}

	/* what was still deferred at exit ends in the holder, a little later */
	recs = lab_records_wait_expect(log, 40, NULL, 5000);
	lab_rec_assert_all(recs, lab_fmt("remote=127.0.0.1:%d", px),
			   "policy=defer,end=passive,tw=peer,!timeout");
	lab_rec_assert_all(recs, lab_fmt("remote=127.0.0.1:%d", py),
			   "policy=abort,end=abort,tw=none");
	lab_rec_assert_count(recs, "policy=defer", 20);
	lab_rec_assert_count(recs, "policy=abort", 20);

	lab_tw_count(&tw, px);
	cr_assert_eq(tw.client, 0, "client-side TIME_WAIT towards port %d (defer): %ld", px,
		     tw.client);
	lab_tw_count(&tw, py);
	cr_assert_eq(tw.client + tw.server, 0, "TIME_WAIT towards port %d (abort): %ld", py,
		     tw.client + tw.server);
	lab_stop(sx, 5000);
	lab_stop(sy, 5000);
}

/*
 * Rules on the peer's address, first match wins: 127.0.0.2 is reset
 * (abort), the rest of 127.0.0.0/8 deferred, and ::1, which no IPv4 network
 * matches, gets the top level.
 */
Test(config, remote_rules_tell_ipv4_networks_from_ipv6_loopback, .timeout = 90)
{
	const char *conf, *log, *a1, *a2, *a6;
	struct lab_proc *s1, *s2, *s6;
	struct lab_tw tw;
	json_t *recs, *kernel;
	int p1, p2, p6;

	lab_enter(1000);
	log = lab_path("client.jsonl");
	p1 = lab_port();
	p2 = lab_port();
	p6 = lab_port();
	a1 = lab_addr4(p1);
	a2 = lab_fmt("127.0.0.2:%d", p2);
	a6 = lab_addr6(p6);
	conf = write_file(lab_path("twshim.conf"),
			  "log = \"%s\";\n"
			  "rules = (\n"
			  "  { remote = \"127.0.0.2\"; close = \"abort\"; },\n"
			  "  { remote = \"127.0.0.0/8\"; close = \"defer\"; }\n"
			  ");\n", log);
	s1 = idle_server("server-v4", a1);
	s2 = idle_server("server-v4-2", a2);
	s6 = idle_server("server-v6", a6);

	client("client-v4", lab_example("tw-client"), conf, 20, a1);
	client("client-v4-2", lab_example("tw-client"), conf, 20, a2);
	client("client-v6", lab_example("tw-client"), conf, 20, a6);

	recs = lab_records_checked(log);
	lab_rec_assert_count(recs, "", 60);
	lab_rec_assert_count(recs, lab_fmt("remote=%s", a1), 20);
	lab_rec_assert_count(recs, lab_fmt("remote=%s", a2), 20);
	lab_rec_assert_count(recs, lab_fmt("remote=%s", a6), 20);
	lab_rec_assert_all(recs, lab_fmt("remote=%s", a1),
			   "policy=defer,end=passive,tw=peer,!timeout");
	lab_rec_assert_all(recs, lab_fmt("remote=%s", a2), "policy=abort,end=abort,tw=none");
	lab_rec_assert_all(recs, lab_fmt("remote=%s", a6), "policy=normal,end=active,tw=local");

	lab_tw_count(&tw, p1);
	cr_assert_eq(tw.client, 0, "client-side TIME_WAIT towards %s (defer): %ld", a1,
		     tw.client);
	lab_tw_count(&tw, p2);
	cr_assert_eq(tw.client + tw.server, 0, "TIME_WAIT on either side of %s (abort): %ld",
		     a2, tw.client + tw.server);
	lab_tw_count(&tw, p6);
	cr_assert_eq(tw.client, 20, "client-side TIME_WAIT towards %s (normal): %ld", a6,
		     tw.client);
	kernel = lab_tw_list();
	assert_tw_matches(kernel, recs, lab_fmt("remote=%s", a6), 20);
	assert_tw_matches(kernel, recs, lab_fmt("remote=%s", a1), 0);
	lab_stop(s1, 5000);
	lab_stop(s2, 5000);
	lab_stop(s6, 5000);
}

/*
 * n draws with probability w_num/w_den each: fails unless hits lies within
 * 4.5 standard deviations of n * w_num / w_den (a false alarm about once in
 * 150,000 runs). Squared, so that no libm is needed.
 */
static void assert_binomial(size_t hits, size_t n, unsigned w_num, unsigned w_den,
			    const char *what)
{
	double p = (double)w_num / w_den, mean = n * p, var = n * p * (1 - p);
	double d = (double)hits - mean;

	cr_assert(d * d <= 4.5 * 4.5 * var, "%s: %zu of %zu, expected %.0f (variance %.1f; "
		  "allowed: 4.5 standard deviations)", what, hits, n, mean, var);
}

/*
 * 1,000 connections of one process, each drawing its arm: 30 % normal, 70 %
 * deferred. 2,000 ports: the normal arm's TIME_WAIT must not exhaust them.
 */
Test(config, ab_split_per_connection_follows_the_weights_over_1000_connections,
     .timeout = 120)
{
	const char *conf, *log;
	struct lab_proc *s, *c;
	struct lab_tw tw;
	json_t *recs, *kernel;
	size_t n_normal, n_defer;
	int port;

	lab_enter(2000);
	log = lab_path("client.jsonl");
	conf = ab_conf(log, "connection", 30, 70);
	port = lab_port();
	s = idle_server("server", lab_addr4(port));
	c = client("client", lab_example("tw-client"), conf, 1000, lab_addr4(port));

	/* what was still deferred at exit ends in the holder, a little later */
	recs = lab_records_wait_expect(log, 1000, NULL, 5000);
	lab_rec_assert_all(recs, "", lab_fmt("pid=%d,arm", c->pid));
	n_normal = lab_rec_count(recs, "arm=normal");
	n_defer = lab_rec_count(recs, "arm=defer");
	cr_assert_eq(n_normal + n_defer, 1000, "arms other than normal and defer\n(%s)",
		     lab_rec_summary(recs));
	assert_binomial(n_normal, 1000, 30, 100, "connections in arm normal (weight 30 of 100)");
	lab_rec_assert_all(recs, "arm=normal", "policy=normal,end=active,tw=local");
	lab_rec_assert_all(recs, "arm=defer", "policy=defer,end=passive,tw=peer,!timeout");

	lab_tw_count(&tw, port);
	cr_assert_eq(tw.client, (long)n_normal, "client-side TIME_WAIT: %ld, arm normal has %zu "
		     "connections", tw.client, n_normal);
	kernel = lab_tw_list();
	assert_tw_matches(kernel, recs, "arm=normal", n_normal);
	assert_tw_matches(kernel, recs, "arm=defer", 0);
	lab_stop(s, 5000);
}

#define NPROC	20
#define NCONN	20

/*
 * 20 runs of the client, 20 connections each, with one arm drawn per
 * process (50/50): all of a process's records carry its arm, and both arms
 * turn up (all 20 in one arm: chance 2^-19).
 */
Test(config, ab_split_per_process_keeps_one_arm_for_all_connections_of_a_process,
     .timeout = 120)
{
	const char *conf, *log;
	struct lab_proc *s, *c[NPROC];
	struct lab_tw tw;
	json_t *recs, *kernel;
	size_t procs_normal = 0, procs_defer = 0;
	int port, i;

	lab_enter(1000);
	log = lab_path("client.jsonl");
	conf = ab_conf(log, "process", 50, 50);
	port = lab_port();
	s = idle_server("server", lab_addr4(port));
	for (i = 0; i < NPROC; i++)
		c[i] = client("client", lab_example("tw-client"), conf, NCONN, lab_addr4(port));

	recs = lab_records_checked(log);
	lab_rec_assert_count(recs, "", NPROC * NCONN);
	for (i = 0; i < NPROC; i++) {
		const char *pid = lab_fmt("pid=%d", c[i]->pid);
		size_t normal = lab_rec_count(recs, lab_fmt("%s,arm=normal", pid));
		size_t defer = lab_rec_count(recs, lab_fmt("%s,arm=defer", pid));

		lab_rec_assert_count(recs, pid, NCONN);
		cr_assert((normal == NCONN && defer == 0) || (normal == 0 && defer == NCONN),
			  "process %d (run %d) has %zu connections in arm normal and %zu in "
			  "arm defer: one arm per process expected", c[i]->pid, i, normal, defer);
		if (normal)
			procs_normal++;
		else
			procs_defer++;
	}
	cr_assert(procs_normal > 0 && procs_defer > 0, "all %d processes drew one arm: "
		  "%zu normal, %zu defer", NPROC, procs_normal, procs_defer);
	lab_rec_assert_all(recs, "arm=normal", "policy=normal,end=active,tw=local");
	lab_rec_assert_all(recs, "arm=defer", "policy=defer,end=passive,tw=peer,!timeout");

	lab_tw_count(&tw, port);
	cr_assert_eq(tw.client, (long)(procs_normal * NCONN), "client-side TIME_WAIT: %ld, "
		     "%zu processes of %d connections in arm normal", tw.client, procs_normal,
		     NCONN);
	kernel = lab_tw_list();
	assert_tw_matches(kernel, recs, "arm=normal", procs_normal * NCONN);
	assert_tw_matches(kernel, recs, "arm=defer", 0);
	lab_stop(s, 5000);
}

/* -- secure-execution mode ------------------------------------------------ */

static char secure_mnt[4096];

/*
 * Detaches the private tmpfs before the lab removes the scratch directory
 * (atexit handlers run in reverse order, and lab_enter() registered first).
 */
static void secure_umount(void)
{
	if (secure_mnt[0])
		umount2(secure_mnt, MNT_DETACH);
}

static int find_libc(struct dl_phdr_info *info, size_t size, void *arg)
{
	(void)size;
	if (!strstr(info->dlpi_name, "/libc.so."))
		return 0;
	snprintf(arg, 4096, "%s", info->dlpi_name);
	return 1;
}

/*
 * The directory the C library was loaded from: one of ld.so's trusted
 * system directories, the only place it preloads from in secure mode.
 */
static const char *system_lib_dir(void)
{
	char path[4096], real[4096], *slash;

	path[0] = '\0';
	dl_iterate_phdr(find_libc, path);
	cr_assert(path[0], "cannot find where libc.so was loaded from");
	cr_assert(realpath(path, real), "realpath %s: %s", path, strerror(errno));
	slash = strrchr(real, '/');
	*slash = '\0';
	return lab_fmt("%s", real);
}

/* A read-only overlay: the files of `extra` appear in dir, over its own. */
static void overlay(const char *extra, const char *dir)
{
	if (mount("overlay", dir, "overlay", MS_RDONLY,
		  lab_fmt("lowerdir=%s:%s", extra, dir)) == 0)
		return;
	if (errno == ENODEV)
		cr_skip_test("overlayfs is not available here: %s", strerror(errno));
	cr_assert_fail("mount overlay %s over %s: %s", extra, dir, strerror(errno));
}

/*
 * Builds, in a private mount namespace (nothing outside the test sees it):
 * a tmpfs at scratch/secure holding a set-user-ID root copy of tw-client;
 * the library, shown in the system library directory; and an
 * /etc/twshim.conf that logs to scratch/secure/system.jsonl. Returns the
 * tmpfs directory.
 *
 * Why so: in secure-execution mode ld.so ignores LD_PRELOAD names that hold
 * a slash, and loads the others only from its standard search directories
 * and only when the file is set-user-ID (ld.so(8), LD_PRELOAD). An overlay
 * adds the library to that directory without touching the real one.
 */
static const char *secure_setup(void)
{
	const char *sec, *libdir;
	const char *nnp;

	if (getenv("TWSHIM_TEST_PRELOAD") && *getenv("TWSHIM_TEST_PRELOAD"))
		cr_skip_test("TWSHIM_TEST_PRELOAD is set: a sanitizer runtime cannot be "
			     "preloaded into a set-user-ID program");
	if (access("/usr/bin/setpriv", X_OK) < 0)
		cr_skip_test("/usr/bin/setpriv (util-linux) is needed to drop to nobody");
	if (!getpwnam("nobody"))
		cr_skip_test("no user nobody to start the set-user-ID program");
	nnp = strstr(lab_read_file("/proc/self/status"), "NoNewPrivs:\t1");
	if (nnp)
		cr_skip_test("no_new_privs is set: set-user-ID bits have no effect here");
	if (unshare(CLONE_NEWNS) < 0)
		cr_skip_test("unshare(CLONE_NEWNS) is not allowed here: %s", strerror(errno));
	/* nothing mounted from here on may propagate back to the real system */
	cr_assert(mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) == 0,
		  "make / private: %s", strerror(errno));

	/* nobody must reach the program; the scratch directory is 0700 */
	cr_assert(chmod(lab_dir(), 0755) == 0, "chmod %s: %s", lab_dir(), strerror(errno));
	sec = lab_path("secure");
	cr_assert(mkdir(sec, 0755) == 0, "mkdir %s: %s", sec, strerror(errno));
	/* a tmpfs of our own: set-user-ID works even if /tmp is mounted nosuid */
	cr_assert(mount("tmpfs", sec, "tmpfs", MS_NODEV, "mode=0755") == 0,
		  "mount tmpfs on %s: %s", sec, strerror(errno));
	snprintf(secure_mnt, sizeof(secure_mnt), "%s", sec);
	atexit(secure_umount);

	cr_assert(mkdir(lab_fmt("%s/lib", sec), 0755) == 0, "mkdir: %s", strerror(errno));
	cr_assert(mkdir(lab_fmt("%s/etc", sec), 0755) == 0, "mkdir: %s", strerror(errno));
	copy_file(lab_build_path("libtwshim.so"), lab_fmt("%s/lib/libtwshim.so", sec), 04755);
	copy_file(lab_example("tw-client"), lab_fmt("%s/suid-client", sec), 04755);
	write_file(lab_fmt("%s/etc/twshim.conf", sec), "log = \"%s/system.jsonl\";\n", sec);
	/* the user's own file: would reset every connection and log elsewhere */
	write_file(lab_fmt("%s/user.conf", sec),
		   "log = \"%s/user.jsonl\";\nclose = \"abort\";\n", sec);

	libdir = system_lib_dir();
	overlay(lab_fmt("%s/lib", sec), libdir);
	overlay(lab_fmt("%s/etc", sec), "/etc");
	return sec;
}

/*
 * Runs the set-user-ID client through env(1), which adds LD_PRELOAD (a bare
 * name: in secure mode ld.so ignores names with a slash) and the given
 * setting; as nobody (setpriv) when as_nobody, else as root, for whom the
 * set-user-ID bit changes nothing and secure mode is off.
 */
static struct lab_proc *suid_client(const char *name, const char *sec, bool as_nobody,
				    const char *setting, int n, int port)
{
	const struct passwd *pw = getpwnam("nobody");
	char *argv[32];
	struct lab_proc *c;
	char *out;
	int k = 0, rc;

	if (as_nobody) {
		argv[k++] = (char *)"setpriv";
		argv[k++] = (char *)lab_fmt("--reuid=%u", (unsigned)pw->pw_uid);
		argv[k++] = (char *)lab_fmt("--regid=%u", (unsigned)pw->pw_gid);
		argv[k++] = (char *)"--clear-groups";
		argv[k++] = (char *)"/usr/bin/env";
	} else {
		argv[k++] = (char *)"env";
	}
	argv[k++] = (char *)"LD_PRELOAD=libtwshim.so";
	argv[k++] = (char *)setting;
	argv[k++] = (char *)lab_fmt("%s/suid-client", sec);
	argv[k++] = (char *)"-n";
	argv[k++] = (char *)lab_fmt("%d", n);
	argv[k++] = (char *)"--close";
	argv[k++] = (char *)"first";
	argv[k++] = (char *)lab_addr4(port);
	argv[k] = NULL;
	c = lab_spawnv(name, NULL, as_nobody ? "/usr/bin/setpriv" : "/usr/bin/env", argv);
	rc = lab_wait(c, RUN_MS);
	out = lab_stdout(c);
	cr_assert_eq(rc, 0, "%s: exit %d: %s\n%s", name, rc, out, lab_stderr(c));
	cr_assert_eq(lab_value_long(out, "ok"), n, "%s: %s\n%s", name, out, lab_stderr(c));
	free(out);
	return c;
}

static bool file_exists(const char *path)
{
	return access(path, F_OK) == 0;
}

/*
 * A set-user-ID root program started by nobody runs in secure mode: the
 * library, preloaded from the system directory, reads /etc/twshim.conf
 * (records only) and ignores TWSHIM_OPTIONS and TWSHIM_CONFIG, which ask
 * for a reset of every connection and logs elsewhere. The same program and
 * environment started by root (no change of user, no secure mode) obeys
 * them: the settings were live, only secure mode set them aside.
 */
Test(config, setuid_program_started_by_nobody_ignores_environment_settings, .timeout = 90)
{
	const char *sec, *sys_log, *optlog, *userlog, *opts, *cfg;
	struct lab_proc *s, *c1, *c2, *c3, *c4;
	struct lab_tw tw;
	json_t *recs;
	int port;

	lab_enter(100);
	sec = secure_setup();
	sys_log = lab_fmt("%s/system.jsonl", sec);
	optlog = lab_fmt("%s/options.jsonl", sec);
	userlog = lab_fmt("%s/user.jsonl", sec);
	opts = lab_fmt("TWSHIM_OPTIONS=log=%s,close=abort", optlog);
	cfg = lab_fmt("TWSHIM_CONFIG=%s/user.conf", sec);
	port = lab_port();
	s = idle_server("server", lab_addr4(port));

	/* secure mode: TWSHIM_OPTIONS set aside */
	c1 = suid_client("nobody-options", sec, true, opts, 5, port);
	recs = lab_records_checked(sys_log);
	cr_assert_eq(json_array_size(recs), 5, "records in %s (from /etc/twshim.conf): %zu; "
		     "was the library preloaded? stderr:\n%s", sys_log, json_array_size(recs),
		     lab_stderr(c1));
	lab_rec_assert_all(recs, "", lab_fmt("pid=%d,comm=suid-client,role=client,"
					     "policy=normal,end=active,tw=local", c1->pid));
	cr_assert(!file_exists(optlog), "%s exists: TWSHIM_OPTIONS was obeyed in secure mode",
		  optlog);
	lab_tw_count(&tw, port);
	cr_assert_eq(tw.client, 5, "client-side TIME_WAIT: %ld (close=abort was obeyed?)",
		     tw.client);

	/* secure mode: TWSHIM_CONFIG set aside, /etc/twshim.conf still read */
	c2 = suid_client("nobody-config", sec, true, cfg, 5, port);
	recs = lab_records_checked(sys_log);
	lab_rec_assert_count(recs, "", 10);
	lab_rec_assert_all(recs, lab_fmt("pid=%d", c2->pid), "comm=suid-client,policy=normal,"
			   "end=active,tw=local");
	lab_rec_assert_count(recs, lab_fmt("pid=%d", c2->pid), 5);
	cr_assert(!file_exists(userlog), "%s exists: TWSHIM_CONFIG was obeyed in secure mode",
		  userlog);
	lab_tw_count(&tw, port);
	cr_assert_eq(tw.client, 10, "client-side TIME_WAIT: %ld, expected 10", tw.client);

	/* the control: started by root, the same settings are obeyed */
	c3 = suid_client("root-options", sec, false, opts, 5, port);
	recs = lab_records_checked(optlog);
	lab_rec_assert_count(recs, "", 5);
	lab_rec_assert_all(recs, "", lab_fmt("pid=%d,policy=abort,end=abort,tw=none", c3->pid));
	c4 = suid_client("root-config", sec, false, cfg, 5, port);
	recs = lab_records_checked(userlog);
	lab_rec_assert_count(recs, "", 5);
	lab_rec_assert_all(recs, "", lab_fmt("pid=%d,policy=abort,end=abort,tw=none", c4->pid));
	lab_rec_assert_count(lab_records_checked(sys_log), "", 10);
	lab_tw_count(&tw, port);
	cr_assert_eq(tw.client, 10, "client-side TIME_WAIT: %ld, the reset connections add none",
		     tw.client);
	lab_stop(s, 5000);
}
