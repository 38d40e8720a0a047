// SPDX-License-Identifier: MIT
/*
 * `twshim run`: the environment the program gets, the exit status it passes
 * on, the checks made before the program starts, and the records a real run
 * leaves for `twshim report`.
 */
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <criterion/criterion.h>
#include <jansson.h>

#include "lab.h"

static const char *tool(void)
{
	return lab_build_path("twshim");
}

/* the value of NAME in `env` output, or NULL */
static char *env_value(const char *out, const char *name)
{
	size_t n = strlen(name);

	for (const char *p = out; p && *p; p = strchr(p, '\n') ? strchr(p, '\n') + 1 : NULL)
		if (!strncmp(p, name, n) && p[n] == '=') {
			const char *e = strchr(p, '\n');

			return strndup(p + n + 1, e ? (size_t)(e - p - n - 1) : strlen(p + n + 1));
		}
	return NULL;
}

Test(tool_run, existing_ld_preload_and_options_are_kept, .timeout = 30)
{
	static const char *const env[] = { "LD_PRELOAD=libm.so.6",
					   "TWSHIM_OPTIONS=close=normal", NULL };
	struct lab_opts o = { .env = env };
	char real[4096], *preload, *options, *config, *out;
	struct lab_proc *p;

	lab_enter(100);
	cr_assert(realpath(lab_build_path("libtwshim.so"), real), "library not built");
	p = lab_run("env", &o, 10000, tool(), "run", "-o", "defer_ms=250", "-o",
		    "fallback=abort", "-c", "", "--", "/usr/bin/env", NULL);
	out = lab_stdout(p);
	cr_assert_eq(lab_exit_code(p), 0, "%s", lab_stderr(p));

	preload = env_value(out, "LD_PRELOAD");
	cr_assert(preload, "no LD_PRELOAD in:\n%s", out);
	cr_expect_str_eq(preload, lab_fmt("%s:libm.so.6", real));
	options = env_value(out, "TWSHIM_OPTIONS");
	cr_assert(options);
	cr_expect_str_eq(options, "close=normal,defer_ms=250,fallback=abort");
	config = env_value(out, "TWSHIM_CONFIG");
	cr_assert(config, "-c '' sets TWSHIM_CONFIG to no file");
	cr_expect_str_eq(config, "");
}

Test(tool_run, config_file_is_passed_as_absolute_path, .timeout = 30)
{
	char real[4096], tool_abs[4096], *config;
	struct lab_proc *p;
	FILE *f;

	lab_enter(100);
	cr_assert(realpath(tool(), tool_abs), "%s not built", tool());
	f = fopen(lab_path("a.conf"), "w");
	cr_assert(f);
	fputs("close = \"defer\";\ndefer_ms = 100;\n", f);
	fclose(f);
	cr_assert(realpath(lab_path("a.conf"), real));
	/* named relative to the current directory, which the program may leave */
	cr_assert_eq(chdir(lab_dir()), 0);
	p = lab_run("env", NULL, 10000, tool_abs, "run", "-c", "a.conf", "/usr/bin/env", NULL);
	cr_assert_eq(lab_exit_code(p), 0, "%s", lab_stderr(p));
	config = env_value(lab_stdout(p), "TWSHIM_CONFIG");
	cr_assert(config);
	cr_expect_str_eq(config, real);
}

Test(tool_run, exit_status_of_the_program_is_passed_on, .timeout = 30)
{
	struct lab_proc *p;

	lab_enter(100);
	p = lab_run("sh", NULL, 10000, tool(), "run", "--", "/bin/sh", "-c", "exit 7", NULL);
	cr_expect_eq(lab_exit_code(p), 7);
	p = lab_run("sh", NULL, 10000, tool(), "run", "/bin/sh", "-c", "kill -TERM $$", NULL);
	cr_expect_eq(lab_exit_code(p), 128 + 15);
}

Test(tool_run, missing_program_exits_2_with_a_message, .timeout = 30)
{
	struct lab_proc *p;

	lab_enter(100);
	p = lab_run("missing", NULL, 10000, tool(), "run", "--", "no-such-program-twshim",
		    NULL);
	cr_expect_eq(lab_exit_code(p), 2);
	cr_expect(strstr(lab_stderr(p), "no-such-program-twshim: program not found"), "%s",
		  lab_stderr(p));
	p = lab_run("noprog", NULL, 10000, tool(), "run", NULL);
	cr_expect_eq(lab_exit_code(p), 2);
	cr_expect(strstr(lab_stderr(p), "no program"), "%s", lab_stderr(p));
}

