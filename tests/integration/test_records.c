// SPDX-License-Identifier: MIT
/*
 * Close records under the normal policy: with the library preloaded into a
 * client and a server, every TCP connection gets exactly one JSON line, from
 * the process whose close ended it, saying which side closed first; and the
 * records with tw=local match, one for one, the TIME_WAIT sockets the
 * kernel holds.
 */
#include <criterion/criterion.h>
#include <string.h>

#include "lab.h"

#define RUN_MS	30000	/* bound on one example program's run */

/* A traced tw-server on a fresh port, serving n connections (0: until stopped). */
static struct lab_proc *server(const char *log, const char *addr, long n, const char *close_mode,
			       const char *more)
{
	return lab_start_server("server", lab_traced(log, NULL), lab_example("tw-server"), "-l",
				addr, "-n", lab_fmt("%ld", n ? n : 1000000), "--close", close_mode,
				more ? more : "--verbose", NULL);
}

/* Runs a traced tw-client; asserts every connection succeeded. */
static struct lab_proc *client_ok(const char *log, long n, const char *addr, const char *close_mode,
				  const char *more, const char *more2)
{
	struct lab_proc *c;

	c = lab_run("client", lab_traced(log, NULL), RUN_MS, lab_example("tw-client"), "-n",
		    lab_fmt("%ld", n), "--close", close_mode, more ? more : "--verbose",
		    more2 ? more2 : "--verbose", addr, NULL);
	cr_assert_eq(lab_exit_code(c), 0, "client failed: %s\n%s", lab_stdout(c), lab_stderr(c));
	lab_assert_ok(c, n);
	return c;
}

/* Waits for a server started with -n to finish by itself. */
static void server_done(struct lab_proc *s)
{
	int rc = lab_wait(s, 10000);

	cr_assert_neq(rc, -1, "server did not finish; stdout:\n%s\nstderr:\n%s", lab_stdout(s),
		      lab_stderr(s));
}

/*
 * The usual run: n connections from a traced tw-client to a traced
 * tw-server, each writing its records to a file of its own. The fields
 * before `clog` say what to run; run_pair() fills in the rest.
 */
struct run {
	long n;
	bool ipv6;
	const char *server_close;
	const char *server_more;	/* one more server argument (NULL: --verbose) */
	bool fork;			/* an inetd-style server: --fork, and no server_more */
	const char *parent_close;	/* with fork: --parent-close WHEN (NULL: not given) */
	const char *client_close;
	const char *client_more[2];	/* two more client arguments (NULL: --verbose) */

	const char *clog, *slog;
	int port;
	struct lab_proc *s, *c;
};

/* A fresh lab of 1,000 ports, the two log paths and a service port. */
static void run_enter(struct run *r)
{
	lab_enter(1000);
	r->clog = lab_path("client.jsonl");
	r->slog = lab_path("server.jsonl");
	r->port = lab_port();
}

/*
 * Enters the lab, starts the server, runs the client to its end (all n
 * connections must succeed) and waits for the server to finish.
 */
static void run_pair(struct run *r)
{
	const char *addr;

	run_enter(r);
	addr = r->ipv6 ? lab_addr6(r->port) : lab_addr4(r->port);
	if (r->fork)
		/* a NULL parent_close ends the argument list early */
		r->s = lab_start_server("server", lab_traced(r->slog, NULL),
					lab_example("tw-server"), "-l", addr, "-n",
					lab_fmt("%ld", r->n), "--fork", "--close", r->server_close,
					r->parent_close ? "--parent-close" : NULL, r->parent_close,
					NULL);
	else
		r->s = server(r->slog, addr, r->n, r->server_close, r->server_more);
	r->c = client_ok(r->clog, r->n, addr, r->client_close, r->client_more[0],
			 r->client_more[1]);
	server_done(r->s);
}

