// SPDX-License-Identifier: MIT
/*
 * `twshim exporter`: its output passes promtool, a real Prometheus scrapes
 * it and adds up the connections made, the textfile is replaced whole, and
 * the counters of processes that exited stay in the totals.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/stat.h>

#include <criterion/criterion.h>
#include <jansson.h>

#include "lab.h"
#include "stats.h"

static const char *tool(void)
{
	return lab_build_path("twshim");
}

/* Skips the test when a program it needs is not installed. */
static void need(const char *prog, const char *package)
{
	if (access(prog, X_OK))
		cr_skip_test("%s is not installed (Debian package %s)", prog, package);
}

/* The value of the series that starts the line "key " in metrics text; -1 when absent. */
static long long metric(const char *text, const char *key)
{
	size_t n = strlen(key);

	for (const char *p = text; p && *p; p = strchr(p, '\n'), p = p ? p + 1 : NULL)
		if (!strncmp(p, key, n) && p[n] == ' ')
			return atoll(p + n + 1);
	return -1;
}

/* The sum of every twshim_connections_total series in metrics text. */
static long long connections(const char *text)
{
	static const char name[] = "twshim_connections_total{";
	long long sum = 0;

	for (const char *p = strstr(text, name); p; p = strstr(p + 1, name)) {
		if (p != text && p[-1] != '\n')
			continue;
		sum += atoll(strchr(p, '}') + 2);
	}
	return sum;
}

/* Stats files left in dir. */
static int files_in(const char *dir)
{
	struct lab_proc *p = lab_run("ls", NULL, 5000, "/bin/sh", "-c",
				     lab_fmt("ls %s | grep -c '\\%s$' || true", dir, TW_STATS_SUFFIX),
				     NULL);

	return atoi(lab_stdout(p));
}

/* A server closing last and n clients' connections closed first, all counted in dir. */
static void traffic(const char *name, const char *dir, const char *log, const char *conf,
		    const char *addr, int n)
{
	struct lab_proc *c;
	const struct lab_opts *o = conf ? lab_configured(conf) :
				   lab_traced(log, lab_fmt("stats=%s", dir));

	c = lab_run(name, o, 60000, lab_example("tw-client"), "-n", lab_fmt("%d", n), "--close",
		    "first", addr, NULL);
	lab_assert_ok(c, n);
}

static const char *stats_dir(void)
{
	const char *dir = lab_path("stats");

	cr_assert_eq(mkdir(dir, 0755), 0);
	return dir;
}

/*
 * The one-shot output, with A/B arms and the kernel's TIME_WAIT attributed
 * through the log, is what promtool accepts, and it adds up.
 */
Test(exporter, promtool_accepts_the_output, .timeout = 90)
{
	const char *dir, *log, *conf, *out, *addr;
	struct lab_proc *srv, *e, *check;
	char *text;

	need("/usr/bin/promtool", "prometheus");
	lab_enter(1000);
	dir = stats_dir();
	log = lab_path("client.jsonl");
	conf = lab_path("ab.conf");
	out = lab_path("metrics.prom");
	addr = lab_addr4(lab_port());
	lab_write_file(conf, lab_fmt("log = \"%s\";\nstats = \"%s\";\n"
				     "ab = { arms = ( { name = \"control\"; },\n"
				     "                { name = \"treated\"; } ); };\n", log, dir));
	srv = lab_start_server("server", NULL, lab_example("tw-server"), "--close", "last",
			       "-l", addr, NULL);
	traffic("client", dir, log, conf, addr, 40);
	e = lab_run("exporter", NULL, 20000, tool(), "exporter", "--stats", dir, log, NULL);
	cr_assert_eq(lab_exit_code(e), 0, "%s", lab_stderr(e));
	text = lab_stdout(e);
	lab_write_file(out, text);
	check = lab_run("promtool", NULL, 20000, "/bin/sh", "-c",
			lab_fmt("promtool check metrics < %s", out), NULL);
	cr_expect_eq(lab_exit_code(check), 0, "promtool: %s%s\n%s", lab_stdout(check),
		     lab_stderr(check), text);
	cr_expect_eq(connections(text), 40, "%s", text);
	cr_expect(strstr(text, ",arm=\"control\"}"), "%s", text);
	cr_expect(strstr(text, ",arm=\"treated\"}"), "%s", text);
	cr_expect_eq(metric(text, "twshim_time_wait_sockets{comm=\"tw-client\"}"), 40, "%s", text);
	cr_expect_eq(metric(text, "twshim_time_wait_unattributed_sockets"), 0, "%s", text);
	cr_expect_eq(files_in(dir), 1, "printed once, the files stay for the next run");
	cr_assert_eq(lab_stop(srv, 5000), 0, "%s", lab_stderr(srv));
}

/* The value of sum(twshim_connections_total) Prometheus answers, or -1. */
static long long prom_sum(int port)
{
	struct lab_proc *q;
	json_t *j, *v;
	long long n = -1;

	q = lab_run("query", NULL, 10000, "/usr/bin/curl", "-s", "--max-time", "2", "-G",
		    lab_fmt("http://127.0.0.1:%d/api/v1/query", port), "--data-urlencode",
		    "query=sum(twshim_connections_total)", NULL);
	j = json_loads(lab_stdout(q), 0, NULL);
	v = json_array_get(json_object_get(json_array_get(json_object_get(
		json_object_get(j, "data"), "result"), 0), "value"), 1);
	if (json_is_string(v))
		n = atoll(json_string_value(v));
	json_decref(j);
	return n;
}

