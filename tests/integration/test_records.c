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

/* The library preloaded, writing records to log; extra options may follow. */
static const struct lab_opts *traced(const char *log, const char *extra)
{
	struct lab_opts *o = calloc(1, sizeof(*o));

	cr_assert(o);
	o->preload = true;
	o->options = extra ? lab_fmt("log=%s,%s", log, extra) : lab_fmt("log=%s", log);
	return o;
}

/* A traced tw-server on a fresh port, serving n connections (0: until stopped). */
static struct lab_proc *server(const char *log, const char *addr, long n, const char *close_mode,
			       const char *more)
{
	return lab_start_server("server", traced(log, NULL), lab_example("tw-server"), "-l", addr,
				"-n", lab_fmt("%ld", n ? n : 1000000), "--close", close_mode,
				more ? more : "--verbose", NULL);
}

/* Runs a traced tw-client; asserts every connection succeeded. */
static struct lab_proc *client_ok(const char *log, long n, const char *addr, const char *close_mode,
				  const char *more, const char *more2)
{
	struct lab_proc *c;
	char *out;

	c = lab_run("client", traced(log, NULL), RUN_MS, lab_example("tw-client"), "-n",
		    lab_fmt("%ld", n), "--close", close_mode, more ? more : "--verbose",
		    more2 ? more2 : "--verbose", addr, NULL);
	out = lab_stdout(c);
	cr_assert_eq(lab_exit_code(c), 0, "client failed: %s\n%s", out, lab_stderr(c));
	cr_assert_eq(lab_value_long(out, "ok"), n, "client: %s", out);
	free(out);
	return c;
}

/* Waits for a server started with -n to finish by itself. */
static void server_done(struct lab_proc *s)
{
	int rc = lab_wait(s, 10000);

	cr_assert_neq(rc, -1, "server did not finish; stdout:\n%s\nstderr:\n%s", lab_stdout(s),
		      lab_stderr(s));
}

/* Records of one file, checked against the schema. */
static json_t *records(const char *log)
{
	json_t *r = lab_records(log);

	lab_records_check(r);
	return r;
}

static void assert_count(const json_t *recs, const char *filter, size_t want)
{
	size_t got = lab_rec_count(recs, filter);

	cr_assert_eq(got, want, "records matching '%s': %zu, expected %zu\n(%s)", filter, got,
		     want, lab_rec_summary(recs));
}

Test(records, client_closes_first, .timeout = 60)
{
	const char *clog, *slog;
	struct lab_proc *s, *c;
	struct lab_tw tw;
	json_t *cr, *sr;
	int port;

	lab_enter(1000);
	clog = lab_path("client.jsonl");
	slog = lab_path("server.jsonl");
	port = lab_port();
	s = server(slog, lab_addr4(port), 20, "last", NULL);
	c = client_ok(clog, 20, lab_addr4(port), "first", NULL, NULL);
	server_done(s);

	cr = records(clog);
	assert_count(cr, "", 20);
	lab_rec_assert_all(cr, "", lab_fmt("pid=%d,comm=tw-client,role=client,policy=normal,"
					   "state=ESTABLISHED,end=active,tw=local,via=close,"
					   "remote=127.0.0.1:%d,bytes_received=64", c->pid, port));
	sr = records(slog);
	assert_count(sr, "", 20);
	lab_rec_assert_all(sr, "", lab_fmt("pid=%d,comm=tw-server,role=server,policy=normal,"
					   "state=CLOSE_WAIT,end=passive,tw=peer,via=close,"
					   "local=127.0.0.1:%d", s->pid, port));

	lab_tw_count(&tw, port);
	cr_assert_eq(tw.client, 20, "client-side TIME_WAIT: %ld", tw.client);
	cr_assert_eq(tw.server, 0, "server-side TIME_WAIT: %ld", tw.server);
}

