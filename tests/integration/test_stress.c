// SPDX-License-Identifier: MIT
/*
 * The library under stress: many threads closing at once under a mix of
 * policies, closes racing fork() in another thread, and a signal every
 * 100 us interrupting connect, accept, reads and close. Whatever happens,
 * every connection gets exactly one record, the records with tw=local match
 * the kernel's TIME_WAIT sockets one for one, no fd is leaked, close()
 * never fails, errno is never changed by a call that succeeded, and
 * nothing hangs (every test is bounded by its timeout).
 */
#include <dirent.h>
#include <stdio.h>
#include <unistd.h>

#include <criterion/criterion.h>

#include "lab.h"

#define RUN_MS	120000

/*
 * A config file mixing the policies per connection: normal_weight % normal,
 * the rest half defer, half abort; every record to log.
 */
static const struct lab_opts *mixed(const char *log, int defer_ms, int normal_weight)
{
	const char *conf = lab_path("mixed.conf");
	int other = (100 - normal_weight) / 2;

	lab_write_file(conf, lab_fmt(
		"log = \"%s\";\n"
		"defer_ms = %d;\n"
		"ab = {\n"
		"  split = \"connection\";\n"
		"  arms = ( { name = \"normal\"; close = \"normal\"; weight = %d; },\n"
		"           { name = \"defer\"; close = \"defer\"; weight = %d; },\n"
		"           { name = \"abort\"; close = \"abort\"; weight = %d; } );\n"
		"};\n", log, defer_ms, normal_weight, other, other));
	return lab_configured(conf);
}

/*
 * Under AddressSanitizer: no leak check at exit() in the programs started
 * from here on. LeakSanitizer's check (GCC 12's runtime) takes the
 * allocator's locks, which it does not reset at fork(): a child forked
 * while another thread held one waits there forever, after the library's
 * destructor has run. The library's leaks are checked by every other test.
 * Each test runs in a process of its own, so this ends with the test.
 */
static void no_exit_leak_check(void)
{
	const char *asan = getenv("ASAN_OPTIONS");

	if (asan && *asan)
		setenv("ASAN_OPTIONS", lab_fmt("%s:detect_leaks=0", asan), 1);
}

/* Each arm drawn, and each record's policy the one its arm names (or normal, saying why). */
static void assert_arms(const json_t *recs)
{
	lab_rec_assert_count(recs, "!arm", 0);
	cr_assert_gt(lab_rec_count(recs, "arm=normal"), 0, "%s", lab_rec_summary(recs));
	cr_assert_gt(lab_rec_count(recs, "arm=defer"), 0, "%s", lab_rec_summary(recs));
	cr_assert_gt(lab_rec_count(recs, "arm=abort"), 0, "%s", lab_rec_summary(recs));
	lab_rec_assert_all(recs, "arm=normal", "policy=normal,!why");
	lab_rec_assert_all(recs, "arm=defer,!why", "policy=defer");
	lab_rec_assert_all(recs, "arm=abort,!why", "policy=abort");
	lab_rec_assert_all(recs, "why", "policy=normal");
}

/* A server that replies and closes 1 ms later: client closes meet ESTABLISHED. */
/*
 * The client ends only, less those the server reset. A server-side
 * TIME_WAIT is not for keeps: a SYN from a client port used again recycles
 * it (RFC 1122, kernel-notes.md). And a reset from the other end, sent by
 * the `abort` arm just as this end's FIN went out, ends this end's socket
 * with no TIME_WAIT: a close record cannot foresee that. Both ends are in
 * this process, so the server's records tell which connections those were;
 * their keys go into *skip for lab_tw_match().
 */
