// SPDX-License-Identifier: MIT
/*
 * The config file: each fixture, good or bad, gives the documented policy or
 * exactly the documented line; rules, A/B arms, precedence, the environment.
 */
#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <criterion/criterion.h>

#include "config.h"
#include "defaults.h"

#define FIX	"tests/fixtures/conf/"
#define POL	"policies/"

static struct conf *load(const char *file, const char *comm, const char *options)
{
	struct conf_source src = { .comm = comm, .file = file, .options = options };
	struct conf *c = NULL;
	char err[512] = "";
	int ret;

	ret = conf_load(&c, &src, err, sizeof(err));
	cr_assert_eq(ret, 0, "%s: %s", file ? file : "(no file)", err);
	cr_assert_not_null(c);
	return c;
}

/* A remote address from text (either family, IPv4 as AF_INET); NULL text: unknown. */
static void resolve(const struct conf *c, enum tw_role role, const char *addr, uint16_t port,
		    uint64_t rnd, struct tw_policy *p)
{
	struct sockaddr_storage ss;
	socklen_t len = 0;

	memset(&ss, 0, sizeof(ss));
	if (addr && strchr(addr, ':')) {
		struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&ss;

		s6->sin6_family = AF_INET6;
		cr_assert_eq(inet_pton(AF_INET6, addr, &s6->sin6_addr), 1, "%s", addr);
		len = sizeof(*s6);
	} else if (addr) {
		struct sockaddr_in *s4 = (struct sockaddr_in *)&ss;

		s4->sin_family = AF_INET;
		cr_assert_eq(inet_pton(AF_INET, addr, &s4->sin_addr), 1, "%s", addr);
		len = sizeof(*s4);
	}
	conf_resolve(c, role, addr ? (struct sockaddr *)&ss : NULL, len, port, rnd, p);
}

static const char *sink_of(const struct conf *c, const struct tw_policy *p)
{
	return p->sink == TW_SINK_NONE ? "none" : conf_sink(c, p->sink);
}

static const char *arm_of(const struct conf *c, const struct tw_policy *p)
{
	return p->arm ? conf_arm_name(c, p->arm) : "";
}

/* splitmix64: a seeded generator, so a statistical test always sees the same draws */
static uint64_t prng(uint64_t *s)
{
	uint64_t x = (*s += 0x9e3779b97f4a7c15ull);

	x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
	x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
	return x ^ (x >> 31);
}