Test(records, server_closes_first, .timeout = 60)
{
	const char *clog, *slog;
	struct lab_proc *s, *c;
	struct lab_tw tw;
	json_t *cr, *sr;
	int port;

	lab_enter(1000);
	clog = lab_path("client.jsonl");
	slog = lab_path("server.jsonl");
	port = lab_port();
	s = server(slog, lab_addr4(port), 20, "first", NULL);
	c = client_ok(clog, 20, lab_addr4(port), "last", NULL, NULL);
	server_done(s);

	sr = records(slog);
	assert_count(sr, "", 20);
	lab_rec_assert_all(sr, "", lab_fmt("pid=%d,role=server,state=ESTABLISHED,end=active,"
					   "tw=local,via=close,bytes_acked=64", s->pid));
	cr = records(clog);
	assert_count(cr, "", 20);
	lab_rec_assert_all(cr, "", lab_fmt("pid=%d,role=client,state=CLOSE_WAIT,end=passive,"
					   "tw=peer,via=close", c->pid));

	lab_tw_count(&tw, port);
	cr_assert_eq(tw.server, 20, "server-side TIME_WAIT: %ld", tw.server);
	cr_assert_eq(tw.client, 0, "client-side TIME_WAIT: %ld", tw.client);
}

Test(records, shutdown_then_close_is_one_active_record, .timeout = 60)
{
	const char *clog, *slog;
	struct lab_proc *s, *c;
	struct lab_tw tw;
	json_t *cr, *sr;
	int port;

	lab_enter(1000);
	clog = lab_path("client.jsonl");
	slog = lab_path("server.jsonl");
	port = lab_port();
	s = server(slog, lab_addr4(port), 15, "last", NULL);
	c = client_ok(clog, 15, lab_addr4(port), "shutdown", NULL, NULL);
	server_done(s);

	cr = records(clog);
	/* shutdown() sent the FIN; the close() after it must not add a second line */
	assert_count(cr, "", 15);
	lab_rec_assert_all(cr, "", lab_fmt("pid=%d,role=client,state=ESTABLISHED,end=active,"
					   "tw=local,via=shutdown", c->pid));
	sr = records(slog);
	assert_count(sr, "", 15);
	lab_rec_assert_all(sr, "", "end=passive,tw=peer,state=CLOSE_WAIT");

	lab_tw_count(&tw, port);
	cr_assert_eq(tw.client, 15, "client-side TIME_WAIT: %ld", tw.client);
	cr_assert_eq(tw.server, 0, "server-side TIME_WAIT: %ld", tw.server);
}

Test(records, server_shutdown_then_close_is_one_active_record, .timeout = 60)
{
	const char *clog, *slog;
	struct lab_proc *s;
	struct lab_tw tw;
	json_t *cr, *sr;
	int port;

	lab_enter(1000);
	clog = lab_path("client.jsonl");
	slog = lab_path("server.jsonl");
	port = lab_port();
	s = server(slog, lab_addr4(port), 10, "shutdown", NULL);
	client_ok(clog, 10, lab_addr4(port), "last", NULL, NULL);
	server_done(s);

	sr = records(slog);
	assert_count(sr, "", 10);
	lab_rec_assert_all(sr, "", "role=server,end=active,tw=local,via=shutdown");
	cr = records(clog);
	assert_count(cr, "", 10);
	lab_rec_assert_all(cr, "", "role=client,end=passive,tw=peer");
	lab_tw_count(&tw, port);
	cr_assert_eq(tw.server, 10, "server-side TIME_WAIT: %ld", tw.server);
	cr_assert_eq(tw.client, 0, "client-side TIME_WAIT: %ld", tw.client);
}

Test(records, peer_reset_is_recorded_as_reset_on_the_other_side, .timeout = 60)
{
	const char *clog, *slog;
	struct lab_proc *s;
	json_t *cr, *sr;
	int port;

	lab_enter(1000);
	clog = lab_path("client.jsonl");
	slog = lab_path("server.jsonl");
	port = lab_port();
	s = server(slog, lab_addr4(port), 10, "last", NULL);
	client_ok(clog, 10, lab_addr4(port), "reset", NULL, NULL);
	server_done(s);

	sr = records(slog);
	assert_count(sr, "", 10);
	lab_rec_assert_all(sr, "", "role=server,end=reset,tw=none");
	cr = records(clog);
	assert_count(cr, "", 10);
	/* the client's own SO_LINGER {1,0}: a reset by this side, no TIME_WAIT anywhere */
	lab_rec_assert_all(cr, "", "role=client,tw=none,end!=active,end!=passive");
	cr_assert_eq(lab_tw_total(), 0, "TIME_WAIT after resets: %ld", lab_tw_total());
}