static json_t *client_ends(const json_t *recs, json_t **skip)
{
	json_t *out = json_array(), *r;
	size_t i;

	*skip = json_object();
	json_array_foreach(recs, i, r)
		if (lab_rec_match(r, "role=server,end=abort"))
			json_object_set_new(*skip, lab_fmt("%s %s",
					    json_string_value(json_object_get(r, "remote")),
					    json_string_value(json_object_get(r, "local"))),
					    json_true());
	json_array_foreach(recs, i, r)
		if (lab_rec_match(r, "role=client") && !json_object_get(*skip, lab_tuple_key(r)))
			json_array_append(out, r);
	return out;
}

static struct lab_proc *quick_server(int port)
{
	return lab_start_server("server", NULL, lab_example("tw-server"), "-l", lab_addr4(port),
				"--close", "first", "--close-delay", "1", "--threads", "16", NULL);
}

/* A namespace with `ports` ephemeral ports, a quick server on a new port, the client's log path. */
static struct lab_proc *quick_lab(unsigned ports, const char **log, int *port)
{
	lab_enter(ports);
	*log = lab_path("client.jsonl");
	*port = lab_port();
	return quick_server(*port);
}

Test(stress, sixteen_threads_5000_connections_each_mixed_policies_one_record_each,
     .timeout = 180)
{
	const long total = 16 * 5000;
	const char *log;
	struct lab_proc *s, *c;
	struct lab_tw_diff diff;
	json_t *recs;
	char *out;
	int port;

	/* the 10 % of 80,000 that close first hold a port each for 60 s */
	s = quick_lab(25000, &log, &port);
	c = lab_run("client", mixed(log, 2000, 10), RUN_MS, lab_example("tw-client"), "--threads",
		    "16", "-n", "5000", "--close", "first", "--report-fds", "--sleep-end", "2500",
		    lab_addr4(port), NULL);
	out = lab_stdout(c);
	cr_assert_eq(lab_value_long(out, "ok"), total, "client: %s%s", out, lab_stderr(c));
	cr_assert_eq(lab_exit_code(c), 0, "client: %s", out);
	/* one socket may stay: the library's own for sock_diag questions */
	cr_assert_leq(lab_value_long(out, "sockets_end"), lab_value_long(out, "sockets_start") + 1,
		      "sockets left open: %s", out);
	/*
	 * the closer's epoll and eventfd, that socket, and the log (opened at
	 * the first record) are all the library may keep
	 */
	cr_assert_leq(lab_value_long(out, "fds_end"), lab_value_long(out, "fds_start") + 4,
		      "fds leaked: %s", out);

	/* connections still deferred at the exit end in the holder, a little later */
	recs = lab_records_wait_expect(log, (size_t)total, NULL, 10000);
	lab_rec_assert_all(recs, "", lab_fmt("pid=%d,role=client", c->pid));
	assert_arms(recs);
	lab_tw_match(&diff, recs, LAB_TW_CLIENT, port, NULL);
	cr_assert_eq(diff.extra + diff.orphans, 0, "%s\n(%s)", diff.text, lab_rec_summary(recs));
	lab_stop(s, 5000);
}

/*
 * A namespace for a client that forks: a quick server on a new port, the
 * path of the client's log, and no leak check at exit in its children.
 */
static struct lab_proc *forking_lab(unsigned ports, const char **log, int *port)
{
	no_exit_leak_check();
	return quick_lab(ports, log, port);
}

/* The client's records: `total`, each with a state, and each tw as the kernel shows. */
static json_t *records_one_each(const char *log, size_t total, int port)
{
	struct lab_tw_diff diff;
	json_t *recs = lab_records_checked(log);

	lab_rec_assert_all(recs, "", "state!=UNKNOWN");
	lab_rec_assert_count(recs, "", total);
	lab_tw_match(&diff, recs, LAB_TW_CLIENT, port, NULL);
	cr_assert_eq(diff.extra + diff.orphans, 0, "%s\n(%s)", diff.text, lab_rec_summary(recs));
	return recs;
}