static const struct {
	const char *name;
	int line;
	const char *msg;
} bad[] = {
	{ "bad-ab-in-arm", 4, "ab: allowed only at the top level or in a rule" },
	{ "bad-ab-not-group", 2, "ab: expected a group { split = ...; arms = ( ... ); }" },
	{ "bad-arm-dup-name", 5, "name: \"defer\" names two arms of one ab group" },
	{ "bad-arm-empty-name", 3, "name: expected a string of 1 to 63 characters" },
	{ "bad-arm-no-name", 5, "name: missing; every arm needs a name" },
	{ "bad-arm-not-group", 3, "arms: each arm is a group { name = ...; weight = ...; }" },
	{ "bad-arms-empty", 3, "arms: expected a list of arms ( { name = ...; }, ... )" },
	{ "bad-arms-missing", 2, "arms: missing; an ab group needs a list of arms" },
	{ "bad-close-type", 2, "close: expected normal, defer or abort" },
	{ "bad-close-value", 2, "close: expected normal, defer or abort" },
	{ "bad-defer-float", 2, "defer_ms: expected a number from 0 to 600000" },
	{ "bad-defer-negative", 2, "defer_ms: expected a number from 0 to 600000" },
	{ "bad-defer-range", 3, "defer_ms: expected a number from 0 to 600000" },
	{ "bad-defer-string", 2, "defer_ms: expected a number from 0 to 600000" },
	{ "bad-exit-wait", 2, "exit_wait_ms: expected a number from 0 to 600000" },
	{ "bad-fallback", 3, "fallback: expected normal or abort" },
	{ "bad-include-missing", 2, "cannot open include file" },
	{ "bad-learn", 2, "learn: expected on or off" },
	{ "bad-log-empty", 2, "log: expected a path, stderr, syslog or none" },
	{ "bad-log-type", 2, "log: expected a path, stderr, syslog or none" },
	{ "bad-log-only", 2, "log_only: expected all or tw_local" },
	{ "bad-log-only-rule", 3, "log_only: expected all or tw_local" },
	{ "bad-log-sample-range", 3, "log_sample: expected a number from 1 to 1000000" },
	{ "bad-log-sample-string", 2, "log_sample: expected a number from 1 to 1000000" },
	{ "bad-log-sample-zero", 2, "log_sample: expected a number from 1 to 1000000" },
	{ "bad-match-at-top", 2, "process: allowed only in a rule" },
	{ "bad-name-in-rule", 3, "name: allowed only in an arm" },
	{ "bad-other-process-rule", 3, "close: expected normal, defer or abort" },
	{ "bad-policy-in-ab", 3, "close: belongs in an arm, not in the ab group itself" },
	{ "bad-port-range", 3, "port: expected a number from 1 to 65535" },
	{ "bad-port-string", 3, "port: expected a number from 1 to 65535" },
	{ "bad-port-zero", 3, "port: expected a number from 1 to 65535" },
	{ "bad-process-empty", 3, "process: expected a glob such as \"nginx*\"" },
	{ "bad-process-type", 3, "process: expected a glob such as \"nginx*\"" },
	{ "bad-remote-empty-prefix", 3,
	  "remote: expected an IPv4 or IPv6 address, optionally with /prefix" },
	{ "bad-remote-garbage", 3,
	  "remote: expected an IPv4 or IPv6 address, optionally with /prefix" },
	{ "bad-remote-hostbits", 3,
	  "remote: 10.1.2.3/8 has bits set beyond the /8 prefix (10.0.0.0/8?)" },
	{ "bad-remote-hostname", 3,
	  "remote: expected an IPv4 or IPv6 address, optionally with /prefix" },
	{ "bad-remote-prefix", 3, "remote: prefix longer than 32 bits" },
	{ "bad-remote-v6-hostbits", 3,
	  "remote: 2001:db8::1/32 has bits set beyond the /32 prefix (2001:db8::/32?)" },
	{ "bad-remote-v6-prefix", 3, "remote: prefix longer than 128 bits" },
	{ "bad-reuseaddr", 2, "reuseaddr: expected true or false" },
	{ "bad-reuseaddr-string", 2, "reuseaddr: expected true or false" },
	{ "bad-role", 3, "role: expected client or server" },
	{ "bad-rule-not-group", 2, "rules: each rule is a group { ... }" },
	{ "bad-rules-group", 2, "rules: expected a list of rules ( { ... }, { ... } )" },
	{ "bad-rules-in-rule", 3, "rules: allowed only at the top level" },
	{ "bad-rules-type", 2, "rules: expected a list of rules ( { ... }, { ... } )" },
	{ "bad-split", 3, "split: expected connection or process" },
	{ "bad-stats-empty", 2, "stats: expected a directory or none" },
	{ "bad-stats-type", 2, "stats: expected a directory or none" },
	{ "bad-syntax", 3, "syntax error" },
	{ "bad-syntax-brace", 4, "syntax error" },
	{ "bad-too-many-arms", 68, "arms: more than 64 arms in all" },
	{ "bad-too-many-arms-dropped", 74, "arms: more than 64 arms in all" },
	{ "bad-too-many-sinks", 11, "log: more than 8 different log destinations" },
	{ "bad-too-many-sinks-dropped", 11, "log: more than 8 different log destinations" },
	{ "bad-unknown-ab", 4, "unknown key \"spilt\"" },
	{ "bad-unknown-arm", 4, "unknown key \"wieght\"" },
	{ "bad-unknown-rule", 3, "unknown key \"proces\"" },
	{ "bad-unknown-top", 3, "unknown key \"clsoe\"" },
	{ "bad-weight-float", 4, "weight: expected a whole number from 0 to 1000000" },
	{ "bad-weight-negative", 4, "weight: expected a whole number from 0 to 1000000" },
	{ "bad-weights-zero", 3, "weight: the weights of an ab group add up to 0" },
};

Test(config, bad_fixtures_give_one_exact_line)
{
	char path[256], want[512], err[512];
	struct conf_source src = { .comm = "nginx" };
	struct conf *c;
	size_t i;

	for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		snprintf(path, sizeof(path), FIX "%s.conf", bad[i].name);
		snprintf(want, sizeof(want), "%s:%d: %s", path, bad[i].line, bad[i].msg);
		src.file = path;
		c = (struct conf *)&src;
		err[0] = '\0';
		cr_expect_eq(conf_load(&c, &src, err, sizeof(err)), -EINVAL, "%s", path);
		cr_expect_null(c, "%s", path);
		cr_expect_str_eq(err, want);
	}
}

/* A new bad fixture must come with its expected line, or it tests nothing. */
Test(config, every_bad_fixture_is_checked)
{
	struct dirent *de;
	size_t i, n = 0;
	DIR *d;

	d = opendir(FIX);
	cr_assert_not_null(d, "run from the top of the source tree");
	while ((de = readdir(d))) {
		char name[256];

		if (strncmp(de->d_name, "bad-", 4) || !strstr(de->d_name, ".conf"))
			continue;
		snprintf(name, sizeof(name), "%.*s", (int)(strlen(de->d_name) - 5), de->d_name);
		for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
			if (!strcmp(bad[i].name, name))
				break;
		cr_expect_lt(i, sizeof(bad) / sizeof(bad[0]), "%s has no expected message",
			     de->d_name);
		n++;
	}
	closedir(d);
	cr_assert_eq(n, sizeof(bad) / sizeof(bad[0]));
}

Test(config, missing_file_names_it)
{
	struct conf_source src = { .file = FIX "no-such.conf" };
	struct conf *c;
	char err[256];

	cr_assert_eq(conf_load(&c, &src, err, sizeof(err)), -ENOENT);
	cr_assert_null(c);
	cr_assert_str_eq(err, FIX "no-such.conf: No such file or directory");
}

