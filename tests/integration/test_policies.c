// SPDX-License-Identifier: MIT
/*
 * Close policies (TWSHIM_OPTIONS close, defer_ms, fallback, exit_wait_ms,
 * reuseaddr), each in a namespace with tcp_tw_reuse=0 and 100 ephemeral
 * ports, so that a client closing first runs out of ports at exactly 100
 * connections unless the policy moves its TIME_WAIT away. Truth comes from
 * the kernel (sock_diag) and from what the programs themselves saw.
 */
#include <criterion/criterion.h>
#include <string.h>

#include "lab.h"

#define RUN_MS	60000
#define FOUR_MIB	"4194304"

/* A test's lab: 100 ephemeral ports, a service port, the client's log. */
struct run {
	const char *log;
	int port;
	struct lab_proc *s, *c;
};

static void run_enter(struct run *r)
{
	lab_enter(100);
	r->log = lab_path("client.jsonl");
	r->port = lab_port();
}

/*
 * The server of the port-exhaustion runs, not preloaded: it replies, then
 * waits for the client's close, and closes an idle connection itself after
 * idle_ms (a keep-alive timeout). A client that closes at once is first
 * unless it stalls that long, and a client whose close is deferred is freed
 * idle_ms later by the server's FIN.
 */
static struct lab_proc *idle_server(int port, const char *idle_ms)
{
	return lab_start_server("server", NULL, lab_example("tw-server"), "-l", lab_addr4(port),
				"--close", "last", "--idle-ms", idle_ms, "--threads", "16", NULL);
}

/*
 * A server, not preloaded, that replies at once and closes first delay_ms
 * later, with `threads` threads; n: "-n" (NULL: serves until stopped).
 */
static struct lab_proc *delayed_server(int port, const char *delay_ms, const char *threads,
				       const char *n)
{
	/* a NULL n ends the argument list early */
	return lab_start_server("server", NULL, lab_example("tw-server"), "-l", lab_addr4(port),
				"--close", "first", "--close-delay", delay_ms, "--threads",
				threads, n ? "-n" : NULL, n, NULL);
}

/*
 * Enters the lab and makes 1,000 connections to an idle_server(), the
 * client closing first, under policy. Deferred, each waits for the server's
 * FIN 20 ms after the reply; a normal close must come first even from a
 * client that a loaded machine stalls, so the server waits 1 s then.
 */
static void thousand_closes(struct run *r, const char *policy)
{
	run_enter(r);
	r->s = idle_server(r->port, strcmp(policy, "close=normal") ? "20" : "1000");
	r->c = lab_run("client", lab_traced(r->log, policy), RUN_MS, lab_example("tw-client"),
		       "-n", "1000", "--close", "first", lab_addr4(r->port), NULL);
}

Test(policies, normal_client_closes_first_fails_at_connection_101, .timeout = 90)
{
	struct run r;
	char err[64], *out;
	json_t *recs;

	thousand_closes(&r, "close=normal");
	out = lab_stdout(r.c);
	cr_assert_eq(lab_exit_code(r.c), 1, "client: %s", out);
	cr_assert_eq(lab_value_long(out, "ok"), 100, "client: %s", out);
	lab_value_str(out, "first_error", err, sizeof(err));
	cr_assert_str_eq(err, "EADDRNOTAVAIL", "client: %s", out);
	cr_assert_eq(lab_value_long(out, "first_error_conn"), 101, "client: %s", out);

	lab_assert_tw(r.port, 100, -1);
	recs = lab_records_checked(r.log);
	lab_rec_assert_count(recs, "tw=local", 100);
	lab_rec_assert_all(recs, "", lab_fmt("pid=%d,role=client,policy=normal", r.c->pid));
	lab_stop(r.s, 5000);
}

Test(policies, defer_client_closes_first_completes_1000, .timeout = 90)
{
	struct run r;

	thousand_closes(&r, "close=defer");
	lab_assert_ok(r.c, 1000);
	cr_assert_eq(lab_exit_code(r.c), 0, "client: %s", lab_stdout(r.c));
	lab_assert_tw(r.port, 0, -1);
	/* the last ones end in the holder, after the client's exit */
	lab_records_wait_expect(r.log, 1000, lab_fmt("pid=%d,role=client,policy=defer,"
						     "end=passive,tw=peer,via=close,deferred_ms,"
						     "!timeout", r.c->pid), 5000);
	lab_stop(r.s, 5000);
}

