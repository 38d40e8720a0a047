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

/* Connection pairs inside one process: each close is an active or a passive one. */
static const char py_script[] =
"import socket, subprocess, sys, time\n"
"mode, n = sys.argv[1], int(sys.argv[2])\n"
"l = socket.socket(); l.bind(('127.0.0.1', 0)); l.listen(64)\n"
"for i in range(n if mode != 'defer' else 0):\n"
"    c = socket.create_connection(l.getsockname())\n"
"    s, _ = l.accept()\n"
"    c.sendall(b'q'); s.recv(1); s.sendall(b'a'); c.recv(1)\n"
"    if mode == 'vfork':\n"
"        # the child (vfork) closes every fd but 0-2 before its exec\n"
"        subprocess.run(['/bin/true'], check=True)\n"
"    s.close()\n"
"    while c.recv(1): pass\n"
"    c.close()\n"
"if mode == 'defer':\n"
"    # every server end closed (deferred until defer_ms), then each client end at its EOF\n"
"    pairs = []\n"
"    for i in range(n):\n"
"        c = socket.create_connection(l.getsockname())\n"
"        s, _ = l.accept()\n"
"        pairs.append((c, s))\n"
"    for c, s in pairs: s.close()\n"
"    for c, s in pairs:\n"
"        while c.recv(1): pass\n"
"        c.close()\n"
"print('done', flush=True)\n";

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

static const char *script(void)
{
	const char *p = lab_path("pairs.py");

	lab_write_file(p, py_script);
	return p;
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
		    "trace=getpid", "-o", trace, py, script(), "plain", lab_fmt("%d", PAIRS),
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
	p = lab_run("pairs", lab_traced(log, "close=normal"), RUN_MS, py, script(), "vfork", "5",
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
		    st, "-f", "-e", "trace=epoll_wait", "-o", trace, py, script(), "defer",
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
