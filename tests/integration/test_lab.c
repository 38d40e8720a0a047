// SPDX-License-Identifier: MIT
/*
 * The lab itself, without the library: the kernel facts every other
 * integration test builds on. If these fail, the namespace set-up or the
 * example programs are wrong, not the library.
 */
#include <criterion/criterion.h>

#include "lab.h"

/* Runs tw-client to completion and returns its stdout. */
static char *client_run(const struct lab_opts *o, int timeout_ms, const char *n,
			const char *close_mode, int port)
{
	struct lab_proc *c;

	c = lab_run("client", o, timeout_ms, lab_example("tw-client"), "-n", n,
		    "--close", close_mode, lab_fmt("127.0.0.1:%d", port), NULL);
	return lab_stdout(c);
}

/*
 * In a lab of 100 ports: a tw-server ending its connections with
 * server_close (returned in *srv), and n connections to it from a tw-client
 * ending them with client_close. Returns the client's stdout.
 */
static char *exchange(const char *server_close, const char *n, const char *client_close,
		      struct lab_proc **srv)
{
	lab_enter(100);
	*srv = lab_start_server("server", NULL, lab_example("tw-server"), "--close", server_close,
				"-l", lab_addr4(lab_port()), NULL);
	return client_run(NULL, 20000, n, client_close, (*srv)->port);
}

Test(lab, client_closes_first_exhausts_100_ports_at_100, .timeout = 30)
{
	struct lab_proc *srv;
	char err[64], *out;

	out = exchange("last", "300", "first", &srv);

	cr_assert_eq(lab_value_long(out, "ok"), 100, "client: %s", out);
	cr_assert_eq(lab_value_long(out, "failed"), 200, "client: %s", out);
	lab_value_str(out, "first_error", err, sizeof(err));
	cr_assert_str_eq(err, "EADDRNOTAVAIL", "client: %s", out);
	cr_assert_eq(lab_value_long(out, "first_error_conn"), 101, "client: %s", out);

	lab_assert_tw(srv->port, 100, 0);
	cr_assert_eq(lab_stop(srv, 5000), 0, "server: %s", lab_stderr(srv));
}

Test(lab, server_closes_first_never_exhausts_ports, .timeout = 30)
{
	struct lab_proc *srv;
	struct lab_tw tw;
	char *out;

	out = exchange("first", "1000", "last", &srv);

	cr_assert_eq(lab_value_long(out, "ok"), 1000, "client: %s", out);
	cr_assert_eq(lab_value_long(out, "failed"), 0, "client: %s", out);
	lab_tw_count(&tw, srv->port);
	cr_assert_eq(tw.client, 0, "client-side TIME_WAIT: %ld", tw.client);
	/* SYNs to a server-side TIME_WAIT 4-tuple recycle it: at most one per port */
	cr_assert(tw.server > 0 && tw.server <= 100, "server-side TIME_WAIT: %ld", tw.server);
	cr_assert_eq(lab_stop(srv, 5000), 0);
}

Test(lab, timewait_counted_by_side_and_listed_by_tuple, .timeout = 30)
{
	struct lab_proc *a, *b;
	struct lab_tw tw;
	json_t *list;
	size_t i, on_a = 0;
	char *out;

	lab_enter(1000);
	a = lab_start_server("server-a", NULL, lab_example("tw-server"), "--close", "first",
			     "-l", lab_addr4(lab_port()), NULL);
	b = lab_start_server("server-b", NULL, lab_example("tw-server"), "-l",
			     lab_addr6(lab_port()), "--close", "last", NULL);
	out = client_run(NULL, 20000, "7", "last", a->port);
	cr_assert_eq(lab_value_long(out, "ok"), 7, "client: %s", out);
	out = lab_stdout(lab_run("client6", NULL, 20000, lab_example("tw-client"), "-n", "5",
				 lab_fmt("[::1]:%d", b->port), NULL));
	cr_assert_eq(lab_value_long(out, "ok"), 5, "client6: %s", out);

	lab_tw_count(&tw, a->port);
	cr_assert_eq(tw.server, 7);
	cr_assert_eq(tw.client, 0);
	lab_tw_count(&tw, b->port);
	cr_assert_eq(tw.client, 5);
	cr_assert_eq(tw.total, 12);
	cr_assert_eq(lab_tw_total(), 12);

	list = lab_tw_list();
	cr_assert_eq(json_array_size(list), 12);
	for (i = 0; i < json_array_size(list); i++) {
		const char *local = json_string_value(json_object_get(json_array_get(list, i),
								      "local"));

		if (!strcmp(local, lab_fmt("127.0.0.1:%d", a->port)))
			on_a++;
		else
			cr_assert(!strncmp(local, "[::1]:", 6), "unexpected local %s", local);
	}
	cr_assert_eq(on_a, 7);
	json_decref(list);
	lab_stop(a, 5000);
	lab_stop(b, 5000);
}

