// SPDX-License-Identifier: MIT
/*
 * What a process expects to keep to itself while the library holds
 * deferred connections: its address space under `ulimit -v`, its fd
 * numbers under a small RLIMIT_NOFILE, a single thread for
 * unshare(CLONE_NEWUSER), its CPU after it closed the library's fds by the
 * raw system call, its stderr when no thread may be started, and the cost
 * of fork + exec and of closefrom() in a child. Forking servers keep their
 * policy in the children, and a connection inherited across exec keeps its
 * role.
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "lab.h"

#define RUN_MS	60000

static const char *host(void)
{
	return lab_test_program("tw-runtime", RUN_MS);
}


static bool sanitized(void)
{
	const char *pre = getenv("TWSHIM_TEST_PRELOAD");

	return pre && *pre;
}

/* RLIMIT_NPROC reached: the closer cannot start; one line says so, not one per connection */
Test(runtime, no_thread_left_says_so_once, .timeout = 60)
{
	struct lab_proc *c;
	struct lab_opts o = { 0 };
	const char *env[3];

	if (sanitized())
		cr_skip_test("a sanitizer runtime cannot run its leak check with one process allowed");
	lab_enter(100);
	/*
	 * root is exempt from RLIMIT_NPROC: run as nobody, one process allowed.
	 * nobody must reach the program and the library wherever the build
	 * is: copies in the scratch directory, opened to others.
	 */
	cr_assert(chmod(lab_dir(), 0755) == 0, "chmod %s: %s", lab_dir(), strerror(errno));
	cr_assert(mkdir(lab_path("anyone"), 0755) == 0, "mkdir: %s", strerror(errno));
	cr_assert_eq(lab_exit_code(lab_run("cp", NULL, RUN_MS, "/bin/cp", host(),
					   lab_build_path("libtwshim.so"), lab_path("anyone"),
					   NULL)), 0);
	env[0] = lab_fmt("LD_PRELOAD=%s", lab_path("anyone/libtwshim.so"));
	env[1] = "TWSHIM_OPTIONS=log=stderr,close=defer,defer_ms=100";
	env[2] = NULL;
	o.env = env;
	c = lab_run("client", &o, RUN_MS, "/usr/bin/setpriv", "--reuid=65534", "--regid=65534",
		    "--clear-groups", "/usr/bin/prlimit", "--nproc=1", lab_path("anyone/tw-runtime"),
		    "connect", "20", NULL);
	cr_assert_eq(lab_exit_code(c), 0, "%s%s", lab_stdout(c), lab_stderr(c));
	cr_assert_eq(lab_value_long(lab_stdout(c), "ok"), 20);
	cr_assert_eq(lab_shim_lines(lab_stderr(c)), 1, "stderr:\n%s", lab_stderr(c));
	cr_assert_eq(lab_lines_with(lab_stderr(c), "\"why\":\"no_closer\""), 20, "stderr:\n%s",
		     lab_stderr(c));
}

/* closefrom(3) in a forked child walks what the library knows, not its whole fd table */
Test(runtime, closefrom_in_a_child_touches_no_table_pages, .timeout = 60)
{
	struct lab_proc *bare, *c;
	long f0, f1;

	/* AddressSanitizer's checks read the table's shadow pages: faults of its own */
	if (sanitized())
		cr_skip_test("a sanitizer runtime faults pages in for its own checks");
	lab_enter(100);
	bare = lab_run("bare", NULL, RUN_MS, host(), "closefrom", NULL);
	c = lab_run("client", lab_traced(lab_path("tw.jsonl"), "close=defer"), RUN_MS, host(),
		    "closefrom", NULL);
	cr_assert_eq(lab_exit_code(c), 0, "%s%s", lab_stdout(c), lab_stderr(c));
	f0 = lab_value_long(lab_stdout(bare), "faults");
	f1 = lab_value_long(lab_stdout(c), "faults");
	cr_assert_geq(f0, 0, "%s", lab_stdout(bare));
	/* the 4 MiB table is 1024 pages */
	cr_assert_leq(f1, f0 + 16, "closefrom faulted %ld pages in (%ld without the library)", f1,
		      f0);
}

/* ulimit -v 256M: a 220 MiB malloc succeeds with the library as without */
Test(runtime, address_space_limit_leaves_room_for_the_program, .timeout = 60)
{
	struct lab_proc *bare, *c;

	if (sanitized())
		cr_skip_test("a sanitizer runtime reserves terabytes of shadow memory");
	lab_enter(100);
	bare = lab_run("bare", NULL, RUN_MS, "/usr/bin/prlimit", "--as=268435456", host(),
		       "malloc", "220", NULL);
	cr_assert_eq(lab_value_long(lab_stdout(bare), "ok"), 1, "%s", lab_stdout(bare));
	c = lab_run("client", lab_traced(lab_path("tw.jsonl"), "close=defer"), RUN_MS,
		    "/usr/bin/prlimit", "--as=268435456", host(), "malloc", "220", NULL);
	cr_assert_eq(lab_exit_code(c), 0, "%s%s", lab_stdout(c), lab_stderr(c));
	cr_assert_eq(lab_value_long(lab_stdout(c), "ok"), 1, "the malloc failed with the library");
	lab_records_expect(lab_path("tw.jsonl"), 2, NULL);
}

