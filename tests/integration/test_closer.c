// SPDX-License-Identifier: MIT
/*
 * The deferred closer while the program keeps closing: the peers' FINs are
 * settled many at a time (the thread naps, the program's closes settle what
 * is ready) and none waits long, also after the program went quiet, also
 * when a close in a signal handler comes in the middle of it.
 */
#include <criterion/criterion.h>
#include <dirent.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "lab.h"
#include "record.h"

#define RUN_MS		60000
#define CONNS		500	/* a client thread's connections */
#define THREADS		4
#define BUSY_CONNS	2000	/* one after the other */

/* every TCP state in which a connection is still open on either side */
#define OPEN_STATES	((1u << TW_ESTABLISHED) | (1u << TW_CLOSE_WAIT) | (1u << TW_FIN_WAIT1) | \
			 (1u << TW_FIN_WAIT2) | (1u << TW_CLOSING) | (1u << TW_LAST_ACK))

static long mono_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1000L + ts.tv_nsec / 1000000;
}

/*
 * How often pid's threads besides its main one went to sleep (voluntary
 * context switches): in a server with one thread of its own, the library's
 * closer, and a sanitizer's background thread if there is one (it sleeps
 * about ten times a second).
 */
static long closer_sleeps(int pid)
{
	char path[64];
	struct dirent *e;
	long n = 0;
	int threads = 0;
	DIR *d;

	snprintf(path, sizeof(path), "/proc/%d/task", pid);
	d = opendir(path);
	cr_assert(d, "%s", path);
	while ((e = readdir(d))) {
		char *st, *v;

		if (e->d_name[0] == '.' || atoi(e->d_name) == pid)
			continue;
		st = lab_read_file(lab_fmt("/proc/%d/task/%s/status", pid, e->d_name));
		v = strstr(st, "\nvoluntary_ctxt_switches:");
		cr_assert(v, "no voluntary_ctxt_switches in %s", st);
		n += atol(v + strlen("\nvoluntary_ctxt_switches:"));
		threads++;
		free(st);
	}
	closedir(d);
	cr_assert_gt(threads, 0, "server %d: no closer thread", pid);
	return n;
}

/*
 * A server that closes first, under defer, while its client closes right
 * after each reply: each peer's FIN comes while the server goes on closing
 * others. Every connection ends passive (the TIME_WAIT on the client's
 * side, none left open on either), and the closer sleeps and wakes far
 * less than once a connection: at most once a millisecond while the server
 * keeps closing, besides a quarter of the connections for the wake-ups of
 * a quiet spell (before: about once each).
 */
Test(closer, busy_server_settles_fins_many_at_a_time, .timeout = 120)
{
	const char *log;
	struct lab_proc *srv, *cli;
	long n = BUSY_CONNS, sleeps, ms;

	lab_enter(2 * BUSY_CONNS);
	log = lab_path("server.jsonl");
	srv = lab_start_server("server", lab_traced(log, "close=defer,defer_ms=30000"),
			       lab_example("tw-server"), "--threads", "1", "-l",
			       lab_addr4(lab_port()), NULL);
	ms = mono_ms();
	cli = lab_run("client", NULL, RUN_MS, lab_example("tw-client"), "-n",
		      lab_fmt("%ld", n), lab_addr4(srv->port), NULL);
	ms = mono_ms() - ms;
	lab_assert_ok(cli, n);
	json_decref(lab_records_wait_expect(log, (size_t)n, "policy=defer,end=passive,tw=peer,"
					    "!timeout,!why", RUN_MS));
	cr_assert_eq(lab_tcp_count(OPEN_STATES), 0, "connections still open");
	lab_assert_tw(srv->port, n, 0);
	sleeps = closer_sleeps(srv->pid);
	cr_assert_lt(sleeps, n / 4 + ms, "the closer slept %ld times for %ld connections in %ld ms",
		     sleeps, n, ms);
	lab_stop(srv, 5000);
}

/*
 * The server goes quiet right after its last deferred close: the peers'
 * FINs that come after it are still answered by the real close at once
 * (the client waits for that EOF, each read bounded by 200 ms; the
 * closer's own bound is 1 ms, the rest is room for a loaded machine).
 */
Test(closer, quiet_server_still_ends_each_at_once, .timeout = 120)
{
	const char *log;
	struct lab_proc *srv, *cli;
	long n = (long)CONNS * THREADS;

	lab_enter(2 * CONNS * THREADS);
	log = lab_path("server.jsonl");
	srv = lab_start_server("server", lab_traced(log, "close=defer,defer_ms=30000"),
			       lab_example("tw-server"), "--threads", "1", "-l",
			       lab_addr4(lab_port()), NULL);
	/* a busy round, then one connection at a time, 20 ms apart: each after a quiet spell */
	cli = lab_run("busy", NULL, RUN_MS, lab_example("tw-client"), "--threads",
		      lab_fmt("%d", THREADS), "-n", lab_fmt("%d", CONNS), "--close", "shutdown",
		      "--timeout", "200", lab_addr4(srv->port), NULL);
	lab_assert_ok(cli, n);
	cli = lab_run("paced", NULL, RUN_MS, lab_example("tw-client"), "-n", "20",
		      "--interval-ms", "20", "--close", "shutdown", "--timeout", "200",
		      lab_addr4(srv->port), NULL);
	lab_assert_ok(cli, 20);
	json_decref(lab_records_wait_expect(log, (size_t)n + 20, "policy=defer,end=passive,"
					    "tw=peer,!timeout,!why", RUN_MS));
	cr_assert_eq(lab_tcp_count(OPEN_STATES), 0, "connections still open");
	lab_stop(srv, 5000);
}

