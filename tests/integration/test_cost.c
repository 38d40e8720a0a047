// SPDX-License-Identifier: MIT
/*
 * What a tracked connection costs the program in system calls, counted by
 * strace, and the records those savings must not change.
 */
#include <criterion/criterion.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "lab.h"

#define RUN_MS	30000
#define PAIRS	40

static const char *need(const char *path)
{
	if (access(path, X_OK) != 0)
		cr_skip_test("%s is not installed", path);
	return path;
}

/* strace counts are the library's only without a sanitizer runtime preloaded first */
static void need_no_sanitizer(void)
{
	const char *first = getenv("TWSHIM_TEST_PRELOAD");

	if (first && *first)
		cr_skip_test("TWSHIM_TEST_PRELOAD is set: a sanitizer runtime makes system calls "
			     "of its own");
}

/* The lab of a test that runs the pairs script under strace: its paths. */
static void traced_pairs(const char **py, const char **st, const char **log, const char **trace)
{
	need_no_sanitizer();
	lab_enter(200);
	*py = need("/usr/bin/python3");
	*st = need("/usr/bin/strace");
	*log = lab_path("pairs.jsonl");
	*trace = lab_path("strace.out");
}

/* lines of an strace -o file that call name ("getpid(", "epoll_wait(") */
static long calls(const char *path, const char *name)
{
	char *t = lab_read_file(path), *s = t;
	long n = 0;

	cr_assert(t, "no strace output at %s", path);
	while ((s = strstr(s, name))) {
		n++;
		s++;
	}
	free(t);
	return n;
}

/*
 * Both ends of every connection recorded, and not one getpid() a close:
 * only start-up and exit ask (a few in all, whatever the count).
 */
Test(cost, no_getpid_per_close, .timeout = 90)
{
	const char *py, *st, *log, *trace;
	struct lab_proc *p;

	traced_pairs(&py, &st, &log, &trace);
	p = lab_run("pairs", lab_traced(log, "close=normal"), RUN_MS, st, "-f", "-e",
		    "trace=getpid", "-o", trace, py, lab_pairs_script(), "plain", lab_fmt("%d", PAIRS),
		    NULL);
	cr_assert_eq(lab_exit_code(p), 0, "%s%s", lab_stdout(p), lab_stderr(p));
	lab_records_expect(log, 2 * PAIRS, "via=close");
	cr_assert_lt(calls(trace, "getpid("), 10, "getpid() calls for %d connection pairs", PAIRS);
}

/*
 * A vfork() child (Python's subprocess makes one) closes the program's
 * connections before its exec: they stay the parent's, and each is recorded
 * once, at the parent's close.
 */
Test(cost, vfork_child_closing_connections_leaves_them_to_the_parent, .timeout = 90)
{
	const char *py, *log;
	struct lab_proc *p;
	json_t *recs;

	lab_enter(200);
	py = need("/usr/bin/python3");
	log = lab_path("pairs.jsonl");
	p = lab_run("pairs", lab_traced(log, "close=normal"), RUN_MS, py, lab_pairs_script(), "vfork", "5",
		    NULL);
	cr_assert_eq(lab_exit_code(p), 0, "%s%s", lab_stdout(p), lab_stderr(p));
	recs = lab_records_expect(log, 10, "via=close");
	lab_rec_assert_count(recs, lab_fmt("pid=%d,role=server,end=active", (int)p->pid), 5);
	lab_rec_assert_count(recs, lab_fmt("pid=%d,role=client,end=passive", (int)p->pid), 5);
	json_decref(recs);
}

/*
 * The closer is not woken for each connection handed to it: the program's
 * close puts it into the closer's epoll set, and only a FIN or a deadline
 * wakes the thread. Here the deadlines come all at once: a few wake-ups for
 * all, and every end recorded as it happened.
 */
Test(cost, closer_wakes_for_fins_not_for_each_handover, .timeout = 90)
{
	const char *py, *st, *log, *trace;
	struct lab_proc *p;
	json_t *recs;
	long waits;

	traced_pairs(&py, &st, &log, &trace);
	p = lab_run("pairs", lab_traced(log, "close=defer,defer_ms=500"), RUN_MS,
		    st, "-f", "-e", "trace=epoll_wait", "-o", trace, py, lab_pairs_script(), "defer",
		    lab_fmt("%d", PAIRS), NULL);
	cr_assert_eq(lab_exit_code(p), 0, "%s%s", lab_stdout(p), lab_stderr(p));
	recs = lab_records_expect(log, 2 * PAIRS, NULL);
	lab_rec_assert_count(recs, "role=server,policy=defer,end=active,timeout=true", PAIRS);
	lab_rec_assert_count(recs, "role=client,end=passive", PAIRS);
	json_decref(recs);
	waits = calls(trace, "epoll_wait(");
	cr_assert_lt(waits, PAIRS / 2, "the closer woke %ld times for %d connections", waits,
		     PAIRS);
}

/*
 * A program that set the owner of another file (a pipe here; nginx's
 * channel to its master) pays no fcntl(F_GETFL) a deferral for O_ASYNC
 * on sockets that never had an owner.
 */