/*
 * 8 threads × 1,000 connections under the mix while another thread forks
 * without pause; children exit at once (_exit, exit with the library's
 * destructor, exec of /bin/true). Children hold copies of whatever was open
 * when they were forked: a connection may end in the parent or in a child,
 * but it is recorded once, by the process whose close ended it. A child
 * that ends reads its parent's fd links to find who else holds its
 * connections, which makes the parent's close not the last for an instant
 * (fd_links_read_from_outside_lose_no_record).
 */
Test(stress, closes_racing_fork_in_another_thread_one_record_per_connection, .timeout = 180)
{
	const long total = 8 * 1000;
	const char *log, *prog;
	struct lab_proc *s, *c;
	json_t *recs;
	char *out;
	int port;

	s = forking_lab(10000, &log, &port);
	prog = lab_test_program("tw-stress", RUN_MS);
	c = lab_run("client", mixed(log, 2000, 20), RUN_MS, prog, "fork-race", "--threads", "8",
		    "-n", "1000", "--child-ms", "2", "--sleep-end", "2500", lab_addr4(port), NULL);
	out = lab_stdout(c);
	cr_assert_eq(lab_exit_code(c), 0, "client: %s%s", out, lab_stderr(c));
	cr_assert_eq(lab_value_long(out, "ok"), total, "client: %s", out);
	/* at least a few, even where fork() is slow (ThreadSanitizer) */
	cr_assert_geq(lab_value_long(out, "forks"), 3, "the forks did not race: %s", out);
	cr_assert_eq(lab_value_long(out, "children_failed"), 0, "client: %s", out);
	cr_expect_eq(lab_value_long(out, "errno_changed"), 0,
		     "a successful call changed errno: %s", out);
	/* one socket may stay: the library's own for sock_diag questions */
	cr_assert_leq(lab_value_long(out, "sockets_end"), 1, "sockets left open: %s", out);

	/* a child records only what it held: never a connection it had no fd for */
	recs = records_one_each(log, (size_t)total, port);
	lab_rec_assert_all(recs, "", "role=client,comm=tw-stress");
	assert_arms(recs);
	lab_stop(s, 5000);
}

/*
 * fork-hold: 30 sockets, each made before a fork and connected by one of the
 * two processes, whose close comes while the other still holds it. The
 * other's table knows the socket only as unconnected; the connection is
 * recorded once, by whichever process ends it, with the end the kernel
 * shows.
 */
static json_t *fork_hold(const char *how, struct lab_proc **cp)
{
	const char *log, *prog;
	struct lab_proc *s, *c;
	json_t *recs;
	char *out;
	int port;

	s = forking_lab(1000, &log, &port);
	prog = lab_test_program("tw-stress", RUN_MS);
	c = lab_run("client", mixed(log, 300, 34), RUN_MS, prog, "fork-hold", "-n", "30",
		    "--child-ms", "30", "--sleep-end", "500", how, lab_addr4(port), NULL);
	out = lab_stdout(c);
	cr_assert_eq(lab_exit_code(c), 0, "client: %s%s", out, lab_stderr(c));
	cr_assert_eq(lab_value_long(out, "ok"), 30, "client: %s", out);
	cr_assert_eq(lab_value_long(out, "children_failed"), 0, "client: %s", out);
	recs = records_one_each(log, 30, port);
	lab_rec_assert_all(recs, "", "role=client");
	lab_stop(s, 5000);
	*cp = c;
	return recs;
}

/*
 * The parent connects and closes; the child exits or execs 30 ms after the
 * fork, and usually ends it (which process does depends on the timing).
 */
Test(stress, socket_forked_before_the_parent_connects_is_recorded_once, .timeout = 120)
{
	struct lab_proc *c;

	fork_hold("--", &c);
}

