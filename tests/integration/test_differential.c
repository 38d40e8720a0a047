// SPDX-License-Identifier: MIT
/*
 * The differential harness: each scenario of tests/programs/tw-scenario.c
 * runs without the library and then under one close policy (with records
 * written to a file), each run in a network namespace of its own, and the
 * two transcripts (every call's result and errno, the bytes each side got,
 * how and how soon each stream ended) must be the same line for line, but
 * for the differences in the table below. Each of those is listed, with its
 * reason, in the README's Limits. The *_bare tests run the scenario twice
 * without the library: they show that the transcript does not depend on
 * timing.
 */
#include <criterion/criterion.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "lab.h"

#define DEFER_MS	1000
#define RUN_MS		120000

/*
 * What a policy may change in what the peer sees. A line of the run without
 * the library that holds `in` and `from` may, under `policy`, read with
 * `from` replaced by `to`; nothing else may differ.
 */
struct allowed {
	const char *policy;
	const char *in;
	const char *from, *to;
	const char *why;
};

static const struct allowed allowed[] = {
	{ "abort", "peer: ", ", EOF, ", ", ECONNRESET, ",
	  "abort ends the connection with a reset where a close sends a FIN" },
	{ "abort", "peer: ", ": EPIPE, ", ": ECONNRESET, ",
	  "the same reset, seen by a write after the program's close" },
	{ "defer", "to the end after program", ", EOF, now", ", EOF, late",
	  "defer holds the FIN until the peer's own: a peer that reads to the end before it "
	  "closes gets the end only after defer_ms" },
};

/* The shared library that the scenario exit_handler_in_library loads. */
static const char *exit_lib(const char *scenario)
{
	const char *src = lab_source_dir(), *out = lab_path("tw-exit-writer.so");
	struct lab_proc *p;

	if (strcmp(scenario, "exit_handler_in_library"))
		return "";
	if (!src)
		cr_skip_test("no source tree here to build tests/programs/lib/tw-exit-writer.c");
	p = lab_run("cc-lib", NULL, RUN_MS, "/bin/sh", "-c",
		    lab_fmt("exec ${CC:-cc} -shared -fPIC -O2 -o '%s' "
			    "'%s/tests/programs/lib/tw-exit-writer.c'", out, src), NULL);
	cr_assert_eq(lab_exit_code(p), 0, "building tw-exit-writer.so: %s", lab_stderr(p));
	return out;
}

/*
 * Runs the scenario once, without the library (policy NULL) or under
 * close=POLICY, and returns its transcript.
 */
static char *run(const char *scenario, const char *lib, const char *policy, const char *name)
{
	const struct lab_opts *o = NULL;
	const char *log = lab_path(lab_fmt("%s.jsonl", name));
	struct lab_proc *p;

	if (policy)
		o = lab_traced(log, lab_fmt("close=%s,defer_ms=%d", policy, DEFER_MS));
	p = lab_run(name, o, RUN_MS, lab_test_program("tw-scenario", RUN_MS), "--netns",
		    "--defer-ms", lab_fmt("%d", DEFER_MS), "--exit-lib", lib, scenario, NULL);
	cr_assert_eq(lab_exit_code(p), 0, "%s %s: exit %d\n%s%s", scenario, name, lab_exit_code(p),
		     lab_stdout(p), lab_stderr(p));
	if (policy)
		json_decref(lab_records_checked(log));
	return lab_stdout(p);
}

/* The next line of *text (its newline dropped), or NULL at the end. */
static char *next_line(char **text)
{
	char *l = *text, *nl;

	if (!l || !*l)
		return NULL;
	nl = strchr(l, '\n');
	if (nl) {
		*nl = 0;
		*text = nl + 1;
	} else {
		*text = NULL;
	}
	return l;
}

/* Does a rule of the table turn the line without the library into got? */
static bool is_allowed(const char *policy, const char *want, const char *got)
{
	for (size_t i = 0; i < sizeof(allowed) / sizeof(allowed[0]); i++) {
		const struct allowed *a = &allowed[i];
		const char *at;
		char buf[1024];

		if (!policy || strcmp(a->policy, policy) || !strstr(want, a->in) ||
		    !(at = strstr(want, a->from)))
			continue;
		snprintf(buf, sizeof(buf), "%.*s%s%s", (int)(at - want), want, a->to,
			 at + strlen(a->from));
		if (!strcmp(buf, got))
			return true;
	}
	return false;
}

/*
 * The scenario without the library, then under close=policy (NULL: without
 * the library again); fails with every line that differs beyond the table.
 */
static void differ(const char *scenario, const char *policy)
{
	const char *lib, *name = policy ? lab_fmt("close=%s", policy) : "again without library";
	char *want, *got, *w, *g, *wl, *gl;
	char diffs[8192] = "";
	size_t n = 0, len = 0;

	lab_enter(100);
	lib = exit_lib(scenario);
	want = run(scenario, lib, NULL, "bare");
	got = run(scenario, lib, policy, policy ? policy : "bare-again");
	w = strdup(want);
	g = strdup(got);
	for (;;) {
		wl = next_line(&w);
		gl = next_line(&g);
		if (!wl && !gl)
			break;
		if (wl && gl && (!strcmp(wl, gl) || is_allowed(policy, wl, gl)))
			continue;
		n++;
		if (len < sizeof(diffs) - 1)
			len += (size_t)snprintf(diffs + len, sizeof(diffs) - len,
						"  without library: %s\n  %-15s: %s\n",
						wl ? wl : "(nothing)", name, gl ? gl : "(nothing)");
	}
	cr_assert_eq(n, 0, "%s: %zu lines differ under %s:\n%s\nwithout library:\n%s\n%s:\n%s",
		     scenario, n, name, diffs, want, name, got);
}

/* Each scenario: again without the library, then under each policy. */
#define SCENARIO(s)								\
	Test(differential, s##_bare, .timeout = 180) { differ(#s, NULL); }	\
	Test(differential, s##_normal, .timeout = 180) { differ(#s, "normal"); }	\
	Test(differential, s##_defer, .timeout = 180) { differ(#s, "defer"); }	\
	Test(differential, s##_abort, .timeout = 180) { differ(#s, "abort"); }

SCENARIO(client_closes_first)
SCENARIO(server_closes_first)
SCENARIO(unread_at_close_client)
SCENARIO(unread_at_close_server)
SCENARIO(data_after_close_client)
SCENARIO(data_after_close_server)
SCENARIO(half_close_program)
SCENARIO(half_close_peer)
SCENARIO(peer_reset)
SCENARIO(large_write_before_close)
SCENARIO(slow_reader)
SCENARIO(linger_zero)
SCENARIO(linger_on)
SCENARIO(nonblocking_close_queued)
SCENARIO(spawn_posix_spawn)
SCENARIO(spawn_vfork)
SCENARIO(spawn_system)
SCENARIO(exit_while_thread_writes)
SCENARIO(atexit_writes)
SCENARIO(exit_handler_in_library)
SCENARIO(both_client_closes_first)
SCENARIO(both_server_closes_first)
SCENARIO(no_tcp_fds)
