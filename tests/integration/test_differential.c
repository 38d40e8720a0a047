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
	const char *policy;	/* close=policy, or fallback=policy under defer */
	const char *in;
	const char *from, *to;
	const char *why;
};

static const struct allowed allowed[] = {
	{ "defer", "to the end after program", ", EOF, now", ", EOF, late",
	  "defer holds the FIN until the peer's own: a peer that reads to the end before it "
	  "closes gets the end only after defer_ms" },
	{ "defer", "send a byte every 10 ms after program close", ": EPIPE, ", ": ECONNRESET, ",
	  "the program's FIN is held back, so the reset that meets the peer's data finds the "
	  "connection open (ECONNRESET) where, after a FIN, it finds it half-closed (EPIPE)" },
	{ "abort", "peer: ", ", EOF, ", ", ECONNRESET, ",
	  "abort ends the connection with a reset where a close sends a FIN" },
	{ "abort", "peer: ", ": EPIPE, ", ": ECONNRESET, ",
	  "the same reset, seen by a write after the program's close" },
	{ "abort", "peer: send an urgent byte", " = 1", " = -1 ECONNRESET",
	  "the same reset, met by the peer's first write" },
};
#define N_ALLOWED (sizeof(allowed) / sizeof(allowed[0]))

/*
 * The shared library that the scenarios exit_handler_in_library,
 * reset_read_in_exit_handler and reset_after_exit_read_in_exit_handler load.
 */