Test(records, client_closes_first, .timeout = 60)
{
	struct run r = { .n = 20, .server_close = "last", .client_close = "first" };

	run_pair(&r);
	lab_records_expect(r.clog, 20, lab_fmt("pid=%d,comm=tw-client,role=client,policy=normal,"
					       "state=ESTABLISHED,end=active,tw=local,via=close,"
					       "remote=127.0.0.1:%d,bytes_received=64", r.c->pid,
					       r.port));
	lab_records_expect(r.slog, 20, lab_fmt("pid=%d,comm=tw-server,role=server,policy=normal,"
					       "state=CLOSE_WAIT,end=passive,tw=peer,via=close,"
					       "local=127.0.0.1:%d", r.s->pid, r.port));
	lab_assert_tw(r.port, 20, 0);
}

Test(records, server_closes_first, .timeout = 60)
{
	struct run r = { .n = 20, .server_close = "first", .client_close = "last" };

	json_t *recs;
	size_t i, acked = 0;

	run_pair(&r);
	recs = lab_records_expect(r.slog, 20, lab_fmt("pid=%d,role=server,state=ESTABLISHED,"
						      "end=active,tw=local,via=close,"
						      "bytes_received=4", r.s->pid));
	/*
	 * bytes_acked is TCP_INFO's at the close, right after the 64-byte
	 * reply: the client's ACK is usually back by then, but a busy machine
	 * can leave it in the loopback's queue. Never more than was written.
	 */
	for (i = 0; i < json_array_size(recs); i++) {
		json_int_t b = json_integer_value(json_object_get(json_array_get(recs, i),
								  "bytes_acked"));

		cr_assert(b >= 0 && b <= 64, "record %zu: bytes_acked=%lld", i, (long long)b);
		acked += b == 64;
	}
	cr_assert_geq(acked, 10, "%zu of 20 closes saw the reply acknowledged", acked);
	json_decref(recs);
	lab_records_expect(r.clog, 20, lab_fmt("pid=%d,role=client,state=CLOSE_WAIT,end=passive,"
					       "tw=peer,via=close", r.c->pid));
	lab_assert_tw(r.port, 0, 20);
}

Test(records, shutdown_then_close_is_one_active_record, .timeout = 60)
{
	struct run r = { .n = 15, .server_close = "last", .client_close = "shutdown" };

	run_pair(&r);
	/* shutdown() sent the FIN; the close() after it must not add a second line */
	lab_records_expect(r.clog, 15, lab_fmt("pid=%d,role=client,state=ESTABLISHED,end=active,"
					       "tw=local,via=shutdown", r.c->pid));
	lab_records_expect(r.slog, 15, "end=passive,tw=peer,state=CLOSE_WAIT");
	lab_assert_tw(r.port, 15, 0);
}

Test(records, server_shutdown_then_close_is_one_active_record, .timeout = 60)
{
	struct run r = { .n = 10, .server_close = "shutdown", .client_close = "last" };

	run_pair(&r);
	lab_records_expect(r.slog, 10, "role=server,end=active,tw=local,via=shutdown");
	lab_records_expect(r.clog, 10, "role=client,end=passive,tw=peer");
	lab_assert_tw(r.port, 0, 10);
}

Test(records, peer_reset_is_recorded_as_reset_on_the_other_side, .timeout = 60)
{
	struct run r = { .n = 10, .server_close = "last", .client_close = "reset" };

	run_pair(&r);
	lab_records_expect(r.slog, 10, "role=server,end=reset,tw=none");
	/* the client's own SO_LINGER {1,0}: a reset by this side, no TIME_WAIT anywhere */
	lab_records_expect(r.clog, 10, "role=client,tw=none,end!=active,end!=passive");
	cr_assert_eq(lab_tw_total(), 0, "TIME_WAIT after resets: %ld", lab_tw_total());
}

Test(records, ipv6_loopback, .timeout = 60)
{
	struct run r = { .n = 12, .ipv6 = true, .server_close = "last", .client_close = "first" };
	json_t *cr, *kernel;
	size_t i;

	run_pair(&r);
	cr = lab_records_expect(r.clog, 12, lab_fmt("pid=%d,role=client,end=active,tw=local,"
						    "remote=[::1]:%d", r.c->pid, r.port));
	lab_records_expect(r.slog, 12, lab_fmt("role=server,end=passive,local=[::1]:%d", r.port));

	lab_assert_tw(r.port, 12, -1);
	/* the same 4-tuples, in the same text, as the kernel's */
	kernel = lab_tw_list();
	for (i = 0; i < json_array_size(kernel); i++) {
		json_t *k = json_array_get(kernel, i);
		const char *local = json_string_value(json_object_get(k, "local"));
		const char *remote = json_string_value(json_object_get(k, "remote"));

		lab_rec_assert_count(cr, lab_fmt("local=%s,remote=%s", local, remote), 1);
	}
}