Test(records, ipv6_loopback, .timeout = 60)
{
	const char *clog, *slog;
	struct lab_proc *s, *c;
	json_t *cr, *sr, *kernel;
	struct lab_tw tw;
	size_t i;
	int port;

	lab_enter(1000);
	clog = lab_path("client.jsonl");
	slog = lab_path("server.jsonl");
	port = lab_port();
	s = server(slog, lab_addr6(port), 12, "last", NULL);
	c = client_ok(clog, 12, lab_addr6(port), "first", NULL, NULL);
	server_done(s);

	cr = records(clog);
	assert_count(cr, "", 12);
	lab_rec_assert_all(cr, "", lab_fmt("pid=%d,role=client,end=active,tw=local,"
					   "remote=[::1]:%d", c->pid, port));
	sr = records(slog);
	assert_count(sr, "", 12);
	lab_rec_assert_all(sr, "", lab_fmt("role=server,end=passive,local=[::1]:%d", port));

	lab_tw_count(&tw, port);
	cr_assert_eq(tw.client, 12, "client-side TIME_WAIT: %ld", tw.client);
	/* the same 4-tuples, in the same text, as the kernel's */
	kernel = lab_tw_list();
	for (i = 0; i < json_array_size(kernel); i++) {
		json_t *k = json_array_get(kernel, i);

		assert_count(cr, lab_fmt("local=%s,remote=%s",
					 json_string_value(json_object_get(k, "local")),
					 json_string_value(json_object_get(k, "remote"))), 1);
	}
}

/* A client ending each connection with `end`, to a server waiting for its EOF. */
static void client_end_via(const char *end, const char *via, long n)
{
	const char *clog, *slog;
	struct lab_proc *s, *c;
	struct lab_tw tw;
	json_t *cr, *sr;
	int port;

	lab_enter(1000);
	clog = lab_path("client.jsonl");
	slog = lab_path("server.jsonl");
	port = lab_port();
	s = server(slog, lab_addr4(port), n, "last", "--threads=16");
	c = client_ok(clog, n, lab_addr4(port), "first", "--end", end);
	server_done(s);

	cr = records(clog);
	assert_count(cr, "", (size_t)n);
	lab_rec_assert_all(cr, "", lab_fmt("pid=%d,role=client,state=ESTABLISHED,end=active,"
					   "tw=local,via=%s", c->pid, via));
	sr = records(slog);
	assert_count(sr, "", (size_t)n);
	lab_rec_assert_all(sr, "", "role=server,end=passive,tw=peer");
	lab_tw_count(&tw, port);
	cr_assert_eq(tw.client, n, "client-side TIME_WAIT: %ld", tw.client);
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
	const char *clog, *slog;
	struct lab_proc *s, *c;
	struct lab_tw tw;
	json_t *cr, *sr;
	int port;

	lab_enter(1000);
	clog = lab_path("client.jsonl");
	slog = lab_path("server.jsonl");
	port = lab_port();
	s = server(slog, lab_addr4(port), n, "last", "--threads=16");
	c = client_ok(clog, n, lab_addr4(port), "never", "--close-all", how);
	server_done(s);

	cr = records(clog);
	assert_count(cr, "", (size_t)n);
	lab_rec_assert_all(cr, "", lab_fmt("pid=%d,role=client,end=active,tw=local,via=%s",
					   c->pid, how));
	sr = records(slog);
	assert_count(sr, "", (size_t)n);
	lab_tw_count(&tw, port);
	cr_assert_eq(tw.client, n, "client-side TIME_WAIT: %ld", tw.client);
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
	const char *clog, *slog;
	struct lab_proc *s, *c;
	struct lab_tw tw;
	json_t *cr;
	int port;

	lab_enter(1000);
	clog = lab_path("client.jsonl");
	slog = lab_path("server.jsonl");
	port = lab_port();
	s = server(slog, lab_addr4(port), 10, "last", NULL);
	/* the original fd is closed right after connect; the dup ends the connection */
	c = client_ok(clog, 10, lab_addr4(port), "first", "--dup", NULL);
	server_done(s);

	cr = records(clog);
	assert_count(cr, "", 10);
	lab_rec_assert_all(cr, "", lab_fmt("pid=%d,end=active,tw=local,via=close,"
					   "state=ESTABLISHED,bytes_received=64", c->pid));
	lab_tw_count(&tw, port);
	cr_assert_eq(tw.client, 10, "client-side TIME_WAIT: %ld", tw.client);
}