static const char *exit_lib(const char *scenario)
{
	const char *src = lab_source_dir(), *out = lab_path("tw-exit-writer.so");
	struct lab_proc *p;

	if (strcmp(scenario, "exit_handler_in_library") &&
	    strcmp(scenario, "reset_read_in_exit_handler") &&
	    strcmp(scenario, "reset_after_exit_read_in_exit_handler"))
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
 * Runs the scenario once, without the library (options NULL) or with it and
 * TWSHIM_OPTIONS "log=FILE,OPTIONS,defer_ms=...", and returns its transcript.
 */
static char *run(const char *scenario, const char *lib, const char *options, const char *name)
{
	const struct lab_opts *o = NULL;
	const char *log = lab_path(lab_fmt("%s.jsonl", name));
	struct lab_proc *p;

	if (options)
		o = lab_traced(log, lab_fmt("%s,defer_ms=%d", options, DEFER_MS));
	p = lab_run(name, o, RUN_MS, lab_test_program("tw-scenario", RUN_MS), "--netns",
		    "--defer-ms", lab_fmt("%d", DEFER_MS), "--exit-lib", lib, scenario, NULL);
	cr_assert_eq(lab_exit_code(p), 0, "%s %s: exit %d\n%s%s", scenario, name, lab_exit_code(p),
		     lab_stdout(p), lab_stderr(p));
	if (options) {
		json_t *recs = lab_records_checked(log);

		/* a child holds the socket at the program's close: the FIN is the child's exit */
		if (!strncmp(scenario, "spawn_before_connect", 20))
			lab_rec_assert_count(recs, "via=close,end=active", 0);
		/* a dup2 or dup3 that failed ended nothing: the close does */
		if (!strcmp(scenario, "dup_onto_connection_fails")) {
			lab_rec_assert_count(recs, "role=client,via=close", 1);
			lab_rec_assert_count(recs, "role=client", 1);
		}
		/* the library's copy of a deferred connection is no fd of the range */
		if (!strcmp(scenario, "close_range_over_a_connection"))
			lab_rec_assert_count(recs, "role=client,end=reset", 0);
		/* nor did those close_range calls, but the last, with the process alone */
		if (!strcmp(scenario, "close_range_ends_nothing")) {
			lab_rec_assert_count(recs, "role=client,via=close_range", 1);
			lab_rec_assert_count(recs, "role=client", 1);
		}
		json_decref(recs);
	}
	return lab_stdout(p);
}

/* The lines of text, split in place; their number in *n. */
static char **split_lines(char *text, size_t *n)
{
	size_t cap = 16;
	char **v = malloc(cap * sizeof(*v));

	*n = 0;
	for (char *l = text, *nl; v && l && *l; l = nl ? nl + 1 : NULL) {
		nl = strchr(l, '\n');
		if (nl)
			*nl = 0;
		if (*n == cap)
			v = realloc(v, (cap *= 2) * sizeof(*v));
		if (v)
			v[(*n)++] = l;
	}
	cr_assert(v, "out of memory");
	return v;
}

/*
 * Does a set of rules of the table (applied in its order) turn the line
 * without the library into got? rules: the policies whose rules apply,
 * e.g. "defer abort" for close=defer,fallback=abort.
 */
static bool is_allowed(const char *rules, const char *want, const char *got)
{
	if (!strcmp(want, got))
		return true;
	if (!rules)
		return false;
	for (unsigned set = 1; set < 1u << N_ALLOWED; set++) {
		char buf[1024], tmp[1024];
		bool applied = true;

		snprintf(buf, sizeof(buf), "%s", want);
		for (size_t i = 0; i < N_ALLOWED && applied; i++) {
			const struct allowed *a = &allowed[i];
			const char *at;

			if (!(set & 1u << i))
				continue;
			applied = strstr(rules, a->policy) && strstr(buf, a->in) &&
				  (at = strstr(buf, a->from));
			if (!applied)
				break;
			snprintf(tmp, sizeof(tmp), "%.*s%s%s", (int)(at - buf), buf, a->to,
				 at + strlen(a->from));
			snprintf(buf, sizeof(buf), "%s", tmp);
		}
		if (applied && !strcmp(buf, got))
			return true;
	}
	return false;
}

/*
 * The lines of w (without the library) and g (under the policy) that do not
 * pair up, "- " and "+ " as in a diff, after the longest run of pairs that
 * match (is_allowed). Returns how many lines differ.
 */
static size_t diff_lines(const char *rules, char **w, size_t nw, char **g, size_t ng,
			 char *out, size_t outlen)
{
	size_t *t = calloc((nw + 1) * (ng + 1), sizeof(*t)), i, j, n = 0, len = 0;

	cr_assert(t, "out of memory");
#define T(i, j) t[(i) * (ng + 1) + (j)]
	for (i = nw; i-- > 0;)
		for (j = ng; j-- > 0;)
			T(i, j) = is_allowed(rules, w[i], g[j]) ? T(i + 1, j + 1) + 1
				  : T(i + 1, j) > T(i, j + 1) ? T(i + 1, j) : T(i, j + 1);
	*out = 0;
	for (i = 0, j = 0; i < nw || j < ng;) {
		const char *sign, *line;

		if (i < nw && j < ng && is_allowed(rules, w[i], g[j])) {
			i++, j++;
			continue;
		}
		if (j >= ng || (i < nw && T(i + 1, j) >= T(i, j + 1)))
			sign = "-", line = w[i++];
		else
			sign = "+", line = g[j++];
		n++;
		if (len < outlen - 1)
			len += (size_t)snprintf(out + len, outlen - len, "  %s %s\n", sign, line);
	}
#undef T
	free(t);
	return n;
}

/*
 * The scenario without the library, then with the options (NULL: without
 * the library again); fails with every line that differs beyond the rules
 * of the table for the policies named in rules.
 */
static void differ(const char *scenario, const char *options, const char *rules)
{
	const char *lib, *name = options ? options : "again without library";
	char *want, *got, **w, **g;
	char diffs[8192];
	size_t nw, ng, n;

	lab_enter(100);
	lib = exit_lib(scenario);
	want = run(scenario, lib, NULL, "bare");
	got = run(scenario, lib, options, options ? "library" : "bare-again");
	w = split_lines(strdup(want), &nw);
	g = split_lines(strdup(got), &ng);
	n = diff_lines(rules, w, nw, g, ng, diffs, sizeof(diffs));
	cr_assert_eq(n, 0, "%s: %zu lines differ (- without library, + %s):\n%s", scenario, n,
		     name, diffs);
	free(w);
	free(g);
}

/* Each scenario: again without the library, then under each policy. */
#define SCENARIO(s)								\
	Test(differential, s##_bare, .timeout = 180) { differ(#s, NULL, NULL); }	\
	Test(differential, s##_normal, .timeout = 180)				\
	{ differ(#s, "close=normal", "normal"); }				\
	Test(differential, s##_defer, .timeout = 180)				\
	{ differ(#s, "close=defer", "defer"); }					\
	Test(differential, s##_defer_fallback_abort, .timeout = 180)		\
	{ differ(#s, "close=defer,fallback=abort", "defer abort"); }		\
	Test(differential, s##_abort, .timeout = 180)				\
	{ differ(#s, "close=abort", "abort"); }

#define SCENARIOS(X) \
	X(client_closes_first) \
	X(server_closes_first) \
	X(dup_onto_connection_fails) \
	X(exec_fails) \
	X(close_range_over_a_connection) \
	X(fastopen_connect_closed_unused) \
	X(epoll_and_sigio_after_close) \
	X(sigio_owner_set_before_connect) \
	X(sigio_owner_set_on_a_dup) \
	X(sigio_owner_set_in_a_child) \
	X(bad_arguments) \
	X(sent_before_connect) \
	X(fclose_after_reset) \
	X(fclose_with_a_cancel_pending) \
	X(close_range_ends_nothing) \
	X(unread_at_close_client) \
	X(unread_at_close_server) \
	X(data_after_close_client) \
	X(data_after_close_server) \
	X(half_close_program) \
	X(half_close_peer) \
	X(peer_reset) \
	X(reset_read_by_forked_holder) \
	X(large_write_before_close) \
	X(slow_reader) \
	X(linger_zero) \
	X(linger_on) \
	X(nonblocking_close_queued) \
	X(spawn_posix_spawn) \
	X(spawn_vfork) \
	X(spawn_system) \
	X(spawn_before_connect_posix_spawn) \
	X(spawn_before_connect_vfork) \
	X(exit_while_thread_writes) \
	X(atexit_writes) \
	X(stream_flushed_at_exit) \
	X(exit_while_a_thread_reads_a_stream) \
	X(exit_handler_in_library) \
	X(reset_read_in_exit_handler) \
	X(reset_after_exit_read_in_exit_handler) \
	X(urgent_after_exit) \
	X(both_client_closes_first) \
	X(both_server_closes_first) \
	X(no_tcp_fds) \
	X(async_connect_given_up)

SCENARIOS(SCENARIO)

/*
 * Not under defer: an urgent byte left unread, which the peek skips, makes
 * the kernel's close a reset; a deferred close brings it only at defer_ms
 * (README, Limits).
 */
#define SCENARIO_NOT_DEFERRED(s)						\
	Test(differential, s##_bare, .timeout = 180) { differ(#s, NULL, NULL); }	\
	Test(differential, s##_normal, .timeout = 180)				\
	{ differ(#s, "close=normal", "normal"); }				\
	Test(differential, s##_abort, .timeout = 180)				\
	{ differ(#s, "close=abort", "abort"); }

#define SCENARIOS_NOT_DEFERRED(X) \
	X(urgent_unread)

SCENARIOS_NOT_DEFERRED(SCENARIO_NOT_DEFERRED)

#define NAME(s) #s,
static const char *const tested[] = { SCENARIOS(NAME) SCENARIOS_NOT_DEFERRED(NAME) };

/* Every scenario tw-scenario knows is one of those above. */
Test(differential, every_scenario_is_tested, .timeout = 60)
{
	struct lab_proc *p;
	char *list, **v;
	size_t n, k;

	lab_enter(100);
	p = lab_run("list", NULL, RUN_MS, lab_test_program("tw-scenario", RUN_MS), "--list", NULL);
	cr_assert_eq(lab_exit_code(p), 0, "tw-scenario --list: %s", lab_stderr(p));
	list = lab_stdout(p);
	v = split_lines(list, &n);
	cr_assert_eq(n, sizeof(tested) / sizeof(tested[0]), "tw-scenario has %zu scenarios", n);
	for (size_t i = 0; i < n; i++) {
		for (k = 0; k < n && strcmp(tested[k], v[i]); k++)
			;
		cr_assert(k < n, "scenario %s has no tests here", v[i]);
	}
	free(v);
}
