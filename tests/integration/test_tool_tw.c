// SPDX-License-Identifier: MIT
/*
 * `twshim tw`: every TIME_WAIT socket the kernel lists is attributed to the
 * process whose close record has its 4-tuple, or counted with the reason it
 * could not be.
 */
#include <stdio.h>
#include <string.h>
#include <time.h>

#include <criterion/criterion.h>
#include <jansson.h>

#include "lab.h"

static const char *tool(void)
{
	return lab_build_path("twshim");
}

/* Waits (bounded) until the namespace holds n TIME_WAIT sockets; returns the count. */
static long wait_tw(long n)
{
	for (int i = 0; i < 200 && lab_tw_total() < n; i++)
		lab_sleep_ms(10);
	return lab_tw_total();
}

/* Runs tw-client under the library, n connections closed first; returns its pid. */
static int recorded_client(const char *name, const char *log, int n, const char *addr)
{
	struct lab_proc *c;

	c = lab_run(name, NULL, 20000, tool(), "run", "-o", lab_fmt("log=%s", log), "--",
		    lab_example("tw-client"), "-n", lab_fmt("%d", n), "--close", "first", addr,
		    NULL);
	cr_assert_eq(lab_exit_code(c), 0, "%s: %s", name, lab_stderr(c));
	return c->pid;
}

static json_t *tw_json(const char *const *logs)
{
	struct lab_proc *p;
	char *argv[16];
	json_t *j;
	int n = 0;

	argv[n++] = (char *)"twshim";
	argv[n++] = (char *)"tw";
	argv[n++] = (char *)"--json";
	for (; logs && *logs && n < 15; logs++)
		argv[n++] = (char *)*logs;
	argv[n] = NULL;
	p = lab_spawnv("tw", NULL, tool(), argv);
	cr_assert_eq(lab_wait(p, 10000), 0, "%s", lab_stderr(p));
	j = json_loads(lab_stdout(p), 0, NULL);
	cr_assert(j, "twshim tw --json: not JSON:\n%s", lab_stdout(p));
	return j;
}

static long num(json_t *o, const char *key)
{
	json_t *v = json_object_get(o, key);

	cr_assert(json_is_integer(v), "\"%s\" missing in %s", key, json_dumps(o, 0));
	return (long)json_integer_value(v);
}

/* the count the tool gives pid, 0 when it lists it not */
static long held_by(json_t *j, int pid)
{
	json_t *procs = json_object_get(j, "processes"), *p;
	size_t i;

	json_array_foreach(procs, i, p)
		if (num(p, "pid") == pid) {
			cr_expect_str_eq(json_string_value(json_object_get(p, "comm")),
					 "tw-client");
			return num(p, "timewait");
		}
	return 0;
}

static void two_processes_attributed(const char *addr_fmt)
{
	struct lab_proc *srv;
	const char *log, *addr;
	int pid1, pid2, port = lab_port();
	json_t *j;

	lab_enter(200);
	log = lab_path("clients.jsonl");
	addr = lab_fmt(addr_fmt, port);
	srv = lab_start_server("server", NULL, lab_example("tw-server"), "--close", "last",
			       "-l", addr, NULL);
	pid1 = recorded_client("client1", log, 7, addr);
	pid2 = recorded_client("client2", log, 4, addr);
	cr_assert_eq(wait_tw(11), 11, "the clients closed first 11 times");

	j = tw_json((const char *const[]){ log, NULL });
	cr_expect_eq(num(j, "timewait"), 11);
	cr_expect_eq(num(j, "attributed"), 11);
	cr_expect_eq(json_array_size(json_object_get(j, "processes")), 2);
	cr_expect_eq(held_by(j, pid1), 7, "pid %d", pid1);
	cr_expect_eq(held_by(j, pid2), 4, "pid %d", pid2);
	cr_expect_eq(num(json_object_get(j, "unattributed"), "no_record"), 0);
	cr_expect_eq(num(json_object_get(j, "unattributed"), "record_too_old"), 0);
	cr_expect_eq(num(j, "records"), 11);
	json_decref(j);
	cr_assert_eq(lab_stop(srv, 5000), 0, "%s", lab_stderr(srv));
}

Test(tool_tw, two_processes_each_get_their_own_timewait_ipv4, .timeout = 60)
{
	two_processes_attributed("127.0.0.1:%d");
}

Test(tool_tw, two_processes_each_get_their_own_timewait_ipv6, .timeout = 60)
{
	two_processes_attributed("[::1]:%d");
}

/*
 * Sockets nobody recorded are "no record"; a record with the right 4-tuple
 * but too old for a socket still in TIME_WAIT is "record too old".
 */