/* the child connects and closes; the parent's close, after the child is gone, ends it */
Test(stress, socket_forked_before_the_child_connects_is_recorded_by_the_parent_that_ends_it,
     .timeout = 120)
{
	struct lab_proc *c;
	json_t *recs = fork_hold("--child-connects", &c);

	lab_rec_assert_all(recs, "", lab_fmt("pid=%d,via=close", c->pid));
}

/*
 * One process serving itself: 8 client threads × 1,000 connections and 4
 * accepting threads, all interrupted by SIGUSR1 every 100 us (no
 * SA_RESTART): connect, accept, reads and writes return EINTR and are
 * retried as the program would. Both ends are recorded, each once.
 */
Test(stress, signal_every_100us_interrupting_connect_accept_and_close, .timeout = 180)
{
	const long total = 8 * 1000;
	const char *log, *prog;
	struct lab_proc *c;
	struct lab_tw_diff diff;
	json_t *recs, *clients, *skip;
	char *out;
	int port;

	lab_enter(10000);
	prog = lab_test_program("tw-stress", RUN_MS);
	/*
	 * A loopback connect sleeps (and so can be interrupted) only when the
	 * handshake is not done within the call: some 50 in 8,000 usually,
	 * none at all in one run seen on a loaded machine. Up to three runs,
	 * each with its own port and log, for one that interrupted a connect;
	 * everything else is checked on that run.
	 */
	for (int run = 0;; run++) {
		log = lab_path(lab_fmt("both.%d.jsonl", run));
		port = lab_port();
		c = lab_run("self", mixed(log, 300, 20), RUN_MS, prog, "signals", "--threads", "8",
			    "--acceptors", "4", "-n", "1000", "--signal-us", "100",
			    "--sleep-end", "2000", lab_addr4(port), NULL);
		out = lab_stdout(c);
		if (lab_value_long(out, "connect_eintr") > 0 || run == 2)
			break;
	}
	cr_assert_eq(lab_exit_code(c), 0, "program: %s%s", out, lab_stderr(c));
	cr_assert_eq(lab_value_long(out, "ok"), total, "program: %s", out);
	cr_assert_eq(lab_value_long(out, "served"), total, "program: %s", out);
	cr_assert_eq(lab_value_long(out, "close_fail"), 0, "close() failed: %s", out);
	cr_expect_eq(lab_value_long(out, "errno_changed"), 0,
		     "a successful call changed errno: %s", out);
	cr_assert_gt(lab_value_long(out, "signals"), 500, "too few signals: %s", out);
	cr_assert_gt(lab_value_long(out, "connect_eintr"), 0, "no connect interrupted: %s", out);
	cr_assert_gt(lab_value_long(out, "accept_eintr"), 0, "no accept interrupted: %s", out);
	/* one socket may stay: the library's own for sock_diag questions */
	cr_assert_leq(lab_value_long(out, "sockets_end"), 1, "sockets left open: %s", out);
	/* with the closer's two fds and the log, opened at the first record */
	cr_assert_leq(lab_value_long(out, "fds_end"), lab_value_long(out, "fds_start") + 4,
		      "fds leaked: %s", out);

	recs = lab_records_checked(log);
	lab_rec_assert_count(recs, "role=client", (size_t)total);
	lab_rec_assert_count(recs, "role=server", (size_t)total);
	lab_rec_assert_all(recs, "", lab_fmt("pid=%d", c->pid));
	assert_arms(recs);
	clients = client_ends(recs, &skip);
	lab_tw_match(&diff, clients, LAB_TW_CLIENT, port, skip);
	cr_assert_eq(diff.extra + diff.orphans, 0, "%s\n(%s)", diff.text, lab_rec_summary(recs));
}

/*
 * A thread with a cancel pending closes a tracked connection: the cancel
 * acts at the start of close(), as in libc, before the library has changed
 * anything. The fd stays open and the connection tracked; the main
 * thread's close then ends it, recorded once, by the process that made it.
 */