Test(policies, abort_client_closes_first_completes_1000_without_timewait, .timeout = 90)
{
	struct run r;

	thousand_closes(&r, "close=abort");
	lab_assert_ok(r.c, 1000);
	cr_assert_eq(lab_exit_code(r.c), 0, "client: %s", lab_stdout(r.c));
	cr_assert_eq(lab_tw_total(), 0, "TIME_WAIT anywhere: %ld", lab_tw_total());
	lab_records_expect(r.log, 1000, "role=client,policy=abort,end=abort,tw=none,!timeout");
	lab_stop(r.s, 5000);
}

/*
 * A server that closes first holds the TIME_WAIT; deferred, its close waits
 * for the client's, and the TIME_WAIT lands on the client. The client is
 * not preloaded: it waits 20 ms for the server's EOF, then closes.
 */
Test(policies, defer_server_closes_first_moves_timewait_to_client, .timeout = 60)
{
	const char *nlog, *dlog;
	struct lab_proc *sn, *sd, *c;
	struct lab_tw tw;
	json_t *recs;
	int pn, pd;

	/*
	 * More ports than elsewhere: the control run leaves server-side
	 * TIME_WAIT, which a client reusing a port too soon would recycle.
	 */
	lab_enter(1000);
	nlog = lab_path("normal.jsonl");
	dlog = lab_path("defer.jsonl");
	pn = lab_port();
	pd = lab_port();
	sn = lab_start_server("server-normal", lab_traced(nlog, "close=normal"),
			      lab_example("tw-server"), "-l", lab_addr4(pn), "--close", "first",
			      "-n", "40", NULL);
	sd = lab_start_server("server-defer", lab_traced(dlog, "close=defer"),
			      lab_example("tw-server"), "-l", lab_addr4(pd), "--close", "first",
			      "-n", "40", NULL);
	c = lab_run("client-normal", NULL, RUN_MS, lab_example("tw-client"), "-n", "40",
		    "--close", "last", "--idle-ms", "20", lab_addr4(pn), NULL);
	lab_assert_ok(c, 40);
	c = lab_run("client-defer", NULL, RUN_MS, lab_example("tw-client"), "-n", "40",
		    "--close", "last", "--idle-ms", "20", lab_addr4(pd), NULL);
	lab_assert_ok(c, 40);
	cr_assert_neq(lab_wait(sn, 10000), -1);
	cr_assert_neq(lab_wait(sd, 10000), -1);

	lab_tw_count(&tw, pn);
	cr_assert_eq(tw.server, 40, "normal: server-side TIME_WAIT %ld", tw.server);
	cr_assert_eq(tw.client, 0, "normal: client-side TIME_WAIT %ld", tw.client);
	lab_tw_count(&tw, pd);
	cr_assert_eq(tw.server, 0, "defer: server-side TIME_WAIT %ld", tw.server);
	cr_assert_eq(tw.client, 40, "defer: client-side TIME_WAIT %ld", tw.client);

	recs = lab_records_checked(nlog);
	lab_rec_assert_count(recs, "role=server,policy=normal,end=active,tw=local", 40);
	lab_records_expect(dlog, 40, "role=server,policy=defer,end=passive,tw=peer,!timeout");
}

/*
 * A peer that never closes: after defer_ms the fallback is applied and the
 * record says timeout. Returns the client's records.
 */
static json_t *never_closing_peer(const char *fallback, struct lab_proc **server_out)
{
	struct run r;
	json_t *recs;

	run_enter(&r);
	r.s = lab_start_server("server", NULL, lab_example("tw-server"), "-l", lab_addr4(r.port),
			       "--close", "never", NULL);
	r.c = lab_run("client", lab_traced(r.log, lab_fmt("close=defer,defer_ms=200,fallback=%s,"
							  "exit_wait_ms=3000,learn=off", fallback)),
		      RUN_MS, lab_example("tw-client"), "-n", "5", "--close", "first",
		      lab_addr4(r.port), NULL);
	lab_assert_ok(r.c, 5);
	recs = lab_records_wait_expect(r.log, 5, lab_fmt("pid=%d,policy=defer,timeout=true,"
							 "deferred_ms", r.c->pid), 5000);
	for (size_t i = 0; i < json_array_size(recs); i++) {
		double d = json_number_value(json_object_get(json_array_get(recs, i),
							     "deferred_ms"));

		cr_assert(d >= 190 && d < 3000, "deferred_ms %.3f: the fallback should come "
			  "defer_ms (200) after the close", d);
	}
	*server_out = r.s;
	return recs;
}