Test(cost, owner_of_a_pipe_costs_deferrals_nothing, .timeout = 90)
{
	const char *py, *st, *log, *trace;
	struct lab_proc *p;

	traced_pairs(&py, &st, &log, &trace);
	p = lab_run("pairs", lab_traced(log, "close=defer,defer_ms=500"), RUN_MS,
		    st, "-f", "-e", "trace=fcntl", "-o", trace, py, lab_pairs_script(), "defer-owner",
		    lab_fmt("%d", PAIRS), NULL);
	cr_assert_eq(lab_exit_code(p), 0, "%s%s", lab_stdout(p), lab_stderr(p));
	lab_records_expect(log, 2 * PAIRS, NULL);
	cr_assert_eq(calls(trace, "F_SETOWN"), 1, "the program's own F_SETOWN");
	cr_assert_lt(calls(trace, "F_GETFL"), 5, "F_GETFL calls for %d deferrals", PAIRS);
}

/* A tw-server on a fresh port of a fresh lab, writing its records to slog. */
static struct lab_proc *tw_server(const char *slog, const char *addr, int n, const char *close_mode,
				  const char *delay_ms)
{
	return lab_start_server("server", lab_traced(slog, NULL), lab_example("tw-server"), "-l",
				addr, "-n", lab_fmt("%d", n), "--close", close_mode,
				"--close-delay", delay_ms, NULL);
}

/*
 * A single-threaded program whose end closes first: its FIN goes by the
 * library's shutdown just before the close, and the state it leaves says
 * who was first. Not one question to sock_diag (strace would show each as a
 * sendto of SOCK_DIAG_BY_FAMILY), and the records still equal the TIME_WAIT
 * sockets the kernel holds. (Both ends in one process: the peer's FIN
 * cannot come between the shutdown and the state read after it, which
 * would need the question.)
 */
Test(cost, single_threaded_active_close_asks_sock_diag_nothing, .timeout = 90)
{
	const char *py, *st, *log, *trace;
	struct lab_proc *p;
	json_t *recs;
	long tw;

	traced_pairs(&py, &st, &log, &trace);
	p = lab_run("pairs", lab_traced(log, "close=normal"), RUN_MS, st, "-f", "--seccomp-bpf",
		    "-e", "trace=sendto,shutdown", "-o", trace, py, lab_pairs_script(), "client",
		    lab_fmt("%d", PAIRS), NULL);
	cr_assert_eq(lab_exit_code(p), 0, "%s%s", lab_stdout(p), lab_stderr(p));
	recs = lab_records_expect(log, 2 * PAIRS, "via=close");
	/* the counters as TCP_INFO had them at the close: the peer's FIN is not one */
	lab_rec_assert_count(recs, "role=client,state=ESTABLISHED,end=active,tw=local,"
			     "bytes_acked=2,bytes_received=1", PAIRS);
	lab_rec_assert_count(recs, "role=server,state=CLOSE_WAIT,end=passive,tw=peer,"
			     "bytes_acked=1,bytes_received=2", PAIRS);
	json_decref(recs);
	tw = lab_tw_total();
	cr_assert_eq(tw, PAIRS, "TIME_WAIT sockets, as the kernel counts them: %ld", tw);
	cr_assert_eq(calls(trace, "SOCK_DIAG_BY_FAMILY"), 0, "questions to sock_diag");
	cr_assert_eq(calls(trace, "shutdown("), PAIRS, "the library's shutdown calls");
}

/*
 * The peer's FIN arrives between the library's peek and its shutdown (strace
 * holds each shutdown back 300 ms; the server closes 50 ms after its
 * reply): the client's FIN meets CLOSE_WAIT, and the end is passive, with
 * the TIME_WAIT on the server's side, as the kernel counts it.
 */
Test(cost, fin_crossing_the_shutdown_is_recorded_passive, .timeout = 90)
{
	const char *st, *log, *slog, *trace, *addr;
	struct lab_proc *s, *c;
	const int n = 5;
	int port;

	need_no_sanitizer();
	lab_enter(1000);
	st = need("/usr/bin/strace");
	log = lab_path("client.jsonl");
	slog = lab_path("server.jsonl");
	trace = lab_path("strace.out");
	port = lab_port();
	addr = lab_addr4(port);
	s = tw_server(slog, addr, n, "first", "50");
	c = lab_run("client", lab_traced(log, NULL), RUN_MS, st, "-f", "-e", "trace=shutdown",
		    "-e", "inject=shutdown:delay_enter=300000", "-o", trace,
		    lab_example("tw-client"), "-n", lab_fmt("%d", n), "--close", "first", addr,
		    NULL);
	cr_assert_eq(lab_exit_code(c), 0, "%s%s", lab_stdout(c), lab_stderr(c));
	lab_assert_ok(c, n);
	cr_assert_neq(lab_wait(s, 10000), -1, "server did not finish");
	cr_assert_eq(calls(trace, "shutdown("), n, "shutdown calls");
	json_decref(lab_records_expect(log, n, "role=client,state=CLOSE_WAIT,end=passive,tw=peer,"
					"bytes_received=65"));
	json_decref(lab_records_expect(slog, n, "role=server,end=active,tw=local"));
	lab_assert_tw(port, 0, n);
}
