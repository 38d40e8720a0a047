// SPDX-License-Identifier: MIT
/* TWSHIM_OPTIONS as a user writes it: the policy it gives, or the one line it earns. */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include <criterion/criterion.h>

#include "config.h"

/* Loads options alone and resolves a client connection with no known peer. */
static int opts_policy(const char *opts, struct tw_policy *p, struct conf **out, char *err,
		       size_t errlen)
{
	struct conf_source src = { .comm = "curl", .options = opts };
	struct conf *c = NULL;
	int ret;

	ret = conf_load(&c, &src, err, errlen);
	if (ret) {
		cr_assert_null(c, "a failed load must hand back no config");
		return ret;
	}
	cr_assert_not_null(c);
	conf_resolve(c, TW_ROLE_CLIENT, NULL, 0, 80, 0, p);
	if (out)
		*out = c;
	else
		conf_free(c);
	return 0;
}

Test(options, empty_string_sets_nothing)
{
	struct tw_policy p;
	struct conf *c;
	char err[256] = "";

	cr_assert_eq(opts_policy("", &p, &c, err, sizeof(err)), 0, "%s", err);
	cr_assert_eq(p.close, TW_CLOSE_NORMAL);
	cr_assert_eq(p.fallback, TW_FALLBACK_NORMAL);
	cr_assert_eq(p.defer_ms, 1000);
	cr_assert_eq(p.exit_wait_ms, 1000);
	cr_assert_eq(p.learn, 1, "learn is on by default");
	cr_assert_eq(p.sink, TW_SINK_NONE);
	cr_assert_eq(p.arm, 0);
	cr_assert_not(conf_tracking(c), "pure defaults must leave connections alone");
	cr_assert_not(conf_reuseaddr(c));
	cr_assert_eq(conf_nsinks(c), 0);
	conf_free(c);
}

Test(options, absent_options_and_file_give_defaults)
{
	struct conf_source src = { .comm = "curl" };
	struct conf *c = NULL;
	char err[256] = "";

	cr_assert_eq(conf_load(&c, &src, err, sizeof(err)), 0, "%s", err);
	cr_assert_not(conf_tracking(c));
	conf_free(c);
}

Test(options, spec_example_sets_every_named_key)
{
	struct tw_policy p;
	struct conf *c;
	char err[256] = "";

	cr_assert_eq(opts_policy("close=defer,defer_ms=500,fallback=abort,log=/tmp/tw.jsonl", &p,
				 &c, err, sizeof(err)), 0, "%s", err);
	cr_assert_eq(p.close, TW_CLOSE_DEFER);
	cr_assert_eq(p.defer_ms, 500);
	cr_assert_eq(p.fallback, TW_FALLBACK_ABORT);
	cr_assert_eq(p.exit_wait_ms, 1000, "a key not named keeps its default");
	cr_assert_eq(conf_nsinks(c), 1);
	cr_assert_eq(p.sink, 0);
	cr_assert_str_eq(conf_sink(c, 0), "/tmp/tw.jsonl");
	cr_assert(conf_tracking(c));
	conf_free(c);
}

Test(options, blanks_around_items_keys_and_values_are_ignored)
{
	struct tw_policy p;
	char err[256] = "";

	cr_assert_eq(opts_policy("  close = abort ,\tdefer_ms= 20 ,, exit_wait_ms =0 , ", &p,
				 NULL, err, sizeof(err)), 0, "%s", err);
	cr_assert_eq(p.close, TW_CLOSE_ABORT);
	cr_assert_eq(p.defer_ms, 20);
	cr_assert_eq(p.exit_wait_ms, 0);
}

Test(options, later_item_wins)
{
	struct tw_policy p;
	char err[256] = "";

	cr_assert_eq(opts_policy("close=defer,close=abort", &p, NULL, err, sizeof(err)), 0);
	cr_assert_eq(p.close, TW_CLOSE_ABORT);
}