Test(policies, defer_peer_never_closes_falls_back_to_normal, .timeout = 60)
{
	struct lab_proc *s;
	struct lab_tw tw;
	json_t *recs = never_closing_peer("normal", &s);

	lab_rec_assert_all(recs, "", "end=active,tw=local");
	/* the client sent its FIN; once the server goes, the client holds the TIME_WAIT */
	lab_stop(s, 5000);
	lab_sleep_ms(100);
	lab_tw_count(&tw, s->port);
	cr_assert_eq(tw.client, 5, "client-side TIME_WAIT: %ld", tw.client);
}

Test(policies, defer_peer_never_closes_falls_back_to_abort, .timeout = 60)
{
	struct lab_proc *s;
	json_t *recs = never_closing_peer("abort", &s);

	lab_rec_assert_all(recs, "", "end=abort,tw=none");
	lab_stop(s, 5000);
	lab_sleep_ms(100);
	cr_assert_eq(lab_tw_total(), 0, "TIME_WAIT anywhere: %ld", lab_tw_total());
}

/*
 * 4 MiB written right before close, to a reader that takes 64 KiB every
 * 5 ms through a small receive buffer: at the close much of it is still in
 * the client's send queue. It must all arrive.
 */
static void four_mib_to_slow_reader(const char *policy, const char *end)
{
	struct run r;
	json_t *recs;
	char *out;

	run_enter(&r);
	/*
	 * Under abort the server must not close right after reading: its FIN
	 * would let the library close normally (the peer closed first, nothing
	 * to abort). It waits 2 s instead; the reset comes before.
	 */
	r.s = lab_start_server("server", NULL, lab_example("tw-server"), "-l", lab_addr4(r.port),
			       "-n", "1", "--drain", FOUR_MIB, "--slow-read", "65536:5",
			       "--rcvbuf", "65536", "--close", "first", "--timeout", "20000",
			       "--close-delay", strcmp(policy, "abort") ? "0" : "2000", NULL);
	r.c = lab_run("client", lab_traced(r.log, lab_fmt("close=%s,defer_ms=20000,"
							  "exit_wait_ms=20000", policy)),
		      RUN_MS, lab_example("tw-client"), "-n", "1", "--write-bytes", FOUR_MIB,
		      "--sndbuf", "262144", "--timeout", "20000", lab_addr4(r.port), NULL);
	lab_assert_ok(r.c, 1);
	cr_assert_neq(lab_wait(r.s, 30000), -1, "server did not finish");
	out = lab_stdout(r.s);
	cr_assert_eq(lab_value_long(out, "drained"), 4194304, "server: %s%s", out,
		     lab_stderr(r.s));
	cr_assert_eq(lab_value_long(out, "failed"), 0, "server: %s%s", out, lab_stderr(r.s));

	recs = lab_records_wait_expect(r.log, 1, lab_fmt("policy=%s,end=%s,!timeout", policy,
							 end), 5000);
	/* what TCP_INFO saw at the program's close: the 4 MiB were not all acknowledged */
	cr_assert(json_integer_value(json_object_get(json_array_get(recs, 0), "bytes_acked"))
		  < 4194304, "everything was acknowledged before the close: the test "
		  "did not exercise the policy");
}

Test(policies, no_data_lost_4mib_to_slow_reader_under_defer, .timeout = 60)
{
	four_mib_to_slow_reader("defer", "passive");
}

Test(policies, no_data_lost_4mib_to_slow_reader_under_abort, .timeout = 60)
{
	four_mib_to_slow_reader("abort", "abort");
}