Test(tool_run, bad_settings_exit_2_before_the_program_runs, .timeout = 30)
{
	struct lab_proc *p;

	lab_enter(100);
	p = lab_run("badopt", NULL, 10000, tool(), "run", "-o", "close=sometimes", "--",
		    "/bin/sh", "-c", "echo ran", NULL);
	cr_expect_eq(lab_exit_code(p), 2);
	cr_expect(strstr(lab_stderr(p), "close"), "%s", lab_stderr(p));
	cr_expect_str_eq(lab_stdout(p), "", "the program must not run");

	p = lab_run("badconf", NULL, 10000, tool(), "run", "-c",
		    "tests/fixtures/conf/bad-close-value.conf", "--", "/bin/sh", "-c", "echo ran",
		    NULL);
	cr_expect_eq(lab_exit_code(p), 2);
	cr_expect(strstr(lab_stderr(p), "bad-close-value.conf"), "%s", lab_stderr(p));
	cr_expect_str_eq(lab_stdout(p), "");

	p = lab_run("noconf", NULL, 10000, tool(), "run", "-c", "/nonexistent/twshim.conf",
		    "--", "/bin/sh", "-c", "echo ran", NULL);
	cr_expect_eq(lab_exit_code(p), 2);
	cr_expect(strstr(lab_stderr(p), "/nonexistent/twshim.conf"), "%s", lab_stderr(p));
}

/*
 * A real run: the client closes first under the library, and `twshim
 * report` counts exactly what the records hold and what the kernel shows.
 */
Test(tool_run, records_of_a_real_run_are_reported, .timeout = 60)
{
	struct lab_proc *srv, *c, *r;
	json_t *recs, *rep, *g;
	const char *log;

	lab_enter(100);
	log = lab_path("client.jsonl");
	srv = lab_start_server("server", NULL, lab_example("tw-server"), "--close", "last",
			       "-l", lab_addr4(lab_port()), NULL);
	c = lab_run("client", NULL, 20000, tool(), "run", "-o", lab_fmt("log=%s", log), "--",
		    lab_example("tw-client"), "-n", "6", "--close", "first",
		    lab_fmt("127.0.0.1:%d", srv->port), NULL);
	cr_assert_eq(lab_exit_code(c), 0, "%s", lab_stderr(c));
	recs = lab_records(log);
	lab_records_check(recs);
	cr_assert_eq(lab_rec_count(recs, ""), 6);
	cr_assert_eq(lab_rec_count(recs, "role=client,tw=local"), 6);
	/* the server's FIN for the last connection may still be on its way */
	for (int i = 0; i < 100 && lab_tw_total() < 6; i++)
		lab_sleep_ms(10);
	cr_assert_eq(lab_tw_total(), 6);

	r = lab_run("report", NULL, 10000, tool(), "report", "--json", log, NULL);
	cr_assert_eq(lab_exit_code(r), 0, "%s", lab_stderr(r));
	rep = json_loads(lab_stdout(r), 0, NULL);
	cr_assert(rep, "%s", lab_stdout(r));
	cr_assert_eq(json_array_size(json_object_get(rep, "groups")), 1);
	g = json_array_get(json_object_get(rep, "groups"), 0);
	cr_expect_str_eq(json_string_value(json_object_get(g, "key")), "tw-client");
	cr_expect_eq(json_integer_value(json_object_get(g, "connections")), 6);
	cr_expect_eq(json_integer_value(json_object_get(g, "tw_local")), 6);
	cr_expect_eq(json_integer_value(json_object_get(g, "tw_now")), lab_tw_total());
	cr_expect_eq(json_integer_value(json_object_get(rep, "malformed")), 0);
	json_decref(rep);

	r = lab_run("report-port", NULL, 10000, tool(), "report", "--json", "--by", "port", log,
		    NULL);
	rep = json_loads(lab_stdout(r), 0, NULL);
	cr_assert(rep, "%s", lab_stdout(r));
	g = json_array_get(json_object_get(rep, "groups"), 0);
	cr_expect_str_eq(json_string_value(json_object_get(g, "key")),
			 lab_fmt("%d", srv->port));
	json_decref(rep);
	json_decref(recs);
	cr_assert_eq(lab_stop(srv, 5000), 0, "%s", lab_stderr(srv));
}