Test(config, directory_is_not_a_config_file)
{
	struct conf_source src = { .file = FIX };
	struct conf *c;
	char err[256];

	cr_assert_eq(conf_load(&c, &src, err, sizeof(err)), -EISDIR);
	cr_assert_str_eq(err, FIX ": Is a directory");
}

Test(config, comments_only_file_leaves_connections_alone)
{
	struct conf *c = load(FIX "good-empty.conf", "nginx", NULL);
	struct tw_policy p;

	resolve(c, TW_ROLE_SERVER, "192.0.2.1", 80, 0, &p);
	cr_assert_eq(p.close, TW_CLOSE_NORMAL);
	cr_assert_eq(p.defer_ms, TW_DEFER_MS_DEFAULT);
	cr_assert_eq(p.exit_wait_ms, TW_EXIT_WAIT_MS_DEFAULT);
	cr_assert_eq(p.sink, TW_SINK_NONE);
	cr_assert_not(conf_tracking(c));
	cr_assert_not(conf_reuseaddr(c));
	conf_free(c);
}

Test(config, top_level_sets_every_key)
{
	struct conf *c = load(FIX "good-top.conf", "nginx", NULL);
	struct tw_policy p;

	resolve(c, TW_ROLE_CLIENT, "2001:db8::1", 443, 0, &p);
	cr_assert_eq(p.close, TW_CLOSE_DEFER);
	cr_assert_eq(p.defer_ms, 250);
	cr_assert_eq(p.fallback, TW_FALLBACK_ABORT);
	cr_assert_eq(p.exit_wait_ms, 4000);
	cr_assert_str_eq(sink_of(c, &p), "/tmp/twshim-test-%n-%p.jsonl");
	cr_assert_eq(p.arm, 0);
	cr_assert(conf_reuseaddr(c));
	cr_assert(conf_tracking(c));
	conf_free(c);
}

Test(config, production_keys_sample_filter_and_count)
{
	struct conf *c = load(FIX "good-production.conf", "curl", NULL);
	struct tw_policy p;

	resolve(c, TW_ROLE_CLIENT, "192.0.2.1", 443, 0, &p);
	cr_assert_eq(conf_log_sample(c, &p), 10);
	cr_assert_eq(p.log_only, TW_LOG_TW_LOCAL);
	cr_assert_not(p.learn);
	resolve(c, TW_ROLE_CLIENT, "192.0.2.1", 80, 0, &p);
	cr_assert_eq(conf_log_sample(c, &p), 100, "the port rule samples otherwise");
	cr_assert_eq(p.log_only, TW_LOG_ALL);
	cr_assert(p.learn);
	cr_assert_str_eq(conf_stats_dir(c), "/run/twshim",
			 "a rule matched by port does not choose the process's directory");
	cr_assert(conf_tracking(c));
	conf_free(c);

	c = load(FIX "good-production.conf", "nginx", NULL);
	cr_assert_str_eq(conf_stats_dir(c), "/run/twshim-nginx");
	conf_free(c);
}

Test(config, stats_alone_turns_tracking_on)
{
	struct conf *c = load(FIX "good-empty.conf", "x", "stats=/tmp/s");
	struct tw_policy p;

	cr_assert(conf_tracking(c), "counters need the connections tracked, log or not");
	cr_assert_str_eq(conf_stats_dir(c), "/tmp/s");
	resolve(c, TW_ROLE_CLIENT, NULL, 1, 0, &p);
	cr_assert_eq(p.sink, TW_SINK_NONE);
	cr_assert_eq(conf_log_sample(c, &p), 1);
	cr_assert_eq(p.log_only, TW_LOG_ALL);
	cr_assert(p.learn, "learn is on by default");
	conf_free(c);

	c = load(FIX "good-production.conf", "x", "stats=none");
	cr_assert_null(conf_stats_dir(c));
	conf_free(c);
}

Test(config, int64_numbers_are_numbers)
{
	struct conf *c = load(FIX "good-int64.conf", "x", NULL);
	struct tw_policy p;

	resolve(c, TW_ROLE_CLIENT, NULL, 1, 0, &p);
	cr_assert_eq(p.defer_ms, 500);
	cr_assert_eq(p.exit_wait_ms, 0);
	conf_free(c);
}

Test(config, include_is_relative_to_the_including_file)
{
	struct conf *c = load(FIX "good-include.conf", "x", NULL);
	struct tw_policy p;

	resolve(c, TW_ROLE_SERVER, NULL, 8080, 0, &p);
	cr_assert_eq(p.close, TW_CLOSE_ABORT);
	cr_assert_eq(p.defer_ms, 250, "from the included file");
	conf_free(c);
}