Test(lab, records_parse_filter_and_schema, .timeout = 10)
{
	const char *path;
	json_t *recs;

	lab_enter(100);
	path = lab_path("sample.jsonl");
	lab_write_file(path,
		"{\"ts\":1700000000.000001,\"pid\":42,\"comm\":\"tw-client\",\"role\":\"client\","
		"\"local\":\"127.0.0.1:40000\",\"remote\":\"127.0.0.1:8080\",\"policy\":\"defer\","
		"\"state\":\"ESTABLISHED\",\"end\":\"passive\",\"tw\":\"peer\",\"via\":\"close\","
		"\"dur_ms\":0.120,\"deferred_ms\":3.000,\"bytes_acked\":5,\"bytes_received\":64,"
		"\"fd\":3}\n"
		"{\"ts\":1700000000.5,\"pid\":43,\"comm\":\"tw-server\",\"role\":\"server\","
		"\"local\":\"[::1]:8080\",\"remote\":\"[::1]:40000\",\"policy\":\"normal\","
		"\"state\":\"CLOSE_WAIT\",\"end\":\"passive\",\"tw\":\"peer\",\"via\":\"exit\","
		"\"dur_ms\":1,\"timeout\":true,\"bytes_acked\":65,\"bytes_received\":4,"
		"\"fd\":4}\n");

	recs = lab_records(path);
	lab_records_check(recs);
	cr_assert_eq(json_array_size(recs), 2);
	cr_assert_eq(lab_rec_count(recs, ""), 2);
	cr_assert_eq(lab_rec_count(recs, "end=passive"), 2);
	cr_assert_eq(lab_rec_count(recs, "pid=42,role=client"), 1);
	cr_assert_eq(lab_rec_count(recs, "pid!=42"), 1);
	cr_assert_eq(lab_rec_count(recs, "timeout=true"), 1);
	cr_assert_eq(lab_rec_count(recs, "!timeout"), 1);
	cr_assert_eq(lab_rec_count(recs, "deferred_ms"), 1);
	cr_assert_eq(lab_rec_count(recs, "dur_ms=0.12"), 1);
	cr_assert_eq(lab_rec_count(recs, "local=[::1]:8080,via=exit"), 1);
	cr_assert_eq(lab_rec_count(recs, "via=exit,role=client"), 0);
	cr_assert_not_null(lab_rec_find(recs, "comm=tw-server"));
	json_decref(recs);
	cr_assert_eq(json_array_size(lab_records(lab_path("missing.jsonl"))), 0);
}

Test(lab, values_from_summary_lines)
{
	const char *text = "listening 8080\nok=100 failed=900 first_error=EADDRNOTAVAIL "
			   "first_error_conn=101 first_error_op=connect\nnot_ok=5\n";
	char buf[32];

	cr_assert_eq(lab_value_long(text, "ok"), 100);
	cr_assert_eq(lab_value_long(text, "failed"), 900);
	cr_assert_eq(lab_value_long(text, "missing"), -1);
	lab_value_str(text, "first_error", buf, sizeof(buf));
	cr_assert_str_eq(buf, "EADDRNOTAVAIL");
	lab_value_str(text, "first_error_op", buf, sizeof(buf));
	cr_assert_str_eq(buf, "connect");
}