/*
 * A real Prometheus scrapes the exporter every second; its HTTP API then
 * gives sum(twshim_connections_total) equal to the connections made, by
 * processes that have all exited by then.
 */
Test(exporter, prometheus_scrapes_the_connections_made, .timeout = 180)
{
	const char *dir, *log, *addr, *conf;
	struct lab_proc *srv, *e, *prom;
	int eport, pport;
	long long n = -1;

	need("/usr/bin/prometheus", "prometheus");
	need("/usr/bin/curl", "curl");
	lab_enter(1000);
	dir = stats_dir();
	log = lab_path("client.jsonl");
	addr = lab_addr4(lab_port());
	eport = lab_port();
	pport = lab_port();
	conf = lab_path("prometheus.yml");
	lab_write_file(conf, lab_fmt("global:\n  scrape_interval: 1s\n"
				     "scrape_configs:\n  - job_name: twshim\n"
				     "    static_configs:\n      - targets: ['127.0.0.1:%d']\n",
				     eport));
	srv = lab_start_server("server", NULL, lab_example("tw-server"), "--close", "last",
			       "-l", addr, NULL);
	e = lab_spawn("exporter", NULL, tool(), "exporter", "--listen",
		      lab_fmt("127.0.0.1:%d", eport), "--stats", dir, NULL);
	prom = lab_spawn("prometheus", NULL, "/usr/bin/prometheus",
			 lab_fmt("--config.file=%s", conf),
			 lab_fmt("--storage.tsdb.path=%s", lab_path("tsdb")),
			 lab_fmt("--web.listen-address=127.0.0.1:%d", pport), NULL);
	traffic("client1", dir, log, NULL, addr, 30);
	traffic("client2", dir, log, NULL, addr, 25);
	for (int i = 0; i < 120 && n != 55; i++) {
		lab_sleep_ms(500);
		n = prom_sum(pport);
	}
	cr_expect_eq(n, 55, "Prometheus says %lld; prometheus: %s", n, lab_stderr(prom));
	cr_expect_eq(files_in(dir), 0, "the exited clients' files are folded and removed");
	cr_assert_eq(lab_stop(prom, 10000), 0, "%s", lab_stderr(prom));
	cr_assert_eq(lab_stop(e, 5000), 0, "%s", lab_stderr(e));
	cr_assert_eq(lab_stop(srv, 5000), 0, "%s", lab_stderr(srv));
}

/*
 * --textfile with --interval: the file is replaced whole each time, the
 * exited processes' files are folded, and the total only grows.
 */
Test(exporter, textfile_totals_survive_the_processes, .timeout = 90)
{
	const char *dir, *log, *addr, *out;
	struct lab_proc *srv, *e;
	long long n = -1;
	char *text;

	lab_enter(1000);
	dir = stats_dir();
	log = lab_path("client.jsonl");
	out = lab_path("twshim.prom");
	addr = lab_addr4(lab_port());
	srv = lab_start_server("server", NULL, lab_example("tw-server"), "--close", "last",
			       "-l", addr, NULL);
	e = lab_spawn("exporter", NULL, tool(), "exporter", "--textfile", out, "--interval", "1",
		      "--stats", dir, NULL);
	traffic("client1", dir, log, NULL, addr, 10);
	for (int i = 0; i < 100 && (n != 10 || files_in(dir)); i++) {
		lab_sleep_ms(100);
		n = connections(lab_read_file(out));
	}
	cr_assert_eq(n, 10, "%s", lab_read_file(out));
	cr_assert_eq(files_in(dir), 0);
	traffic("client2", dir, log, NULL, addr, 7);
	for (int i = 0; i < 100 && n != 17; i++) {
		lab_sleep_ms(100);
		text = lab_read_file(out);
		cr_assert_geq(connections(text), 10, "never backwards:\n%s", text);
		n = connections(text);
	}
	cr_expect_eq(n, 17);
	cr_expect_eq(metric(lab_read_file(out), "twshim_deferred_connections{comm=\"tw-client\"}"),
		     0);
	cr_assert_eq(lab_stop(e, 5000), 0, "%s", lab_stderr(e));
	cr_assert_eq(lab_stop(srv, 5000), 0, "%s", lab_stderr(srv));
}

Test(exporter, help_and_usage_errors)
{
	static const struct {
		const char *args[4];
		int code;
	} cases[] = {
		{ { "--help" }, 0 },
		{ { "--interval", "0", "--textfile", "/tmp/x" }, 2 },
		{ { "--interval", "5" }, 2 },
		{ { "--listen", "nowhere" }, 2 },
		{ { "--listen", "127.0.0.1:1", "--textfile", "/tmp/x" }, 2 },
		{ { "--bogus" }, 2 },
	};

	lab_enter(100);
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		char *argv[8] = { (char *)"twshim", (char *)"exporter" };
		struct lab_proc *p;
		int k;

		for (k = 0; k < 4 && cases[i].args[k]; k++)
			argv[2 + k] = (char *)cases[i].args[k];
		argv[2 + k] = NULL;
		p = lab_spawnv(lab_fmt("case%zu", i), NULL, tool(), argv);
		cr_expect_eq(lab_wait(p, 5000), cases[i].code, "%s: %s", cases[i].args[0],
			     lab_stderr(p));
	}
}