Test(tool_tw, unattributed_sockets_say_why, .timeout = 60)
{
	struct lab_proc *srv, *c, *p;
	const char *log, *old, *addr;
	json_t *j, *list, *victim;
	struct timespec now;
	int pid;
	FILE *f;

	lab_enter(200);
	log = lab_path("recorded.jsonl");
	old = lab_path("old.jsonl");
	addr = lab_addr4(lab_port());
	srv = lab_start_server("server", NULL, lab_example("tw-server"), "--close", "last",
			       "-l", addr, NULL);
	c = lab_run("bare", NULL, 20000, lab_example("tw-client"), "-n", "3", "--close",
		    "first", addr, NULL);
	cr_assert_eq(lab_exit_code(c), 0, "%s", lab_stderr(c));
	cr_assert_eq(wait_tw(3), 3);

	/* one of the unrecorded sockets gets a record from two minutes ago */
	list = lab_tw_list();
	victim = json_array_get(list, 0);
	cr_assert(victim);
	clock_gettime(CLOCK_REALTIME, &now);
	f = fopen(old, "w");
	cr_assert(f);
	fprintf(f, "{\"ts\":%ld.000000,\"pid\":4242,\"comm\":\"ghost\",\"role\":\"client\","
		"\"local\":\"%s\",\"remote\":\"%s\",\"policy\":\"normal\","
		"\"state\":\"ESTABLISHED\","
		"\"end\":\"active\",\"tw\":\"local\",\"via\":\"close\",\"dur_ms\":1.000,"
		"\"bytes_acked\":1,\"bytes_received\":1,\"fd\":3}\n", (long)now.tv_sec - 120,
		json_string_value(json_object_get(victim, "local")),
		json_string_value(json_object_get(victim, "remote")));
	fclose(f);
	json_decref(list);

	pid = recorded_client("recorded", log, 2, addr);
	cr_assert_eq(wait_tw(5), 5);

	j = tw_json((const char *const[]){ log, old, NULL });
	cr_expect_eq(num(j, "timewait"), 5);
	cr_expect_eq(num(j, "attributed"), 2);
	cr_expect_eq(held_by(j, pid), 2);
	cr_expect_eq(num(json_object_get(j, "unattributed"), "no_record"), 2);
	cr_expect_eq(num(json_object_get(j, "unattributed"), "record_too_old"), 1);
	json_decref(j);

	/* the same for people */
	p = lab_spawn("tw-table", NULL, tool(), "tw", log, old, NULL);
	cr_assert_eq(lab_wait(p, 10000), 0, "%s", lab_stderr(p));
	cr_expect(strstr(lab_stdout(p), "attributed: 2"), "%s", lab_stdout(p));
	cr_expect(strstr(lab_stdout(p), "no record"), "%s", lab_stdout(p));
	cr_expect(strstr(lab_stdout(p), "record too old"), "%s", lab_stdout(p));
	cr_expect(strstr(lab_stdout(p), lab_fmt("tw-client  %d", pid)), "%s", lab_stdout(p));
	cr_assert_eq(lab_stop(srv, 5000), 0, "%s", lab_stderr(srv));
}

Test(tool_tw, without_records_counts_by_endpoint, .timeout = 60)
{
	struct lab_proc *srv, *c;
	json_t *j, *by_local, *by_remote, *e;
	const char *addr;
	size_t i;
	int port = lab_port();

	lab_enter(200);
	addr = lab_addr4(port);
	srv = lab_start_server("server", NULL, lab_example("tw-server"), "--close", "last",
			       "-l", addr, NULL);
	c = lab_run("bare", NULL, 20000, lab_example("tw-client"), "-n", "5", "--close",
		    "first", addr, NULL);
	cr_assert_eq(lab_exit_code(c), 0, "%s", lab_stderr(c));
	cr_assert_eq(wait_tw(5), 5);

	j = tw_json(NULL);
	cr_expect_eq(num(j, "timewait"), 5);
	by_remote = json_object_get(j, "by_remote");
	cr_assert_eq(json_array_size(by_remote), 1, "%s", json_dumps(j, 0));
	e = json_array_get(by_remote, 0);
	cr_expect_str_eq(json_string_value(json_object_get(e, "endpoint")), addr);
	cr_expect_eq(num(e, "timewait"), 5);
	by_local = json_object_get(j, "by_local");
	cr_expect_eq(json_array_size(by_local), 5, "one local port per connection");
	json_array_foreach(by_local, i, e)
		cr_expect_eq(num(e, "timewait"), 1);
	json_decref(j);
	cr_assert_eq(lab_stop(srv, 5000), 0, "%s", lab_stderr(srv));
}