Test(options, limits_are_accepted)
{
	struct tw_policy p;
	char err[256] = "";

	cr_assert_eq(opts_policy("defer_ms=600000,exit_wait_ms=0", &p, NULL, err, sizeof(err)),
		     0, "%s", err);
	cr_assert_eq(p.defer_ms, 600000);
	cr_assert_eq(p.exit_wait_ms, 0);
}

Test(options, reuseaddr_takes_digits_and_words)
{
	static const struct {
		const char *opts;
		bool want;
	} cases[] = {
		{ "reuseaddr=1", true }, { "reuseaddr=true", true },
		{ "reuseaddr=0", false }, { "reuseaddr=false", false },
		{ "reuseaddr=1,reuseaddr=0", false },
	};
	struct conf_source src = { .comm = "curl" };
	char err[256];
	struct conf *c;
	size_t i;

	for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		src.options = cases[i].opts;
		cr_assert_eq(conf_load(&c, &src, err, sizeof(err)), 0, "%s: %s", cases[i].opts,
			     err);
		cr_assert_eq(conf_reuseaddr(c), cases[i].want, "%s", cases[i].opts);
		conf_free(c);
	}
}

Test(options, log_destinations)
{
	struct tw_policy p;
	struct conf *c;
	char err[256] = "";

	cr_assert_eq(opts_policy("log=stderr", &p, &c, err, sizeof(err)), 0, "%s", err);
	cr_assert_str_eq(conf_sink(c, p.sink), "stderr");
	cr_assert(conf_tracking(c), "a record is wanted even though every close is normal");
	conf_free(c);

	cr_assert_eq(opts_policy("log=syslog", &p, &c, err, sizeof(err)), 0, "%s", err);
	cr_assert_str_eq(conf_sink(c, p.sink), "syslog");
	conf_free(c);

	cr_assert_eq(opts_policy("log=/var/log/tw/%n-%p.jsonl", &p, &c, err, sizeof(err)), 0);
	cr_assert_str_eq(conf_sink(c, p.sink), "/var/log/tw/%n-%p.jsonl",
			 "%%p and %%n are left for the writer to expand");
	conf_free(c);

	cr_assert_eq(opts_policy("log=/tmp/a,log=none", &p, &c, err, sizeof(err)), 0);
	cr_assert_eq(p.sink, TW_SINK_NONE);
	cr_assert_not(conf_tracking(c));
	conf_free(c);
}