/*
 * inetd style: the parent accepts, forks and closes its copy; the child
 * starts only then, so its close is the one that releases the last
 * reference. One record per connection, each by a child, none by the parent.
 */
Test(records, inetd_style_server_records_in_the_child, .timeout = 60)
{
	const char *clog, *slog;
	struct lab_proc *s;
	struct lab_tw tw;
	json_t *sr, *pids;
	size_t i;
	int port;

	lab_enter(1000);
	clog = lab_path("client.jsonl");
	slog = lab_path("server.jsonl");
	port = lab_port();
	s = lab_start_server("server", traced(slog, NULL), lab_example("tw-server"), "-l",
			     lab_addr4(port), "-n", "20", "--fork", "--close", "first",
			     "--parent-close", "before-child", NULL);
	client_ok(clog, 20, lab_addr4(port), "last", NULL, NULL);
	server_done(s);

	sr = records(slog);
	/* the parent's close of its copy ends nothing and writes nothing */
	assert_count(sr, "", 20);
	assert_count(sr, lab_fmt("pid=%d", s->pid), 0);
	lab_rec_assert_all(sr, "", "role=server,end=active,tw=local,via=close,state=ESTABLISHED");
	pids = json_object();
	for (i = 0; i < json_array_size(sr); i++) {
		json_t *pid = json_object_get(json_array_get(sr, i), "pid");

		json_object_set_new(pids, lab_fmt("%lld", (long long)json_integer_value(pid)),
				    json_true());
	}
	cr_assert_eq(json_object_size(pids), 20, "one child per connection, one record each: "
		     "%zu distinct pids", json_object_size(pids));
	assert_count(records(clog), "end=passive", 20);
	lab_tw_count(&tw, port);
	cr_assert_eq(tw.server, 20, "server-side TIME_WAIT: %ld", tw.server);
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
	const char *clog, *slog;
	struct lab_proc *s;
	json_t *sr;
	int port;

	lab_enter(1000);
	clog = lab_path("client.jsonl");
	slog = lab_path("server.jsonl");
	port = lab_port();
	s = lab_start_server("server", traced(slog, NULL), lab_example("tw-server"), "-l",
			     lab_addr4(port), "-n", "5", "--fork", "--close", server_close,
			     "--parent-close", "after-child", NULL);
	client_ok(clog, 5, lab_addr4(port), client_close, NULL, NULL);
	server_done(s);

	sr = records(slog);
	assert_count(sr, "", 5);
	if (parent_records)
		lab_rec_assert_all(sr, "", lab_fmt("pid=%d,%s", s->pid, want));
	else
		lab_rec_assert_all(sr, "", lab_fmt("pid!=%d,%s", s->pid, want));
	assert_count(records(clog), "", 5);
}

Test(records, forked_child_closes_first_parent_close_records, .timeout = 60)
{
	struct lab_tw tw;

	forked_child_then_parent("first", "last", true,
				 "role=server,end=active,tw=local,via=close");
	assert_count(records(lab_path("client.jsonl")), "end=passive", 5);
	lab_tw_count(&tw, 0);
	cr_assert_eq(tw.total, 5, "TIME_WAIT: %ld", tw.total);
}