/*
 * A program closes the server ends of connections to itself under defer,
 * each peer's FIN following at once, while a signal every 50 us closes
 * another server end in its handler: a close that may come while the
 * interrupted close is settling what is ready, with the closer's lock held.
 * Nothing waits on that lock, no close fails or changes errno, and every
 * connection ends once, passive on the server's side.
 */
Test(closer, close_in_a_signal_handler_while_closes_settle, .timeout = 120)
{
	const long n = 3000;
	const char *log, *conf, *out;
	struct lab_proc *p;
	json_t *recs;

	lab_enter(2 * 3000);
	log = lab_path("self.jsonl");
	conf = lab_path("server-defers.conf");
	lab_write_file(conf, lab_fmt("log = \"%s\";\ndefer_ms = 30000;\n"
				     "rules = ( { role = \"server\"; close = \"defer\"; } );\n", log));
	p = lab_run("self", lab_configured(conf), RUN_MS, lab_test_program("tw-stress", RUN_MS),
		    "handler-close", "-n", lab_fmt("%ld", n), "--signal-us", "50",
		    lab_addr4(lab_port()), NULL);
	out = lab_stdout(p);
	cr_assert_eq(lab_exit_code(p), 0, "program: %s%s", out, lab_stderr(p));
	cr_assert_eq(lab_value_long(out, "ok"), n, "program: %s", out);
	cr_assert_eq(lab_value_long(out, "close_fail"), 0, "close() failed: %s", out);
	cr_assert_eq(lab_value_long(out, "errno_changed"), 0, "a close changed errno: %s", out);
	cr_assert_gt(lab_value_long(out, "handler_closes"), 10, "too few closes in the handler: %s",
		     out);
	recs = lab_records_wait_expect(log, (size_t)(2 * n), NULL, RUN_MS);
	lab_rec_assert_count(recs, "role=server,policy=defer,end=passive,tw=peer,!timeout,!why",
			     (size_t)n);
	/* the clients' ends are the normal close path's (FINs may cross): not judged here */
	lab_rec_assert_count(recs, "role=client,policy=normal", (size_t)n);
	cr_assert_eq(lab_tcp_count(OPEN_STATES), 0, "connections still open");
	json_decref(recs);
}

/*
 * A signal handler that ends the process (_exit) arrives while the program's
 * close settles deferred connections under the closer's lock: the signal
 * waits until the lock is let go, and the process ends. A preloaded helper
 * (tests/programs/lib/tw-signal-in-ppoll.c) raises the signal inside that
 * very section; before, the handler's _exit waited for ever on the lock its
 * own thread held.
 */
Test(closer, exit_in_a_handler_that_interrupts_a_settling_close, .timeout = 120)
{
	const char *src = lab_source_dir(), *shim, *conf, *lib, *first;
	const char *env[2] = { NULL, NULL };
	struct lab_opts *o = calloc(1, sizeof(*o));
	char real[PATH_MAX];
	struct lab_proc *p;

	if (!src)
		cr_skip_test("no source tree here to build tests/programs/lib/tw-signal-in-ppoll.c");
	lab_enter(2 * 5000);
	shim = lab_path("tw-signal-in-ppoll.so");
	p = lab_run("cc-lib", NULL, RUN_MS, "/bin/sh", "-c",
		    lab_fmt("exec ${CC:-cc} -shared -fPIC -O2 -o '%s' "
			    "'%s/tests/programs/lib/tw-signal-in-ppoll.c' -ldl", shim, src), NULL);
	cr_assert_eq(lab_exit_code(p), 0, "building tw-signal-in-ppoll.so: %s", lab_stderr(p));
	conf = lab_path("server-defers.conf");
	lab_write_file(conf, "defer_ms = 30000;\n"
			     "rules = ( { role = \"server\"; close = \"defer\"; } );\n");
	lib = lab_build_path("libtwshim.so");
	cr_assert(realpath(lib, real), "%s", lib);
	first = getenv("TWSHIM_TEST_PRELOAD");
	env[0] = first && *first ? lab_fmt("LD_PRELOAD=%s:%s:%s", first, real, shim)
				 : lab_fmt("LD_PRELOAD=%s:%s", real, shim);
	o->config = conf;
	o->env = env;
	p = lab_run("self", o, 60000, lab_test_program("tw-stress", 60000), "handler-exit",
		    "-n", "5000", lab_addr4(lab_port()), NULL);
	cr_assert_eq(lab_exit_code(p), 0,
		     "the handler's _exit did not end the program (exit %d; 3: no signal came): "
		     "%s%s", lab_exit_code(p), lab_stdout(p), lab_stderr(p));
}