Test(config, options_override_the_files_top_level)
{
	struct conf *c = load(FIX "good-top.conf", "nginx",
			      "close=abort, log=stderr, reuseaddr=0");
	struct tw_policy p;

	resolve(c, TW_ROLE_CLIENT, NULL, 80, 0, &p);
	cr_assert_eq(p.close, TW_CLOSE_ABORT, "options come last");
	cr_assert_eq(p.defer_ms, 250, "what options do not name comes from the file");
	cr_assert_eq(p.fallback, TW_FALLBACK_ABORT);
	cr_assert_str_eq(sink_of(c, &p), "stderr");
	cr_assert_eq(conf_nsinks(c), 1, "the file's log is nobody's destination any more");
	cr_assert_not(conf_reuseaddr(c));
	conf_free(c);
}

Test(config, rules_still_override_options)
{
	struct conf *c = load(FIX "good-rules.conf", "nginx", "close=abort,defer_ms=9");
	struct tw_policy p;

	resolve(c, TW_ROLE_SERVER, "192.0.2.7", 80, 0, &p);
	cr_assert_eq(p.close, TW_CLOSE_DEFER, "the first rule names close");
	cr_assert_eq(p.defer_ms, 200);
	resolve(c, TW_ROLE_CLIENT, "192.0.3.7", 80, 0, &p);
	cr_assert_eq(p.close, TW_CLOSE_ABORT, "no rule: the options' top level");
	cr_assert_eq(p.defer_ms, 9);
	conf_free(c);
}

Test(config, options_mistake_after_good_file_fails_whole_load)
{
	struct conf_source src = { .file = FIX "good-top.conf", .options = "close=sometimes" };
	struct conf *c;
	char err[256];

	cr_assert_eq(conf_load(&c, &src, err, sizeof(err)), -EINVAL);
	cr_assert_null(c);
	cr_assert_str_eq(err, "TWSHIM_OPTIONS: close: expected normal, defer or abort");
}

Test(config, rule_by_process_role_and_port)
{
	struct conf *c = load(FIX "good-rules.conf", "nginx-worker", NULL);
	struct tw_policy p;

	resolve(c, TW_ROLE_SERVER, "203.0.113.9", 80, 0, &p);
	cr_assert_eq(p.close, TW_CLOSE_DEFER);
	cr_assert_eq(p.defer_ms, 200);
	cr_assert_str_eq(sink_of(c, &p), "/tmp/tw-all.jsonl", "inherited from the top level");

	resolve(c, TW_ROLE_CLIENT, "203.0.113.9", 80, 0, &p);
	cr_assert_eq(p.close, TW_CLOSE_NORMAL, "role does not match");
	cr_assert_eq(p.defer_ms, 3000);

	resolve(c, TW_ROLE_SERVER, "203.0.113.9", 8080, 0, &p);
	cr_assert_eq(p.close, TW_CLOSE_NORMAL, "port does not match");
	cr_assert_str_eq(sink_of(c, &p), "/tmp/tw-servers.jsonl", "the last rule takes it");
	conf_free(c);

	c = load(FIX "good-rules.conf", "apache", NULL);
	resolve(c, TW_ROLE_SERVER, "203.0.113.9", 80, 0, &p);
	cr_assert_eq(p.close, TW_CLOSE_NORMAL, "process does not match nginx*");
	conf_free(c);
}

Test(config, rule_by_ipv4_remote)
{
	struct conf *c = load(FIX "good-rules.conf", "curl", NULL);
	struct tw_policy p;

	resolve(c, TW_ROLE_CLIENT, "198.18.0.1", 443, 0, &p);
	cr_assert_eq(p.close, TW_CLOSE_ABORT);
	cr_assert_str_eq(sink_of(c, &p), "/tmp/tw-all.jsonl");
	resolve(c, TW_ROLE_CLIENT, "198.19.255.255", 443, 0, &p);
	cr_assert_eq(p.close, TW_CLOSE_ABORT, "inside 198.18.0.0/15");
	resolve(c, TW_ROLE_CLIENT, "198.20.0.0", 443, 0, &p);
	cr_assert_eq(p.close, TW_CLOSE_NORMAL, "outside 198.18.0.0/15");
	cr_assert_str_eq(sink_of(c, &p), "none", "curl's own rule turns records off");

	resolve(c, TW_ROLE_SERVER, "10.0.0.1", 22, 0, &p);
	cr_assert_eq(p.exit_wait_ms, 5, "a lone address is a /32");
	resolve(c, TW_ROLE_SERVER, "10.0.0.2", 22, 0, &p);
	cr_assert_eq(p.exit_wait_ms, 1000);
	conf_free(c);
}

Test(config, ipv4_rule_matches_ipv4_mapped_peer)
{
	struct conf *c = load(FIX "good-rules.conf", "curl", NULL);
	struct tw_policy p;

	resolve(c, TW_ROLE_CLIENT, "::ffff:198.19.1.2", 443, 0, &p);
	cr_assert_eq(p.close, TW_CLOSE_ABORT, "a dual-stack socket sees IPv4 peers mapped");
	resolve(c, TW_ROLE_CLIENT, "::c613:102", 443, 0, &p);
	cr_assert_eq(p.close, TW_CLOSE_NORMAL, "IPv4-compatible is not IPv4-mapped");
	resolve(c, TW_ROLE_CLIENT, "64:ff9b::c613:102", 443, 0, &p);
	cr_assert_eq(p.close, TW_CLOSE_NORMAL, "NAT64 is not IPv4-mapped");
	/* an IPv6 rule written in mapped form catches plain IPv4 peers too */
	resolve(c, TW_ROLE_SERVER, "192.0.2.200", 443, 0, &p);
	cr_assert_eq(p.defer_ms, 7);
	resolve(c, TW_ROLE_SERVER, "192.0.3.200", 443, 0, &p);
	cr_assert_eq(p.defer_ms, 3000);
	conf_free(c);
}