/*
 * Runs the host program in mode under close=defer, then checks that it
 * exited 0 and that its two connections were deferred and ended by the
 * peer's FIN. Returns the program.
 */
static struct lab_proc *run_two_deferred(const char *mode)
{
	const char *log;
	struct lab_proc *c;
	json_t *recs;

	lab_enter(100);
	log = lab_path("tw.jsonl");
	c = lab_run("client", lab_traced(log, "close=defer,defer_ms=3000"), RUN_MS, host(), mode,
		    NULL);
	cr_assert_eq(lab_exit_code(c), 0, "%s%s", lab_stdout(c), lab_stderr(c));
	recs = lab_records_expect(log, 4, NULL);
	lab_rec_assert_count(recs, "role=client,policy=defer,end=passive,tw=peer,!timeout", 2);
	json_decref(recs);
	return c;
}

/*
 * The program closes the closer's epoll and eventfd by the raw system call:
 * the closer neither spins nor loses the next deferred connection.
 */
Test(runtime, raw_close_of_the_closer_fds_does_not_spin, .timeout = 60)
{
	struct lab_proc *c = run_two_deferred("closer-fds");

	cr_assert_eq(lab_value_long(lab_stdout(c), "closed"), 2, "%s", lab_stdout(c));
	/* a spinning thread takes the better part of the second */
	cr_assert_lt(lab_value_long(lab_stdout(c), "cpu_ms"), 150, "%s", lab_stdout(c));
}

/* unshare(CLONE_NEWUSER) needs a single-threaded process: the closer steps aside */
Test(runtime, unshare_newuser_succeeds_with_the_closer, .timeout = 60)
{
	struct lab_proc *c = run_two_deferred("unshare");

	cr_assert(strstr(lab_stdout(c), "unshare=0"), "%s", lab_stdout(c));
}

/*
 * unshare(CLONE_FILES) with a connection deferred: the closer steps aside,
 * the table stays the one the library's copy is in, and the copy's close at
 * the peer's FIN ends the connection. Made under the closer, the caller's
 * new table kept a copy of it: the peer read no end of the stream until
 * defer_ms passed (3 s), and the second connection was not seen by the closer.
 */
Test(runtime, unshare_files_with_a_deferred_connection, .timeout = 60)
{
	struct lab_proc *c = run_two_deferred("unshare-files");

	cr_assert(strstr(lab_stdout(c), "unshare=0"), "%s", lab_stdout(c));
	cr_assert_lt(lab_value_long(lab_stdout(c), "eof_ms"), 1000, "%s", lab_stdout(c));
}

/*
 * A child made by clone() without CLONE_VM or CLONE_FILES is a fork that
 * glibc runs no handler for: it must not keep the library's copy of a
 * deferred connection (the peer read its end of the stream only when the
 * child, which sleeps 1 s, exited), nor share the closer's epoll.
 */
Test(runtime, clone_child_keeps_no_deferred_connection_open, .timeout = 60)
{
	struct lab_proc *c = run_two_deferred("clone-child");

	cr_assert_lt(lab_value_long(lab_stdout(c), "eof_ms"), 500, "%s", lab_stdout(c));
	/* glibc refuses a clone() without fn: so does the wrapper, before any handler */
	cr_assert(strstr(lab_stdout(c), "clone_null=EINVAL"), "%s", lab_stdout(c));
}

/*
 * The same with counters on: the child's handler runs on the program's
 * 4 KiB stack, where making the child's stats file there (a 4 KiB path
 * buffer) overflowed it (SIGSEGV in the child, and the program failed).
 */
Test(runtime, clone_child_on_a_small_stack_with_counters, .timeout = 60)
{
	const char *dir;
	struct lab_proc *c;

	lab_enter(100);
	dir = lab_path("stats");
	cr_assert_eq(mkdir(dir, 0755), 0);
	c = lab_run("client", lab_traced(lab_path("tw.jsonl"),
					 lab_fmt("close=defer,defer_ms=3000,stats=%s", dir)),
		    RUN_MS, host(), "clone-child", NULL);
	cr_assert_eq(lab_exit_code(c), 0, "%s%s", lab_stdout(c), lab_stderr(c));
	cr_assert_lt(lab_value_long(lab_stdout(c), "eof_ms"), 500, "%s", lab_stdout(c));
}