Test(stress, close_with_a_cancel_pending_changes_nothing, .timeout = 60)
{
	const long n = 20;
	const char *log, *prog;
	struct lab_proc *s, *c;
	json_t *recs;
	char *out;
	int port;

	lab_enter(1000);
	prog = lab_test_program("tw-stress", RUN_MS);
	log = lab_path("client.jsonl");
	port = lab_port();
	s = quick_server(port);
	c = lab_run("client", lab_traced(log, NULL), RUN_MS, prog, "cancel", "-n",
		    lab_fmt("%ld", n), lab_addr4(port), NULL);
	out = lab_stdout(c);
	cr_assert_eq(lab_exit_code(c), 0, "client: %s%s", out, lab_stderr(c));
	cr_assert_eq(lab_value_long(out, "ok"), n, "client: %s", out);
	cr_assert_eq(lab_value_long(out, "cancelled"), n, "not cancelled in close(): %s", out);
	cr_assert_eq(lab_value_long(out, "kept_open"), n, "a cancelled close closed: %s", out);
	cr_assert_eq(lab_value_long(out, "close_fail"), 0, "client: %s", out);
	recs = lab_records_checked(log);
	lab_rec_assert_count(recs, "", (size_t)n);
	lab_rec_assert_all(recs, "", lab_fmt("pid=%d,role=client,via=close,tw!=none", c->pid));
	lab_stop(s, 5000);
}

/*
 * Reads the links of every fd of pid once, as ss -p does: each readlink
 * holds a reference to the file for an instant. Returns how many it read.
 */
static int read_fd_links(pid_t pid)
{
	char path[64], link[128];
	struct dirent *e;
	DIR *d;
	int n = 0;

	snprintf(path, sizeof(path), "/proc/%d/fd", (int)pid);
	d = opendir(path);
	if (!d)
		return 0;
	while ((e = readdir(d)))
		if (e->d_name[0] != '.' &&
		    readlinkat(dirfd(d), e->d_name, link, sizeof(link)) > 0)
			n++;
	closedir(d);
	return n;
}

/*
 * 4 threads × 500 connections closed first while another process reads the
 * client's fd links without pause (ss -p, lsof, or a child of a forking
 * program looking for other holders). A close that meets such a read is
 * not the last reference: the socket is released, and its FIN sent, when
 * the read lets go. The record waits for that; none is lost, and each says
 * what the kernel's table shows.
 */
Test(stress, fd_links_read_from_outside_lose_no_record, .timeout = 120)
{
	const long total = 4 * 500;
	const char *log;
	struct lab_proc *s, *c;
	struct lab_tw_diff diff;
	json_t *recs;
	long reads = 0;
	int rounds = 0;
	char *out;
	int port;

	s = quick_lab(4000, &log, &port);
	c = lab_spawn("client", lab_traced(log, NULL), lab_example("tw-client"), "--threads", "4",
		      "-n", "500", "--close", "first", lab_addr4(port), NULL);
	/* bounded: 2,000,000 rounds of a few microseconds each, far beyond the client's run */
	while (lab_running(c) && rounds++ < 2000000)
		reads += read_fd_links(c->pid);
	cr_assert_eq(lab_wait(c, 5000), 0, "client: %s%s", lab_stdout(c), lab_stderr(c));
	out = lab_stdout(c);
	cr_assert_eq(lab_value_long(out, "ok"), total, "client: %s%s", out, lab_stderr(c));
	cr_assert_gt(reads, 0, "no fd link read while the client ran");

	recs = lab_records_checked(log);
	lab_rec_assert_count(recs, "", (size_t)total);
	lab_rec_assert_all(recs, "", "role=client,policy=normal,state!=UNKNOWN");
	lab_tw_match(&diff, recs, LAB_TW_CLIENT, port, NULL);
	cr_assert_eq(diff.extra + diff.orphans, 0, "%s\n(%s)", diff.text, lab_rec_summary(recs));
	lab_stop(s, 5000);
}