Test(config, rule_by_ipv6_remote_and_port)
{
	struct conf *c = load(FIX "good-rules.conf", "curl", NULL);
	struct tw_policy p;

	resolve(c, TW_ROLE_CLIENT, "2001:db8:1:ffff::1", 443, 0, &p);
	cr_assert_eq(p.close, TW_CLOSE_DEFER);
	cr_assert_eq(p.fallback, TW_FALLBACK_ABORT);
	resolve(c, TW_ROLE_CLIENT, "2001:db8:1::1", 80, 0, &p);
	cr_assert_eq(p.close, TW_CLOSE_NORMAL, "remote matches, port does not");
	resolve(c, TW_ROLE_CLIENT, "2001:db8:2::1", 443, 0, &p);
	cr_assert_eq(p.close, TW_CLOSE_NORMAL, "outside the /48");
	conf_free(c);
}

Test(config, unknown_remote_matches_no_remote_rule)
{
	struct conf *c = load(FIX "good-rules.conf", "curl", NULL);
	struct sockaddr_in short_sa = { .sin_family = AF_INET };
	struct tw_policy p;

	resolve(c, TW_ROLE_SERVER, NULL, 22, 0, &p);
	cr_assert_eq(p.exit_wait_ms, 1000);
	cr_assert_str_eq(sink_of(c, &p), "/tmp/tw-servers.jsonl");
	/* a truncated address is as good as none */
	conf_resolve(c, TW_ROLE_CLIENT, (struct sockaddr *)&short_sa, 4, 443, 0, &p);
	cr_assert_eq(p.close, TW_CLOSE_NORMAL);
	conf_free(c);
}

Test(config, rules_for_other_programs_are_dropped)
{
	struct conf *c = load(FIX "good-other-programs.conf", "nginx", NULL);
	struct tw_policy p;

	cr_assert_not(conf_tracking(c), "no rule can apply to nginx");
	cr_assert_eq(conf_nsinks(c), 0, "a dropped rule's log opens nothing");
	resolve(c, TW_ROLE_CLIENT, "192.0.2.1", 5432, 0, &p);
	cr_assert_eq(p.close, TW_CLOSE_NORMAL);
	conf_free(c);

	c = load(FIX "good-other-programs.conf", "redis-server", NULL);
	cr_assert(conf_tracking(c));
	resolve(c, TW_ROLE_CLIENT, NULL, 6379, 0, &p);
	cr_assert_eq(p.close, TW_CLOSE_DEFER);
	conf_free(c);
}

Test(config, equal_log_destinations_share_a_sink)
{
	struct conf *c = load(FIX "good-shared-sink.conf", "x", NULL);
	struct tw_policy p;

	cr_assert_eq(conf_nsinks(c), 2);
	resolve(c, TW_ROLE_CLIENT, NULL, 1, 0, &p);
	cr_assert_str_eq(sink_of(c, &p), "/tmp/b.jsonl");
	resolve(c, TW_ROLE_CLIENT, NULL, 2, 0, &p);
	cr_assert_str_eq(sink_of(c, &p), "/tmp/a.jsonl");
	resolve(c, TW_ROLE_CLIENT, NULL, 3, 0, &p);
	cr_assert_eq(p.sink, TW_SINK_NONE);
	resolve(c, TW_ROLE_CLIENT, NULL, 4, 0, &p);
	cr_assert_str_eq(sink_of(c, &p), "/tmp/b.jsonl");
	resolve(c, TW_ROLE_CLIENT, NULL, 5, 0, &p);
	cr_assert_str_eq(sink_of(c, &p), "/tmp/a.jsonl");
	cr_assert_null(conf_sink(c, 2));
	conf_free(c);
}