/* fds the process holds at its end beyond those at its start, after n deferred connections */
static long fds_added(struct run *r, const char *n)
{
	char *out;

	r->c = lab_run("client", lab_traced(r->log, "close=defer"), RUN_MS,
		       lab_example("tw-client"), "-n", n, "--close", "first", "--report-fds",
		       "--sleep-end", "1000", lab_addr4(r->port), NULL);
	lab_assert_ok(r->c, atol(n));
	out = lab_stdout(r->c);
	cr_assert_eq(lab_value_long(out, "sockets_end"), lab_value_long(out, "sockets_start"),
		     "sockets left open: %s", out);
	return lab_value_long(out, "fds_end") - lab_value_long(out, "fds_start");
}

/*
 * The library opens its own fds (the closer's) at the first deferral; past
 * those, 50 deferred connections leave no more fds than one.
 */
Test(policies, defer_fd_table_back_to_start_after_connections_end, .timeout = 60)
{
	struct run r;
	long one, fifty;

	run_enter(&r);
	/* the server closes 30 ms after replying: every client close is really deferred */
	r.s = delayed_server(r.port, "30", "16", NULL);
	one = fds_added(&r, "1");
	fifty = fds_added(&r, "50");
	cr_assert_eq(fifty, one, "fds added by 50 deferred connections: %ld, by one: %ld", fifty,
		     one);
	lab_rec_assert_count(lab_records_checked(r.log), "policy=defer,end=passive", 51);
	lab_stop(r.s, 5000);
}

Test(policies, defer_survives_close_range_of_all_fds_with_100_deferred, .timeout = 60)
{
	struct run r;

	run_enter(&r);
	/* replies at once, closes 1 s later: all 100 are deferred at the close_range() */
	r.s = delayed_server(r.port, "1000", "100", "100");
	r.c = lab_run("client", lab_traced(r.log, "close=defer,defer_ms=10000,exit_wait_ms=10000"),
		      RUN_MS, lab_example("tw-client"), "-n", "100", "--close", "first",
		      "--close-all", "close_range", lab_addr4(r.port), NULL);
	lab_assert_ok(r.c, 100);
	cr_assert_neq(lab_wait(r.s, 10000), -1);

	lab_records_wait_expect(r.log, 100, "policy=defer,end=passive,tw=peer,!timeout", 5000);
	lab_assert_tw(r.port, 0, 100);
}

Test(policies, defer_fork_while_connections_deferred, .timeout = 60)
{
	struct run r;
	char *out;

	run_enter(&r);
	r.s = delayed_server(r.port, "300", "32", NULL);
	/* the child is forked with 10 connections deferred and outlives their end */
	r.c = lab_run("client", lab_traced(r.log, "close=defer,defer_ms=5000"), RUN_MS,
		      lab_example("tw-client"), "-n", "20", "--close", "first", "--fork-after",
		      "10", "--child-ms", "800", "--report-fds", lab_addr4(r.port), NULL);
	lab_assert_ok(r.c, 20);
	out = lab_stdout(r.c);
	cr_assert(lab_value_long(out, "child_pid") > 0, "no child report: %s", out);

	/* the parent's connections are recorded once, by the parent; the child adds none */
	lab_records_wait_expect(r.log, 20, lab_fmt("pid=%d,policy=defer,end=passive,tw=peer",
						   r.c->pid), 5000);
	/* the child does not keep the parent's deferred connections open */
	cr_assert_eq(lab_value_long(out, "child_sockets"), 0, "child: %s", out);
	cr_assert_eq(lab_value_long(out, "sockets_end"), 0, "parent: %s", out);
	lab_assert_tw(r.port, 0, -1);
	lab_stop(r.s, 5000);
}

Test(policies, defer_short_lived_client_exiting_after_request_leaves_no_timewait,
     .timeout = 60)
{
	struct lab_proc *c;
	struct lab_tw tw;
	struct run r;
	int i;

	run_enter(&r);
	/* closes 200 ms after its reply: later than a client (even a sanitizer build) exits */
	r.s = delayed_server(r.port, "200", "4", NULL);
	/* without the library each exit closes first: one client-side TIME_WAIT each */
	for (i = 0; i < 10; i++) {
		c = lab_run("plain", NULL, RUN_MS, lab_example("tw-client"), "--end", "exit",
			    lab_addr4(r.port), NULL);
		cr_assert_eq(lab_exit_code(c), 0, "%s", lab_stderr(c));
	}
	lab_tw_count(&tw, r.port);
	cr_assert_eq(tw.client, 10, "without the library: client-side TIME_WAIT %ld", tw.client);

	/*
	 * deferred: the holder waits for the server's FIN, the client does not.
	 * (A reply left unread would make the kernel's close a reset, as it
	 * does without the library.)
	 */
	for (i = 0; i < 10; i++) {
		c = lab_run("deferred", lab_traced(r.log, "close=defer"), RUN_MS,
			    lab_example("tw-client"), "--end", "exit",
			    lab_addr4(r.port), NULL);
		cr_assert_eq(lab_exit_code(c), 0, "%s", lab_stderr(c));
	}
	lab_tw_count(&tw, r.port);
	cr_assert_eq(tw.client, 10, "with close=defer: client-side TIME_WAIT %ld (10 before)",
		     tw.client);
	json_decref(lab_records_wait_expect(r.log, 10, "role=client,policy=defer,via=exit,"
					    "end=passive,tw=peer,held=true", 5000));
	lab_stop(r.s, 5000);
}