/* A client ending each connection with `end`, to a server waiting for its EOF. */
static void client_end_via(const char *end, const char *via, long n)
{
	struct run r = { .n = n, .server_close = "last", .server_more = "--threads=16",
			 .client_close = "first", .client_more = { "--end", end } };

	run_pair(&r);
	lab_records_expect(r.clog, (size_t)n, lab_fmt("pid=%d,role=client,state=ESTABLISHED,"
						      "end=active,tw=local,via=%s", r.c->pid,
						      via));
	lab_records_expect(r.slog, (size_t)n, "role=server,end=passive,tw=peer");
	lab_assert_tw(r.port, n, -1);
}

Test(records, dup2_over_socket, .timeout = 60)
{
	client_end_via("dup2", "dup2", 10);
}

Test(records, close_range_of_one_socket, .timeout = 60)
{
	client_end_via("close_range", "close_range", 10);
}

Test(records, fclose_of_fdopened_socket, .timeout = 60)
{
	client_end_via("fclose", "fclose", 10);
}

Test(records, exit_with_connections_open, .timeout = 60)
{
	/* all left open: exit() ends them */
	client_end_via("exit", "exit", 5);
}

/* A client keeping n connections open, then closing every fd from 3 with `how`. */
static void client_closes_all_with(const char *how, long n)
{
	struct run r = { .n = n, .server_close = "last", .server_more = "--threads=16",
			 .client_close = "never", .client_more = { "--close-all", how } };

	run_pair(&r);
	lab_records_expect(r.clog, (size_t)n, lab_fmt("pid=%d,role=client,end=active,tw=local,"
						      "via=%s", r.c->pid, how));
	lab_records_expect(r.slog, (size_t)n, NULL);
	lab_assert_tw(r.port, n, -1);
}

Test(records, close_range_over_many_sockets, .timeout = 60)
{
	client_closes_all_with("close_range", 10);
}

Test(records, closefrom_over_many_sockets, .timeout = 60)
{
	client_closes_all_with("closefrom", 10);
}

Test(records, closing_a_dup_then_the_last_holder_records_once, .timeout = 60)
{
	/* the original fd is closed right after connect; the dup ends the connection */
	struct run r = { .n = 10, .server_close = "last", .client_close = "first",
			 .client_more = { "--dup" } };

	run_pair(&r);
	lab_records_expect(r.clog, 10, lab_fmt("pid=%d,end=active,tw=local,via=close,"
					       "state=ESTABLISHED,bytes_received=64", r.c->pid));
	lab_assert_tw(r.port, 10, -1);
}

/*
 * inetd style: the parent accepts, forks and closes its copy; the child
 * starts only then, so its close is the one that releases the last
 * reference. One record per connection, each by a child, none by the parent.
 */
Test(records, inetd_style_server_records_in_the_child, .timeout = 60)
{
	struct run r = { .n = 20, .fork = true, .parent_close = "before-child",
			 .server_close = "first", .client_close = "last" };
	json_t *sr, *pids;
	size_t i;

	run_pair(&r);
	/* the parent's close of its copy ends nothing and writes nothing */
	sr = lab_records_expect(r.slog, 20, NULL);
	lab_rec_assert_count(sr, lab_fmt("pid=%d", r.s->pid), 0);
	lab_rec_assert_all(sr, "", "role=server,end=active,tw=local,via=close,state=ESTABLISHED");
	pids = json_object();
	for (i = 0; i < json_array_size(sr); i++) {
		json_t *pid = json_object_get(json_array_get(sr, i), "pid");

		json_object_set_new(pids, lab_fmt("%lld", (long long)json_integer_value(pid)),
				    json_true());
	}
	cr_assert_eq(json_object_size(pids), 20, "one child per connection, one record each: "
		     "%zu distinct pids", json_object_size(pids));
	lab_rec_assert_count(lab_records_checked(r.clog), "end=passive", 20);
	lab_assert_tw(r.port, -1, 20);
}