Test(config, arm_overrides_rule_and_rule_overrides_top)
{
	struct conf *c = load(FIX "good-rule-ab.conf", "x", NULL);
	struct tw_policy p;

	resolve(c, TW_ROLE_SERVER, NULL, 80, 0, &p);
	cr_assert_str_eq(arm_of(c, &p), "short");
	cr_assert_eq(p.close, TW_CLOSE_DEFER, "from the rule");
	cr_assert_eq(p.fallback, TW_FALLBACK_ABORT, "from the rule");
	cr_assert_eq(p.defer_ms, 100, "from the arm");
	cr_assert_eq(p.exit_wait_ms, 1000, "the default");
	cr_assert_str_eq(sink_of(c, &p), "/tmp/top.jsonl", "from the top level");

	resolve(c, TW_ROLE_SERVER, NULL, 80, UINT64_MAX, &p);
	cr_assert_str_eq(arm_of(c, &p), "long");
	cr_assert_eq(p.defer_ms, 10000);
	cr_assert_str_eq(sink_of(c, &p), "/tmp/long.jsonl");

	/* no rule matches a client: the top-level split */
	resolve(c, TW_ROLE_CLIENT, NULL, 80, 0, &p);
	cr_assert_str_eq(arm_of(c, &p), "control");
	cr_assert_eq(p.close, TW_CLOSE_NORMAL);
	cr_assert_eq(p.defer_ms, 3000);
	resolve(c, TW_ROLE_CLIENT, NULL, 80, UINT64_MAX, &p);
	cr_assert_str_eq(arm_of(c, &p), "abort");
	cr_assert_eq(p.close, TW_CLOSE_ABORT);
	cr_assert_eq(p.defer_ms, 3000, "inherited by the arm");
	cr_assert_null(conf_arm_name(c, 0));
	cr_assert_null(conf_arm_name(c, 5));
	conf_free(c);
}

/* 10,000 connections: each arm's share within 5 sigma of its weight. */
Test(config, connection_split_follows_weights)
{
	static const char *const names[] = { "control", "defer", "abort", "off" };
	static const double share[] = { 0.5, 0.3, 0.2, 0.0 };
	struct conf *c = load(FIX "good-ab.conf", "x", NULL);
	unsigned count[4] = { 0 }, i, j, n = 10000;
	uint64_t seed = 42;
	struct tw_policy p;

	for (i = 0; i < n; i++) {
		resolve(c, TW_ROLE_CLIENT, "192.0.2.1", 80, prng(&seed), &p);
		cr_assert_neq(p.arm, 0);
		for (j = 0; j < 4; j++)
			if (!strcmp(arm_of(c, &p), names[j]))
				break;
		cr_assert_lt(j, 4, "unknown arm %s", arm_of(c, &p));
		count[j]++;
		cr_assert_eq(p.close, j == 0 ? TW_CLOSE_NORMAL :
			     j == 1 ? TW_CLOSE_DEFER : TW_CLOSE_ABORT);
	}
	for (j = 0; j < 4; j++) {
		double want = n * share[j], var = n * share[j] * (1 - share[j]);
		double dev = count[j] - want;

		/* within 5 sigma; no libm for sqrt: compare squares */
		cr_expect(dev * dev <= 25 * var + 0.25, "%s: %u of %u, want %.0f", names[j],
			  count[j], n, want);
	}
	cr_assert_eq(count[3], 0, "a zero weight is never drawn");
	conf_free(c);
}

Test(config, process_split_is_stable_within_a_process)
{
	struct conf *c = load(FIX "good-process-split.conf", "x", NULL);
	uint64_t seed = 7;
	struct tw_policy p, first;
	unsigned i;

	resolve(c, TW_ROLE_CLIENT, NULL, 80, prng(&seed), &first);
	cr_assert_neq(first.arm, 0);
	for (i = 0; i < 1000; i++) {
		resolve(c, TW_ROLE_CLIENT, NULL, 80, prng(&seed), &p);
		cr_assert_eq(p.arm, first.arm, "per connection rnd must not matter");
	}
	conf_free(c);
}

Test(config, reseed_redraws_process_arm_and_its_reuseaddr)
{
	struct conf *c = load(FIX "good-process-split.conf", "x", NULL);
	unsigned seen[2] = { 0 }, i;
	uint64_t seed = 99;
	struct tw_policy p;
	bool reuse;

	for (i = 0; i < 200; i++) {
		conf_reseed(c, prng(&seed));
		resolve(c, TW_ROLE_SERVER, NULL, 80, 0, &p);
		reuse = !strcmp(arm_of(c, &p), "reuse");
		seen[reuse]++;
		cr_assert_eq(conf_reuseaddr(c), reuse, "reuseaddr follows the drawn arm");
		cr_assert_eq(p.close, reuse ? TW_CLOSE_DEFER : TW_CLOSE_NORMAL);
	}
	cr_assert_gt(seen[0], 50);
	cr_assert_gt(seen[1], 50);

	conf_reseed(c, 12345);
	resolve(c, TW_ROLE_SERVER, NULL, 80, 0, &p);
	i = p.arm;
	conf_reseed(c, 12345);
	resolve(c, TW_ROLE_SERVER, NULL, 80, 1, &p);
	cr_assert_eq(p.arm, i, "the same seed draws the same arm");
	conf_free(c);
}

Test(config, reuseaddr_is_selected_by_process_alone)
{
	struct conf *c = load(FIX "good-reuseaddr.conf", "nginx", NULL);

	cr_assert(conf_reuseaddr(c), "ngin* names reuseaddr = true");
	conf_free(c);

	c = load(FIX "good-reuseaddr.conf", "curl", NULL);
	cr_assert_not(conf_reuseaddr(c), "the rule without match keys says false; "
		      "the role rule before it cannot select");
	conf_free(c);

	c = load(FIX "good-reuseaddr.conf", "curl", "reuseaddr=1");
	cr_assert_not(conf_reuseaddr(c), "options set the top level; the rule still decides");
	conf_free(c);
}