/* Serves 10 connections, closing first, so that its port is left in TIME_WAIT. */
static void leave_server_timewait(int port, const struct lab_opts *o)
{
	struct lab_proc *s, *c;

	s = lab_start_server("server", o, lab_example("tw-server"), "-l", lab_addr4(port),
			     "--close", "first", "-n", "10", NULL);
	c = lab_run("client", NULL, RUN_MS, lab_example("tw-client"), "-n", "10", "--close",
		    "last", lab_addr4(port), NULL);
	lab_assert_ok(c, 10);
	cr_assert_eq(lab_wait(s, 10000), 0, "server: %s", lab_stderr(s));
	lab_assert_tw(port, -1, 10);
}

/* Starts tw-server on port and returns its exit code if it exits within 1 s, else -1. */
static int restart(int port, const struct lab_opts *o, struct lab_proc **out)
{
	struct lab_proc *s = lab_spawn("restart", o, lab_example("tw-server"), "-l",
				       lab_addr4(port), NULL);
	int rc = lab_wait(s, 1000);

	*out = s;
	return rc;
}

/*
 * These two use 1,000 ports: with 100, a client soon reuses a port and its
 * SYN recycles one of the server-side TIME_WAIT sockets counted here.
 */
Test(policies, reuseaddr_lets_a_restarted_server_bind_over_its_timewait, .timeout = 60)
{
	const struct lab_opts *reuse;
	struct lab_proc *s;
	int port;

	lab_enter(1000);
	reuse = lab_traced(lab_path("server.jsonl"), "reuseaddr=1");
	port = lab_port();
	leave_server_timewait(port, reuse);

	/* without the option the kernel refuses the port while TIME_WAIT holds it */
	cr_assert_eq(restart(port, NULL, &s), 1, "plain restart should fail: %s",
		     lab_stderr(s));
	cr_assert(strstr(lab_stderr(s), "EADDRINUSE"), "stderr: %s", lab_stderr(s));
	cr_assert_eq(restart(port, lab_traced(lab_path("r.jsonl"), "reuseaddr=0"), &s), 1,
		     "restart with reuseaddr=0 should fail: %s", lab_stderr(s));
	cr_assert(strstr(lab_stderr(s), "EADDRINUSE"), "stderr: %s", lab_stderr(s));

	/* with reuseaddr=1 preloaded it binds and serves */
	s = lab_start_server("restart-reuse", reuse, lab_example("tw-server"), "-l",
			     lab_addr4(port), "-n", "1", NULL);
	lab_assert_ok(lab_run("client2", NULL, RUN_MS, lab_example("tw-client"), lab_addr4(port),
			      NULL), 1);
	cr_assert_eq(lab_wait(s, 10000), 0, "server: %s", lab_stderr(s));
}

Test(policies, without_reuseaddr_the_old_server_timewait_blocks_even_a_reuseaddr_restart,
     .timeout = 60)
{
	struct lab_proc *s;
	int port;

	lab_enter(1000);
	port = lab_port();
	/* the old listener had no SO_REUSEADDR: its TIME_WAIT sockets do not share */
	leave_server_timewait(port, NULL);
	cr_assert_eq(restart(port, lab_traced(lab_path("r.jsonl"), "reuseaddr=1"), &s), 1,
		     "bind should fail: %s", lab_stderr(s));
	cr_assert(strstr(lab_stderr(s), "EADDRINUSE"), "stderr: %s", lab_stderr(s));
}
