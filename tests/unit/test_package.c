// SPDX-License-Identifier: MIT
/*
 * The files the Debian package installs as they are read: the commented
 * /etc/twshim.conf changes nothing until edited, and each example it holds
 * parses once uncommented.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <criterion/criterion.h>

#include "config.h"

#define ETC_CONF	"examples/twshim.conf"

static struct conf *load_file(const char *file)
{
	struct conf_source src = { .comm = "nginx", .file = file };
	struct conf *c = NULL;
	char err[512] = "";

	cr_assert_eq(conf_load(&c, &src, err, sizeof(err)), 0, "%s: %s", file, err);
	return c;
}

static void policy_of(const struct conf *c, enum tw_role role, struct tw_policy *p)
{
	memset(p, 0, sizeof(*p));
	conf_resolve(c, role, NULL, 0, 80, 1, p);
}

Test(package, shipped_etc_conf_is_the_defaults, .timeout = 10)
{
	struct conf_source none = { .comm = "nginx" };
	struct tw_policy want, got;
	struct conf *c, *d = NULL;
	char err[512] = "";

	c = load_file(ETC_CONF);
	cr_assert_eq(conf_load(&d, &none, err, sizeof(err)), 0, "%s", err);
	cr_expect_not(conf_tracking(c), "the shipped file records or changes something");
	cr_expect_not(conf_closing(c));
	cr_expect_not(conf_reuseaddr(c));
	cr_expect_eq(conf_nsinks(c), 0);
	for (int role = TW_ROLE_CLIENT; role <= TW_ROLE_SERVER; role++) {
		policy_of(c, role, &got);
		policy_of(d, role, &want);
		cr_expect_eq(memcmp(&got, &want, sizeof(got)), 0,
			     "role %d: the shipped file's policy differs from the defaults", role);
	}
	conf_free(c);
	conf_free(d);
}

/*
 * Every "#key = ...;" line and the commented rules block, uncommented: what
 * the file suggests must be what the parser takes.
 */
Test(package, shipped_etc_conf_examples_parse_uncommented, .timeout = 10)
{
	char line[512], path[] = "/tmp/twshim-etc-conf.XXXXXX";
	FILE *in, *out;
	struct tw_policy p;
	struct conf *c;
	int fd, n = 0;

	in = fopen(ETC_CONF, "r");
	cr_assert(in, "%s is missing", ETC_CONF);
	fd = mkstemp(path);
	cr_assert_geq(fd, 0);
	out = fdopen(fd, "w");
	cr_assert(out);
	while (fgets(line, sizeof(line), in)) {
		/* "#key = ..." and the lines of a commented block: "#rules", "#  {", "#);" */
		if (line[0] == '#' && (line[1] == ')' || (line[1] >= 'a' && line[1] <= 'z') ||
				       !strncmp(line + 1, "  {", 3))) {
			fputs(line + 1, out);
			n++;
		} else {
			fputs(line, out);
		}
	}
	fclose(in);
	cr_assert_eq(fclose(out), 0);
	cr_assert_geq(n, 6, "only %d commented settings found", n);
	c = load_file(path);
	unlink(path);
	cr_expect(conf_tracking(c), "the uncommented log line must record");
	policy_of(c, TW_ROLE_SERVER, &p);
	cr_expect_eq(p.close, TW_CLOSE_DEFER, "the nginx server rule must apply");
	conf_free(c);
}