Test(config, tracking_follows_what_any_level_could_do)
{
	struct conf *c;

	c = load(NULL, "x", "defer_ms=5,fallback=abort,reuseaddr=1");
	cr_assert_not(conf_tracking(c), "nothing recorded, every close normal");
	conf_free(c);
	c = load(FIX "good-rule-ab.conf", "x", "log=none");
	cr_assert(conf_tracking(c));
	conf_free(c);
	c = load(FIX "good-shared-sink.conf", "x", "log=none");
	cr_assert(conf_tracking(c), "rules still log");
	conf_free(c);
}

/* A config file in a directory of our own, with TWSHIM_CONFIG and TWSHIM_OPTIONS set. */
static void env_set(void)
{
	cr_assert_eq(setenv(TW_ENV_CONFIG, FIX "good-top.conf", 1), 0);
	cr_assert_eq(setenv(TW_ENV_OPTIONS, "defer_ms=77", 1), 0);
}

Test(config, environment_is_honoured_when_not_secure)
{
	struct tw_policy p;
	struct conf *c;
	char err[256];

	env_set();
	cr_assert_eq(conf_load_env(&c, "x", false, err, sizeof(err)), 0, "%s", err);
	resolve(c, TW_ROLE_CLIENT, NULL, 80, 0, &p);
	cr_assert_eq(p.close, TW_CLOSE_DEFER, "from TWSHIM_CONFIG");
	cr_assert_eq(p.defer_ms, 77, "from TWSHIM_OPTIONS");
	conf_free(c);
}

/*
 * Secure mode may only read /etc/twshim.conf, which this test cannot own:
 * whatever is there (or nothing), the result must equal loading that file
 * alone, and must not show the environment's settings.
 */
Test(config, secure_mode_ignores_environment)
{
	struct conf_source sys = { .comm = "x" };
	struct tw_policy p, want;
	struct conf *c, *ref;
	char err[256];
	struct stat st;
	int ret;

	if (stat(TW_SYSTEM_CONFIG, &st) == 0)
		sys.file = TW_SYSTEM_CONFIG;
	env_set();
	ret = conf_load_env(&c, "x", true, err, sizeof(err));
	cr_assert_eq(ret, conf_load(&ref, &sys, err, sizeof(err)));
	if (ret)
		return;
	resolve(c, TW_ROLE_CLIENT, NULL, 80, 0, &p);
	resolve(ref, TW_ROLE_CLIENT, NULL, 80, 0, &want);
	cr_assert_eq(p.close, want.close);
	cr_assert_eq(p.defer_ms, want.defer_ms);
	cr_assert_neq(p.defer_ms, 77, "TWSHIM_OPTIONS was used");
	if (!sys.file) {
		cr_assert_eq(p.close, TW_CLOSE_NORMAL, "TWSHIM_CONFIG was used");
		cr_assert_not(conf_tracking(c));
	}
	conf_free(c);
	conf_free(ref);
}

Test(config, missing_twshim_config_file_is_an_error)
{
	struct conf *c;
	char err[256];

	cr_assert_eq(setenv(TW_ENV_CONFIG, "/nonexistent/twshim.conf", 1), 0);
	unsetenv(TW_ENV_OPTIONS);
	cr_assert_eq(conf_load_env(&c, "x", false, err, sizeof(err)), -ENOENT);
	cr_assert_null(c);
	cr_assert_str_eq(err, "/nonexistent/twshim.conf: No such file or directory");
}

Test(config, empty_twshim_config_reads_no_file)
{
	struct tw_policy p;
	struct conf *c;
	char err[256];

	cr_assert_eq(setenv(TW_ENV_CONFIG, "", 1), 0);
	cr_assert_eq(setenv(TW_ENV_OPTIONS, "close=abort", 1), 0);
	cr_assert_eq(conf_load_env(&c, "x", false, err, sizeof(err)), 0, "%s", err);
	resolve(c, TW_ROLE_CLIENT, NULL, 80, 0, &p);
	cr_assert_eq(p.close, TW_CLOSE_ABORT);
	cr_assert_eq(p.defer_ms, TW_DEFER_MS_DEFAULT);
	conf_free(c);
}

/* policies/: each ready file gives what its comments promise. */

Test(policies, observe_only_records)
{
	struct conf *c = load(POL "observe.conf", "nginx", NULL);
	struct tw_policy p;

	cr_assert(conf_tracking(c));
	cr_assert_not(conf_reuseaddr(c));
	resolve(c, TW_ROLE_SERVER, "192.0.2.1", 80, 0, &p);
	cr_assert_eq(p.close, TW_CLOSE_NORMAL);
	cr_assert_str_eq(sink_of(c, &p), "/var/log/twshim/%n.jsonl");
	resolve(c, TW_ROLE_CLIENT, "2001:db8::1", 443, 0, &p);
	cr_assert_eq(p.close, TW_CLOSE_NORMAL);
	cr_assert_eq(p.arm, 0);
	conf_free(c);
}