/* Every mistake: no config, -EINVAL, and exactly this line. */
Test(options, mistakes_give_one_exact_line)
{
	static const struct {
		const char *opts;
		const char *msg;
	} cases[] = {
		{ "close=later", "TWSHIM_OPTIONS: close: expected normal, defer or abort" },
		{ "close=", "TWSHIM_OPTIONS: close: expected normal, defer or abort" },
		{ "close=Defer", "TWSHIM_OPTIONS: close: expected normal, defer or abort" },
		{ "defer_ms=600001",
		  "TWSHIM_OPTIONS: defer_ms: expected a number from 0 to 600000" },
		{ "defer_ms=-1", "TWSHIM_OPTIONS: defer_ms: expected a number from 0 to 600000" },
		{ "defer_ms=5s", "TWSHIM_OPTIONS: defer_ms: expected a number from 0 to 600000" },
		{ "defer_ms=", "TWSHIM_OPTIONS: defer_ms: expected a number from 0 to 600000" },
		{ "defer_ms=99999999999999999999999",
		  "TWSHIM_OPTIONS: defer_ms: expected a number from 0 to 600000" },
		{ "exit_wait_ms=1e3",
		  "TWSHIM_OPTIONS: exit_wait_ms: expected a number from 0 to 600000" },
		{ "fallback=defer", "TWSHIM_OPTIONS: fallback: expected normal or abort" },
		{ "reuseaddr=yes", "TWSHIM_OPTIONS: reuseaddr: expected 1, 0, true or false" },
		{ "learn=no", "TWSHIM_OPTIONS: learn: expected on or off" },
		{ "log=", "TWSHIM_OPTIONS: log: expected a path, stderr, syslog or none" },
		{ "log_sample=0",
		  "TWSHIM_OPTIONS: log_sample: expected a number from 1 to 1000000" },
		{ "log_sample=1000001",
		  "TWSHIM_OPTIONS: log_sample: expected a number from 1 to 1000000" },
		{ "log_sample=1/10",
		  "TWSHIM_OPTIONS: log_sample: expected a number from 1 to 1000000" },
		{ "log_only=local", "TWSHIM_OPTIONS: log_only: expected all or tw_local" },
		{ "stats=", "TWSHIM_OPTIONS: stats: expected a directory or none" },
		{ "learn=1", "TWSHIM_OPTIONS: learn: expected on or off" },
		{ "clsoe=defer", "TWSHIM_OPTIONS: unknown key \"clsoe\"" },
		{ "close=defer,bogus=1", "TWSHIM_OPTIONS: unknown key \"bogus\"" },
		{ "defer", "TWSHIM_OPTIONS: \"defer\": expected key=value" },
		{ "=defer", "TWSHIM_OPTIONS: \"=defer\": expected key=value" },
		{ "close=defer;defer_ms=5",
		  "TWSHIM_OPTIONS: close: expected normal, defer or abort" },
		{ "process=nginx", "TWSHIM_OPTIONS: process: only in the config file" },
		{ "rules=x", "TWSHIM_OPTIONS: rules: only in the config file" },
		{ "close=defer\nx", "TWSHIM_OPTIONS: close: expected normal, defer or abort" },
		{ "bad\nkey=1", "TWSHIM_OPTIONS: unknown key \"bad?key\"" },
	};
	struct conf_source src = { .comm = "curl" };
	struct conf *c;
	char err[256];
	size_t i;

	for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		c = (struct conf *)&src;	/* must be cleared */
		src.options = cases[i].opts;
		cr_assert_eq(conf_load(&c, &src, err, sizeof(err)), -EINVAL, "%s", cases[i].opts);
		cr_assert_null(c, "%s", cases[i].opts);
		cr_assert_str_eq(err, cases[i].msg, "for \"%s\"", cases[i].opts);
		cr_assert_null(strchr(err, '\n'));
	}
}

Test(options, production_keys)
{
	struct tw_policy p;
	struct conf *c;
	char err[256] = "";

	cr_assert_eq(opts_policy("log_sample=1000000,log_only=tw_local,stats=/run/tw,learn=off",
				 &p, &c, err, sizeof(err)), 0, "%s", err);
	cr_assert_eq(conf_log_sample(c, &p), 1000000);
	cr_assert_eq(p.log_only, TW_LOG_TW_LOCAL);
	cr_assert_not(p.learn);
	cr_assert_str_eq(conf_stats_dir(c), "/run/tw");
	cr_assert(conf_tracking(c));
	conf_free(c);

	cr_assert_eq(opts_policy("log_sample=7,log_sample=1,log_only=all,learn=on", &p, &c, err,
				 sizeof(err)), 0, "%s", err);
	cr_assert_eq(conf_log_sample(c, &p), 1, "the last value wins");
	cr_assert_eq(p.log_only, TW_LOG_ALL);
	cr_assert(p.learn);
	cr_assert_null(conf_stats_dir(c));
	cr_assert_not(conf_tracking(c));
	conf_free(c);
}

Test(options, replaced_log_leaves_no_sink_behind)
{
	struct tw_policy p;
	struct conf *c;
	char err[256] = "";

	cr_assert_eq(opts_policy("log=/tmp/a,log=/tmp/b", &p, &c, err, sizeof(err)), 0, "%s", err);
	cr_assert_eq(conf_nsinks(c), 1, "/tmp/a is no one's destination any more");
	cr_assert_str_eq(conf_sink(c, p.sink), "/tmp/b");
	conf_free(c);
}

Test(options, tiny_error_buffer_is_safe)
{
	struct conf_source src = { .options = "close=nope" };
	struct conf *c;
	char err[8];

	cr_assert_eq(conf_load(&c, &src, err, sizeof(err)), -EINVAL);
	cr_assert_str_eq(err, "TWSHIM_");
	cr_assert_eq(conf_load(&c, &src, NULL, 0), -EINVAL);
}