/*
 * The other order: the child ends its part and exits while the parent still
 * holds its copy, which it closes once the child is gone. Whatever the
 * child's close met, it sent nothing and must write nothing; the parent's
 * close ends the connection and records it. A shutdown() is different: it
 * acts on the connection whoever else holds it, so the child's shutdown
 * is the end, and the parent's close later adds nothing.
 */
static void forked_child_then_parent(const char *server_close, const char *client_close,
				     bool parent_records, const char *want)
{
	struct run r = { .n = 5, .fork = true, .parent_close = "after-child",
			 .server_close = server_close, .client_close = client_close };

	run_pair(&r);
	lab_records_expect(r.slog, 5, lab_fmt("pid%s=%d,%s", parent_records ? "" : "!",
					      r.s->pid, want));
	lab_records_expect(r.clog, 5, NULL);
}

Test(records, forked_child_closes_first_parent_close_records, .timeout = 60)
{
	struct lab_tw tw;

	forked_child_then_parent("first", "last", true,
				 "role=server,end=active,tw=local,via=close");
	lab_rec_assert_count(lab_records_checked(lab_path("client.jsonl")), "end=passive", 5);
	lab_tw_count(&tw, 0);
	cr_assert_eq(tw.total, 5, "TIME_WAIT: %ld", tw.total);
}

Test(records, forked_child_closes_after_peer_parent_close_records, .timeout = 60)
{
	forked_child_then_parent("last", "first", true,
				 "role=server,end=passive,tw=peer,via=close");
	lab_rec_assert_count(lab_records_checked(lab_path("client.jsonl")), "end=active", 5);
}

Test(records, forked_child_shutdown_ends_it_parent_close_adds_nothing, .timeout = 60)
{
	forked_child_then_parent("shutdown", "last", false,
				 "role=server,end=active,tw=local,via=shutdown");
	lab_rec_assert_count(lab_records_checked(lab_path("client.jsonl")), "end=passive", 5);
}

/*
 * inetd style as real servers do it: the parent closes its copy right after
 * fork(), racing the child, which may have served and closed by then. Which
 * close is the last varies; there must still be exactly one record per
 * connection, with the end the kernel saw.
 */
static void inetd_racing(const char *server_close, const char *client_close, const char *want)
{
	struct run r = { .n = 150, .fork = true, .server_close = server_close,
			 .client_close = client_close };

	run_pair(&r);
	lab_records_expect(r.slog, 150, want);
	lab_records_expect(r.clog, 150, NULL);
}

Test(records, inetd_parent_close_racing_child_close_after_peer, .timeout = 60)
{
	inetd_racing("last", "first", "role=server,end=passive,tw=peer");
}

Test(records, inetd_parent_close_racing_child_close_first, .timeout = 60)
{
	inetd_racing("first", "last", "role=server,end=active,tw=local");
}

Test(records, eight_threads_times_1000_connections_one_record_each, .timeout = 120)
{
	struct run r = { 0 };
	struct lab_proc *s, *c;

	run_enter(&r);
	s = server(r.slog, lab_addr4(r.port), 8000, "first", "--threads=8");
	c = lab_run("client", lab_traced(r.clog, NULL), 90000, lab_example("tw-client"),
		    "--threads", "8", "-n", "1000", "--close", "last", lab_addr4(r.port), NULL);
	lab_assert_ok(c, 8000);
	server_done(s);

	lab_records_expect(r.clog, 8000, lab_fmt("pid=%d,role=client,end=passive", c->pid));
	lab_records_expect(r.slog, 8000, lab_fmt("pid=%d,role=server,end=active", s->pid));
}

/* Adds each record's tw=local 4-tuple to set, keyed "local remote" -> comm/pid. */
static void add_tuples(json_t *set, const json_t *recs)
{
	size_t i;

	for (i = 0; i < json_array_size(recs); i++) {
		json_t *r = json_array_get(recs, i);
		const char *key;

		if (!lab_rec_match(r, "tw=local"))
			continue;
		key = lab_tuple_key(r);
		cr_assert_null(json_object_get(set, key), "two tw=local records for %s", key);
		json_object_set(set, key, json_object_get(r, "pid"));
	}
}