Test(policies, client_defer_defers_clients_only)
{
	struct conf *c = load(POL "client-defer.conf", "curl", NULL);
	struct tw_policy p;

	resolve(c, TW_ROLE_CLIENT, "192.0.2.1", 80, 0, &p);
	cr_assert_eq(p.close, TW_CLOSE_DEFER);
	cr_assert_eq(p.defer_ms, 2000);
	cr_assert_eq(p.fallback, TW_FALLBACK_ABORT);
	cr_assert_eq(p.exit_wait_ms, 2000);
	cr_assert_str_eq(sink_of(c, &p), "/var/log/twshim/%n.jsonl");
	resolve(c, TW_ROLE_SERVER, "192.0.2.1", 80, 0, &p);
	cr_assert_eq(p.close, TW_CLOSE_NORMAL);
	cr_assert_str_eq(sink_of(c, &p), "/var/log/twshim/%n.jsonl");
	conf_free(c);
}

Test(policies, server_defer_defers_servers_only)
{
	struct conf *c = load(POL "server-defer.conf", "nginx", NULL);
	struct tw_policy p;

	resolve(c, TW_ROLE_SERVER, "::1", 8080, 0, &p);
	cr_assert_eq(p.close, TW_CLOSE_DEFER);
	cr_assert_eq(p.defer_ms, 1000);
	cr_assert_eq(p.fallback, TW_FALLBACK_NORMAL);
	resolve(c, TW_ROLE_CLIENT, "::1", 5432, 0, &p);
	cr_assert_eq(p.close, TW_CLOSE_NORMAL);
	cr_assert(conf_tracking(c));
	conf_free(c);
}

Test(policies, abort_resets_everything)
{
	struct conf *c = load(POL "abort.conf", "x", NULL);
	struct tw_policy p;

	resolve(c, TW_ROLE_SERVER, "192.0.2.1", 80, 0, &p);
	cr_assert_eq(p.close, TW_CLOSE_ABORT);
	cr_assert_eq(p.defer_ms, 1000);
	resolve(c, TW_ROLE_CLIENT, "2001:db8::2", 443, 0, &p);
	cr_assert_eq(p.close, TW_CLOSE_ABORT);
	conf_free(c);
}

Test(policies, ab_defer_splits_connections_evenly)
{
	struct conf *c = load(POL "ab-defer.conf", "x", NULL);
	unsigned n = 10000, defer = 0, i;
	uint64_t seed = 2024;
	struct tw_policy p;

	for (i = 0; i < n; i++) {
		resolve(c, TW_ROLE_CLIENT, "192.0.2.1", 80, prng(&seed), &p);
		if (!strcmp(arm_of(c, &p), "defer")) {
			cr_assert_eq(p.close, TW_CLOSE_DEFER);
			cr_assert_eq(p.defer_ms, 1000);
			cr_assert_eq(p.fallback, TW_FALLBACK_NORMAL);
			defer++;
		} else {
			cr_assert_str_eq(arm_of(c, &p), "control");
			cr_assert_eq(p.close, TW_CLOSE_NORMAL);
		}
		cr_assert_str_eq(sink_of(c, &p), "/var/log/twshim/%n.jsonl");
	}
	/* sigma = sqrt(10000 / 4) = 50 */
	cr_assert(defer > 5000 - 250 && defer < 5000 + 250, "%u of %u deferred", defer, n);
	conf_free(c);
}

Test(policies, server_reuseaddr_sets_reuseaddr_and_records)
{
	struct conf *c = load(POL "server-reuseaddr.conf", "myserver", NULL);
	struct tw_policy p;

	cr_assert(conf_reuseaddr(c));
	cr_assert(conf_tracking(c));
	resolve(c, TW_ROLE_SERVER, "192.0.2.1", 80, 0, &p);
	cr_assert_eq(p.close, TW_CLOSE_NORMAL);
	cr_assert_str_eq(sink_of(c, &p), "/var/log/twshim/%n.jsonl");
	conf_free(c);
}

/* Every file in policies/ loads, so none can be shipped broken or untested above. */
Test(policies, every_policy_file_loads)
{
	static const char *const tested[] = { "observe.conf", "client-defer.conf",
		"server-defer.conf", "abort.conf", "ab-defer.conf", "server-reuseaddr.conf" };
	char path[512];
	struct dirent *de;
	struct conf *c;
	size_t i;
	DIR *d;

	d = opendir(POL);
	cr_assert_not_null(d, "run from the top of the source tree");
	while ((de = readdir(d))) {
		if (!strstr(de->d_name, ".conf"))
			continue;
		for (i = 0; i < sizeof(tested) / sizeof(tested[0]); i++)
			if (!strcmp(tested[i], de->d_name))
				break;
		cr_expect_lt(i, sizeof(tested) / sizeof(tested[0]),
			     "%s has no test of its policy", de->d_name);
		snprintf(path, sizeof(path), POL "%s", de->d_name);
		c = load(path, "x", NULL);
		conf_free(c);
	}
	closedir(d);
}