/*
 * A signal handler that calls _exit() while its thread forks: the fork
 * handlers hold the closer's locks, which the exit takes. 40 children each
 * fork in a loop until an alarm 1 to 21 ms away ends them; before, about
 * one in four waited for ever on its own thread.
 */
Test(runtime, exit_in_a_handler_that_interrupts_a_fork, .timeout = 180)
{
	struct lab_proc *c;

	lab_enter(100);
	c = lab_run("client", lab_traced(lab_path("tw.jsonl"), "close=defer,defer_ms=3000"), RUN_MS,
		    host(), "fork-signal-exit", "40", NULL);
	cr_assert_eq(lab_exit_code(c), 0, "%s%s", lab_stdout(c), lab_stderr(c));
	cr_assert_eq(lab_value_long(lab_stdout(c), "hung"), 0, "%s", lab_stdout(c));
	cr_assert_eq(lab_value_long(lab_stdout(c), "exit3"), 40, "%s", lab_stdout(c));
}

/*
 * The main thread leaves with pthread_exit() and the program's last thread
 * ends: glibc ends the process then (exit(0), with its exit handlers). The
 * closer's thread, counted among the threads, found itself the last one
 * within a second; before, the process never ended, nor did SIGTERM end it.
 */
Test(runtime, main_thread_exit_then_the_last_thread_ends_the_process, .timeout = 60)
{
	struct lab_proc *c;

	lab_enter(100);
	/* killed after 10 s otherwise */
	c = lab_run("client", lab_traced(lab_path("tw.jsonl"), "close=defer,defer_ms=3000"), 10000,
		    host(), "main-exits", NULL);
	cr_assert_eq(lab_exit_code(c), 0, "exit %d: %s%s", lab_exit_code(c), lab_stdout(c),
		     lab_stderr(c));
	cr_assert_eq(lab_value_long(lab_stdout(c), "atexit"), 1, "%s", lab_stdout(c));
}

/* A forking server: the child that closes the connection defers it, as the parent would */
Test(runtime, forking_server_child_defers, .timeout = 60)
{
	const char *log;
	struct lab_proc *c;
	json_t *recs;

	lab_enter(100);
	log = lab_path("tw.jsonl");
	c = lab_run("server", lab_traced(log, "close=defer,defer_ms=3000"), RUN_MS, host(),
		    "fork-server", NULL);
	cr_assert_eq(lab_exit_code(c), 0, "%s%s", lab_stdout(c), lab_stderr(c));
	recs = lab_records_wait(log, "role=server", 1, 5000);
	lab_rec_assert_count(recs, "role=server,policy=defer,end=passive,tw=peer,!why", 1);
	json_decref(recs);
}

/*
 * fork + exec with 2 x 300 close-on-exec connections: the holders of each
 * are found from one read of the parent's fds, not one read a connection.
 */
Test(runtime, exec_reads_the_parent_fds_once, .timeout = 120)
{
	const char *trace, *text;
	struct lab_proc *c;
	size_t n;

	if (sanitized())
		cr_skip_test("a sanitizer runtime cannot run its leak check under strace");
	lab_enter(1000);
	if (access("/usr/bin/strace", X_OK) != 0)
		cr_skip_test("strace is not installed");
	trace = lab_path("strace.txt");
	c = lab_run("server", lab_traced(lab_path("tw.jsonl"), "close=defer"), RUN_MS,
		    "/usr/bin/strace", "-f", "-qq", "-e", "trace=openat", "-o", trace, host(),
		    "fork-exec", "300", NULL);
	cr_assert_eq(lab_exit_code(c), 0, "%s%s", lab_stdout(c), lab_stderr(c));
	cr_assert_eq(lab_value_long(lab_stdout(c), "status"), 0, "%s%s", lab_stdout(c),
		     lab_stderr(c));
	text = lab_read_file(trace);
	n = lab_lines_with(text, "/fd\"");
	cr_assert_leq(n, 8, "%zu opens of a /proc/PID/fd directory", n);
}

/* An inherited client connection whose server port is in the ephemeral range is a client */
Test(runtime, adopted_client_keeps_its_role, .timeout = 60)
{
	const char *log;
	struct lab_proc *c;
	json_t *recs;

	lab_enter(100);
	log = lab_path("tw.jsonl");
	c = lab_run("client", lab_traced(log, NULL), RUN_MS, host(), "exec-client", NULL);
	cr_assert_eq(lab_exit_code(c), 0, "%s%s", lab_stdout(c), lab_stderr(c));
	/* the parent's close of its copy leaves the connection to the child: no record */
	recs = lab_records_wait(log, "comm=tw-runtime", 2, 5000);
	lab_rec_assert_count(recs, "role=client", 1);
	lab_rec_assert_count(recs, "role=server", 1);
	json_decref(recs);
}