/*
 * Several processes, each side closing first in turn: for each process, the
 * TIME_WAIT sockets the kernel holds for its connections are exactly its
 * records with tw=local, matched by 4-tuple.
 */
Test(records, timewait_of_each_process_equals_its_local_records, .timeout = 90)
{
	const char *logs[6];
	struct lab_proc *sa, *sb, *sc, *procs[6];
	json_t *set, *kernel, *per_pid, *val;
	const char *pid;
	int pa, pb, pc;
	size_t i;

	lab_enter(2000);
	for (i = 0; i < 6; i++)
		logs[i] = lab_path(lab_fmt("p%zu.jsonl", i));
	pa = lab_port();
	pb = lab_port();
	pc = lab_port();
	/* A closes first, B waits for the client, C shuts down first and is inetd-style */
	sa = lab_start_server("server-a", lab_traced(logs[0], NULL), lab_example("tw-server"), "-l",
			      lab_addr4(pa), "--close", "first", "-n", "40", NULL);
	sb = lab_start_server("server-b", lab_traced(logs[1], NULL), lab_example("tw-server"), "-l",
			      lab_addr6(pb), "--close", "last", "-n", "40", "--threads", "4", NULL);
	sc = lab_start_server("server-c", lab_traced(logs[2], NULL), lab_example("tw-server"), "-l",
			      lab_addr4(pc), "--close", "shutdown", "--fork", "--parent-close",
			      "before-child", "-n", "15", NULL);
	procs[0] = sa;
	procs[1] = sb;
	procs[2] = sc;
	procs[3] = client_ok(logs[3], 25, lab_addr4(pa), "last", NULL, NULL);
	/* one client to two servers: first to B (closes first), then A (waits) */
	procs[4] = client_ok(logs[4], 40, lab_addr6(pb), "first", "--threads", "1");
	client_ok(logs[4], 15, lab_addr4(pa), "last", NULL, NULL);
	procs[5] = client_ok(logs[5], 15, lab_addr4(pc), "last", "--end", "dup2");
	server_done(sa);
	server_done(sb);
	server_done(sc);

	set = json_object();
	per_pid = json_object();
	for (i = 0; i < 6; i++) {
		json_t *recs = lab_records_checked(logs[i]);

		add_tuples(set, recs);
		json_decref(recs);
	}
	kernel = lab_tw_list();
	cr_assert_eq(json_array_size(kernel), json_object_size(set),
		     "kernel holds %zu TIME_WAIT sockets, records say %zu",
		     json_array_size(kernel), json_object_size(set));
	for (i = 0; i < json_array_size(kernel); i++) {
		const char *key = lab_tuple_key(json_array_get(kernel, i));
		json_t *owner = json_object_get(set, key);
		const char *pk;
		json_t *n;

		cr_assert_not_null(owner, "kernel TIME_WAIT %s has no tw=local record", key);
		pk = lab_fmt("%lld", (long long)json_integer_value(owner));
		n = json_object_get(per_pid, pk);
		json_object_set_new(per_pid, pk, json_integer(n ? json_integer_value(n) + 1 : 1));
	}
	/* who holds what: A 25+15 (server side), B's client 40, C's children 15 */
	json_object_foreach(per_pid, pid, val) {
		(void)pid;
		cr_assert(json_integer_value(val) > 0);
	}
	cr_assert_eq(json_integer_value(json_object_get(per_pid, lab_fmt("%d", sa->pid))), 40,
		     "server A's TIME_WAIT");
	cr_assert_eq(json_integer_value(json_object_get(per_pid, lab_fmt("%d", procs[4]->pid))),
		     40, "client of B's TIME_WAIT");
	cr_assert_null(json_object_get(per_pid, lab_fmt("%d", sb->pid)), "server B holds none");
	cr_assert_null(json_object_get(per_pid, lab_fmt("%d", procs[3]->pid)),
		       "client of A holds none");
	cr_assert_null(json_object_get(per_pid, lab_fmt("%d", procs[5]->pid)),
		       "client of C holds none");
	cr_assert_eq(json_array_size(kernel), 40 + 40 + 15);
}