Test(records, forked_child_closes_after_peer_parent_close_records, .timeout = 60)
{
	forked_child_then_parent("last", "first", true,
				 "role=server,end=passive,tw=peer,via=close");
	assert_count(records(lab_path("client.jsonl")), "end=active", 5);
}

Test(records, forked_child_shutdown_ends_it_parent_close_adds_nothing, .timeout = 60)
{
	forked_child_then_parent("shutdown", "last", false,
				 "role=server,end=active,tw=local,via=shutdown");
	assert_count(records(lab_path("client.jsonl")), "end=passive", 5);
}

/*
 * inetd style as real servers do it: the parent closes its copy right after
 * fork(), racing the child, which may have served and closed by then. Which
 * close is the last varies; there must still be exactly one record per
 * connection, with the end the kernel saw.
 */
static void inetd_racing(const char *server_close, const char *client_close, const char *want)
{
	const char *clog, *slog;
	struct lab_proc *s;
	json_t *sr;
	int port;

	lab_enter(1000);
	clog = lab_path("client.jsonl");
	slog = lab_path("server.jsonl");
	port = lab_port();
	s = lab_start_server("server", traced(slog, NULL), lab_example("tw-server"), "-l",
			     lab_addr4(port), "-n", "150", "--fork", "--close", server_close, NULL);
	client_ok(clog, 150, lab_addr4(port), client_close, NULL, NULL);
	server_done(s);

	sr = records(slog);
	assert_count(sr, "", 150);
	lab_rec_assert_all(sr, "", want);
	assert_count(records(clog), "", 150);
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
	const char *clog, *slog;
	struct lab_proc *s, *c;
	json_t *cr, *sr;
	int port;

	lab_enter(1000);
	clog = lab_path("client.jsonl");
	slog = lab_path("server.jsonl");
	port = lab_port();
	s = server(slog, lab_addr4(port), 8000, "first", "--threads=8");
	c = lab_run("client", traced(clog, NULL), 90000, lab_example("tw-client"), "--threads",
		    "8", "-n", "1000", "--close", "last", lab_addr4(port), NULL);
	cr_assert_eq(lab_value_long(lab_stdout(c), "ok"), 8000, "client: %s%s", lab_stdout(c),
		     lab_stderr(c));
	server_done(s);

	cr = records(clog);
	assert_count(cr, "", 8000);
	lab_rec_assert_all(cr, "", lab_fmt("pid=%d,role=client,end=passive", c->pid));
	sr = records(slog);
	assert_count(sr, "", 8000);
	lab_rec_assert_all(sr, "", lab_fmt("pid=%d,role=server,end=active", s->pid));
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
		key = lab_fmt("%s %s", json_string_value(json_object_get(r, "local")),
			      json_string_value(json_object_get(r, "remote")));
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
	sa = lab_start_server("server-a", traced(logs[0], NULL), lab_example("tw-server"), "-l",
			      lab_addr4(pa), "--close", "first", "-n", "40", NULL);
	sb = lab_start_server("server-b", traced(logs[1], NULL), lab_example("tw-server"), "-l",
			      lab_addr6(pb), "--close", "last", "-n", "40", "--threads", "4", NULL);
	sc = lab_start_server("server-c", traced(logs[2], NULL), lab_example("tw-server"), "-l",
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
		json_t *recs = records(logs[i]);

		add_tuples(set, recs);
		json_decref(recs);
	}
	kernel = lab_tw_list();
	cr_assert_eq(json_array_size(kernel), json_object_size(set),
		     "kernel holds %zu TIME_WAIT sockets, records say %zu",
		     json_array_size(kernel), json_object_size(set));
	for (i = 0; i < json_array_size(kernel); i++) {
		json_t *k = json_array_get(kernel, i);
		const char *key = lab_fmt("%s %s", json_string_value(json_object_get(k, "local")),
					  json_string_value(json_object_get(k, "remote")));
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