/*
 * Opens N connections, closes the clients' ends (deferred), then opens files
 * until EMFILE, under prlimit's limit: as many with the library as without.
 */
static void assert_same_fds(const char *limit, const char *conns)
{
	struct lab_proc *bare, *c;
	long n0, n1;

	bare = lab_run("bare", NULL, RUN_MS, "/usr/bin/prlimit", limit, host(), "fds", conns,
		       NULL);
	c = lab_run("client", lab_traced(lab_path("tw.jsonl"), "close=defer,defer_ms=200"),
		    RUN_MS, "/usr/bin/prlimit", limit, host(), "fds", conns, NULL);
	cr_assert_eq(lab_exit_code(c), 0, "%s%s", lab_stdout(c), lab_stderr(c));
	n0 = lab_value_long(lab_stdout(bare), "opened");
	n1 = lab_value_long(lab_stdout(c), "opened");
	cr_assert_gt(n0, 0, "%s", lab_stdout(bare));
	cr_assert_eq(n1, n0, "%s: the program opened %ld files with the library, %ld without",
		     limit, n1, n0);
}

/*
 * No room above the soft limit: the copies go to its upper half, and the
 * limit found there is not asked again for each one. A limit lowered by
 * the raw system call in between (no wrapper sees it) still takes the
 * next copy below it: both connections are deferred.
 */
Test(runtime, nofile_lowered_behind_the_library_still_defers, .timeout = 60)
{
	const char *log;
	struct lab_proc *c;
	json_t *recs;
	long first, second;

	lab_enter(100);
	log = lab_path("tw.jsonl");
	c = lab_run("client", lab_traced(log, "close=defer,defer_ms=2000"), RUN_MS, host(),
		    "nofile-lowered", NULL);
	cr_assert_eq(lab_exit_code(c), 0, "%s%s", lab_stdout(c), lab_stderr(c));
	/* each copy in the upper half of the limit of its moment */
	first = lab_value_long(lab_stdout(c), "first");
	second = lab_value_long(lab_stdout(c), "second");
	cr_assert(first >= 2048 && first < 4096, "%s", lab_stdout(c));
	cr_assert(second >= 1024 && second < 2048, "%s", lab_stdout(c));
	recs = lab_records_wait(log, "role=client", 2, 5000);
	lab_rec_assert_count(recs, "role=client,policy=defer,!why", 2);
	json_decref(recs);
}

/* RLIMIT_NOFILE 8: the log and the closer's fds take none of the program's numbers */
Test(runtime, tiny_fd_limit_leaves_the_program_its_fds, .timeout = 60)
{
	if (sanitized())
		cr_skip_test("a sanitizer runtime does not start with a handful of fds");
	lab_enter(100);
	/* room above the soft limit: the library's fds go there */
	assert_same_fds("--nofile=8:64", "0");
	/* none (soft = hard): the library keeps no fd, and says so */
	assert_same_fds("--nofile=8", "0");
}

/*
 * RLIMIT_NOFILE 200: 60 deferred connections take none of the program's
 * numbers. 200 ports: the run without the library leaves 60 in TIME_WAIT,
 * and the second run's listener may get the same port again.
 */
Test(runtime, deferred_connections_take_no_fd_of_the_program, .timeout = 60)
{
	const char *log;
	json_t *recs;

	lab_enter(200);
	log = lab_path("tw.jsonl");
	assert_same_fds("--nofile=200:4096", "60");
	recs = lab_records_wait(log, "role=client", 60, 5000);
	lab_rec_assert_count(recs, "role=client,policy=defer,!why", 60);
	json_decref(recs);
}

/*
 * Every fd taken (RLIMIT_NOFILE 1024, soft = hard: the library's fds are in
 * its upper half), the program dup2s a data file onto the closer's eventfd:
 * nothing of the library's lands in the file, both deferred connections end
 * and are recorded, and the program exits.
 */
Test(runtime, dup2_onto_the_closer_eventfd_with_no_fd_left, .timeout = 60)
{
	const char *log, *data;
	struct lab_proc *c;
	json_t *recs;

	lab_enter(100);
	log = lab_path("tw.jsonl");
	data = lab_path("data");
	lab_write_file(data, "data\n");
	c = lab_run("client", lab_traced(log, "close=defer,defer_ms=3000,exit_wait_ms=3000"),
		    RUN_MS, "/usr/bin/prlimit", "--nofile=1024", host(), "dup2-eventfd", data, NULL);
	cr_assert_eq(lab_exit_code(c), 0, "%s%s", lab_stdout(c), lab_stderr(c));
	cr_assert_eq(lab_value_long(lab_stdout(c), "size"), 5, "the file: %s",
		     lab_read_file(data));
	recs = lab_records_expect(log, 4, NULL);
	lab_rec_assert_count(recs, "role=client,policy=defer", 2);
	json_decref(recs);
}
