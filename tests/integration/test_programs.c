// SPDX-License-Identifier: MIT
/*
 * Real programs from Debian packages, which twshim must serve without a
 * change: nginx (master and workers), curl, redis-server with
 * redis-benchmark, and the Python interpreter as client and server; and the
 * ways programs reach the library or escape it: a preloaded shell,
 * /etc/ld.so.preload (in a private mount namespace: the real file is never
 * touched), posix_spawn, vfork and system() children, static binaries and
 * Go programs.
 *
 * Each test runs in a network namespace of its own with tcp_tw_reuse=0 and
 * asserts what the programs report, what the kernel holds (sock_diag) and
 * the records. A program that is not installed skips its test with the
 * package to install.
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "diag.h"
#include "lab.h"
#include "record.h"

#define RUN_MS	60000

/* The first of the paths that is an executable file, or skips the test naming pkg. */
static const char *need_program(const char *pkg, const char *a, const char *b)
{
	if (a && access(a, X_OK) == 0)
		return a;
	if (b && access(b, X_OK) == 0)
		return b;
	cr_skip_test("%s is not installed (Debian package %s)", a, pkg);
	return NULL;
}

struct listen_ctx {
	int port;
	bool found;
};

static int listen_cb(const struct diag_sock *s, void *arg)
{
	struct listen_ctx *x = arg;

	if (s->local.port == x->port)
		x->found = true;
	return 0;
}

/*
 * Waits until something listens on port, as the kernel sees it: the
 * programs here do not print "listening PORT", and a probe connection would
 * leave a TIME_WAIT socket of its own.
 */
static void wait_listening(struct lab_proc *p, int port, int timeout_ms)
{
	for (int waited = 0;; waited += 10) {
		struct listen_ctx x = { .port = port };

		cr_assert_eq(diag_dump(1u << TW_LISTEN, listen_cb, &x), 0, "sock_diag dump");
		if (x.found)
			return;
		cr_assert(lab_running(p), "%s exited (status %d) before listening on %d:\n%s%s",
			  p->name, lab_exit_code(p), port, lab_stdout(p), lab_stderr(p));
		cr_assert(waited < timeout_ms, "%s does not listen on %d after %d ms:\n%s",
			  p->name, port, timeout_ms, lab_stderr(p));
		lab_sleep_ms(10);
	}
}

static size_t count_substr(const char *text, const char *needle)
{
	size_t n = 0;

	for (const char *p = text; (p = strstr(p, needle)); p += strlen(needle))
		n++;
	return n;
}

/* -- nginx ---------------------------------------------------------------- */

/*
 * An nginx configuration in the scratch directory: master and 2 workers in
 * the foreground, everything it writes under dir, answering "hello" on
 * 127.0.0.1:port. keepalive is the keepalive_timeout directive's value.
 */
static const char *nginx_conf(const char *name, int port, const char *keepalive)
{
	const char *dir = lab_path(name), *conf = lab_fmt("%s/nginx.conf", dir);

	cr_assert(mkdir(dir, 0755) == 0, "mkdir %s: %s", dir, strerror(errno));
	lab_write_file(conf, lab_fmt(
		"daemon off;\n"
		"master_process on;\n"
		"worker_processes 2;\n"
		"user root;\n"
		"pid %1$s/nginx.pid;\n"
		"error_log %1$s/error.log notice;\n"
		"events { worker_connections 1024; }\n"
		"http {\n"
		"  access_log %1$s/access.log;\n"
		"  client_body_temp_path %1$s/body;\n"
		"  proxy_temp_path %1$s/proxy;\n"
		"  fastcgi_temp_path %1$s/fastcgi;\n"
		"  uwsgi_temp_path %1$s/uwsgi;\n"
		"  scgi_temp_path %1$s/scgi;\n"
		"  keepalive_timeout %2$s;\n"
		"  server {\n"
		"    listen 127.0.0.1:%3$d;\n"
		"    location / { default_type text/plain; return 200 \"hello\\n\"; }\n"
		"  }\n"
		"}\n", dir, keepalive, port));
	return conf;
}

static struct lab_proc *nginx_start(const char *name, const struct lab_opts *o, int port,
				    const char *keepalive)
{
	const char *nginx = need_program("nginx", "/usr/sbin/nginx", NULL);
	const char *conf = nginx_conf(name, port, keepalive);
	struct lab_proc *p;

	p = lab_spawn(name, o, nginx, "-p", lab_path(name), "-c", conf, "-e",
		      lab_fmt("%s/error.log", lab_path(name)), NULL);
	wait_listening(p, port, 5000);
	return p;
}

/* One curl run fetching the page n times; each fetch is its own connection. */
static struct lab_proc *curl_many(const char *name, int port, int n)
{
	const char *curl = need_program("curl", "/usr/bin/curl", NULL);
	const char *cfg = lab_path(lab_fmt("%s.curlrc", name));
	FILE *f = fopen(cfg, "we");

	cr_assert(f);
	fprintf(f, "silent\nshow-error\nmax-time = 10\nwrite-out = \"code=%%{http_code}\\n\"\n");
	for (int i = 0; i < n; i++)
		fprintf(f, "url = \"http://127.0.0.1:%d/\"\n", port);
	fclose(f);
	return lab_run(name, NULL, RUN_MS, curl, "-q", "-K", cfg, NULL);
}

/*
 * nginx with keepalive_timeout 0 closes each connection right after its
 * reply, racing curl's own close: normally most of the TIME_WAIT stays on the
 * server. Under defer every server close waits for the client's FIN, and
 * every TIME_WAIT lands on the client.
 */
Test(programs, nginx_keepalive_off_under_defer_moves_timewait_to_the_clients, .timeout = 90)
{
	const int n = 150;
	const char *nlog, *dlog;
	struct lab_proc *sn, *sd, *c;
	struct lab_tw_diff diff;
	struct lab_tw tw;
	json_t *recs;
	char *out;
	int pn, pd;

	lab_enter(1000);
	nlog = lab_path("normal.jsonl");
	dlog = lab_path("defer.jsonl");
	pn = lab_port();
	pd = lab_port();
	sn = nginx_start("nginx-normal", lab_traced(nlog, "close=normal"), pn, "0");
	sd = nginx_start("nginx-defer", lab_traced(dlog, "close=defer"), pd, "0");

	c = curl_many("curl-normal", pn, n);
	out = lab_stdout(c);
	cr_assert_eq(lab_exit_code(c), 0, "curl: %s%s", out, lab_stderr(c));
	cr_assert_eq(count_substr(out, "hello\ncode=200\n"), (size_t)n, "curl: %s", out);
	c = curl_many("curl-defer", pd, n);
	out = lab_stdout(c);
	cr_assert_eq(lab_exit_code(c), 0, "curl: %s%s", out, lab_stderr(c));
	cr_assert_eq(count_substr(out, "hello\ncode=200\n"), (size_t)n, "curl: %s", out);

	/* without the policy the server holds TIME_WAIT, and the records say so */
	recs = lab_records_wait(nlog, "", n, 5000);
	lab_records_check(recs);
	lab_rec_assert_count(recs, "role=server,policy=normal", n);
	lab_tw_count(&tw, pn);
	cr_assert_gt(tw.server, 0, "nginx never closed first: the control shows nothing");
	/*
	 * Every server-side TIME_WAIT socket has its record. A few records
	 * may have lost theirs since: a server-side TIME_WAIT ends early when
	 * the client resets it or a SYN from the same port recycles it.
	 */
	lab_tw_match(&diff, recs, LAB_TW_SERVER, pn, NULL);
	cr_assert_leq((size_t)tw.server, lab_rec_count(recs, "tw=local"),
		      "server-side TIME_WAIT %ld, records with tw=local: %zu\n(%s)\n%s", tw.server,
		      lab_rec_count(recs, "tw=local"), lab_rec_summary(recs), diff.text);
	cr_assert_geq((size_t)tw.server * 10, lab_rec_count(recs, "tw=local") * 9,
		      "server-side TIME_WAIT %ld, records with tw=local: %zu\n(%s)\n%s", tw.server,
		      lab_rec_count(recs, "tw=local"), lab_rec_summary(recs), diff.text);
	cr_assert_eq(diff.orphans, 0, "%s", diff.text);

	/* under defer: none on the server, all n on the clients */
	recs = lab_records_wait_expect(dlog, n, "comm=nginx,role=server,policy=defer,"
				       "end=passive,tw=peer,via=close,!timeout", 5000);
	/* the workers serve, not the master */
	lab_rec_assert_count(recs, lab_fmt("pid=%d", sd->pid), 0);
	lab_tw_count(&tw, pd);
	cr_assert_eq(tw.server, 0, "server-side TIME_WAIT under defer: %ld", tw.server);
	cr_assert_eq(tw.client, n, "client-side TIME_WAIT under defer: %ld", tw.client);

	cr_assert_eq(lab_stop(sn, 5000), 0, "nginx: %s", lab_stderr(sn));
	cr_assert_eq(lab_stop(sd, 5000), 0, "nginx: %s", lab_stderr(sd));
	cr_assert_eq(count_substr(lab_read_file(lab_fmt("%s/access.log", lab_path("nginx-defer"))),
				  "\" 200 "), (size_t)n, "access log");
}

/* -- curl ----------------------------------------------------------------- */

/*
 * The server for curl: nginx keeping each connection open 20 ms after its
 * reply (keepalive_timeout 20ms), then closing it. A curl run exits at once,
 * closing first: without the library one client-side TIME_WAIT per run.
 */
Test(programs, curl_runs_without_twshim_fail_once_100_ports_are_spent, .timeout = 90)
{
	struct lab_proc *s, *c = NULL;
	struct lab_tw tw;
	int port, i, rc = 0;

	lab_enter(100);
	port = lab_port();
	s = nginx_start("nginx", NULL, port, "20ms");
	for (i = 0; i < 110; i++) {
		c = lab_run("curl", NULL, RUN_MS, need_program("curl", "/usr/bin/curl", NULL),
			    "-sS", "--max-time", "5", lab_fmt("http://127.0.0.1:%d/", port), NULL);
		rc = lab_exit_code(c);
		if (rc != 0)
			break;
	}
	cr_assert_eq(i, 100, "curl run %d failed (expected the first 100 to succeed): %s", i + 1,
		     lab_stderr(c));
	/* 7: couldn't connect (EADDRNOTAVAIL: every port is in TIME_WAIT) */
	cr_assert_eq(rc, 7, "curl run 101 exit code %d: %s", rc, lab_stderr(c));
	lab_tw_count(&tw, port);
	cr_assert_eq(tw.client, 100, "client-side TIME_WAIT: %ld", tw.client);
	lab_stop(s, 5000);
}

Test(programs, curl_runs_under_defer_all_succeed_with_100_ports, .timeout = 120)
{
	const int runs = 200;
	const char *log, *curl = need_program("curl", "/usr/bin/curl", NULL);
	struct lab_proc *s, *c;
	struct lab_tw tw;
	json_t *recs, *pids;
	int port;

	lab_enter(100);
	/*
	 * ASan's runtime preloaded into curl deadlocks in curl's setlocale()
	 * before main does anything (gcc 12's libasan, curl 7.88; the library
	 * plays no part): under make asan the library goes in alone, still
	 * checked, curl's own allocations not.
	 */
	if (getenv("TWSHIM_TEST_PRELOAD") && strstr(getenv("TWSHIM_TEST_PRELOAD"), "libasan"))
		unsetenv("TWSHIM_TEST_PRELOAD");
	log = lab_path("curl.jsonl");
	port = lab_port();
	s = nginx_start("nginx", NULL, port, "20ms");
	pids = json_object();
	for (int i = 0; i < runs; i++) {
		c = lab_run("curl", lab_traced(log, "close=defer"), RUN_MS, curl, "-sS",
			    "--max-time", "5", lab_fmt("http://127.0.0.1:%d/", port), NULL);
		cr_assert_eq(lab_exit_code(c), 0, "curl run %d: exit %d: %s", i + 1,
			     lab_exit_code(c), lab_stderr(c));
		cr_assert_str_eq(lab_stdout(c), "hello\n", "curl run %d", i + 1);
		json_object_set_new(pids, lab_fmt("%d", c->pid), json_true());
	}
	lab_tw_count(&tw, port);
	cr_assert_eq(tw.client, 0, "client-side TIME_WAIT: %ld", tw.client);

	recs = lab_records_checked(log);
	lab_rec_assert_count(recs, "", runs);
	lab_rec_assert_all(recs, "", "comm=curl,role=client,policy=defer,end=passive,tw=peer,"
			   "!timeout");
	/* one record from each run */
	for (size_t i = 0; i < json_array_size(recs); i++) {
		const char *pid = lab_fmt("%lld", (long long)json_integer_value(
			json_object_get(json_array_get(recs, i), "pid")));

		cr_assert(json_object_get(pids, pid), "record from pid %s, not a curl run", pid);
		json_object_del(pids, pid);
	}
	cr_assert_eq(json_object_size(pids), 0, "runs without a record: %zu",
		     json_object_size(pids));
	lab_stop(s, 5000);
}

/* -- redis ---------------------------------------------------------------- */

static struct lab_proc *redis_start(const struct lab_opts *o, int port)
{
	const char *redis = need_program("redis-server", "/usr/bin/redis-server", NULL);
	struct lab_proc *p;

	p = lab_spawn("redis-server", o, redis, "--port", lab_fmt("%d", port), "--bind",
		      "127.0.0.1", "--save", "", "--appendonly", "no", "--daemonize", "no",
		      "--dir", lab_dir(), NULL);
	wait_listening(p, port, 5000);
	return p;
}

/* redis-benchmark reconnecting for each request (-k 0): n SETs and n GETs */
static struct lab_proc *benchmark(const struct lab_opts *o, int port, int n)
{
	const char *bench = need_program("redis-tools", "/usr/bin/redis-benchmark", NULL);

	return lab_run("redis-benchmark", o, RUN_MS, bench, "-p", lab_fmt("%d", port), "-n",
		       lab_fmt("%d", n), "-c", "4", "-k", "0", "-t", "set,get", "-q", NULL);
}

Test(programs, redis_benchmark_reconnecting_without_twshim_runs_out_of_ports, .timeout = 60)
{
	struct lab_proc *s, *b;
	struct lab_tw tw;
	char *out;
	int port;

	lab_enter(100);
	port = lab_port();
	s = redis_start(NULL, port);
	b = benchmark(NULL, port, 500);
	out = (char *)lab_fmt("%s%s", lab_stdout(b), lab_stderr(b));
	cr_assert(strstr(out, "Cannot assign requested address"),
		  "redis-benchmark did not run out of ports: %s", out);
	/* a few of the 100 ports may still be held by connections open at the failure */
	lab_tw_count(&tw, port);
	cr_assert_geq(tw.client, 90, "client-side TIME_WAIT: %ld", tw.client);
	lab_stop(s, 5000);
}

Test(programs, redis_benchmark_reconnecting_under_abort_leaves_no_timewait, .timeout = 60)
{
	const char *slog, *clog;
	struct lab_proc *s, *b;
	json_t *crecs;
	size_t nc;
	char *out;
	int port;

	lab_enter(100);
	slog = lab_path("server.jsonl");
	clog = lab_path("benchmark.jsonl");
	port = lab_port();
	s = redis_start(lab_traced(slog, NULL), port);
	b = benchmark(lab_traced(clog, "close=abort"), port, 500);
	out = (char *)lab_fmt("%s%s", lab_stdout(b), lab_stderr(b));
	cr_assert_eq(lab_exit_code(b), 0, "redis-benchmark: %s", out);
	cr_assert(strstr(out, "SET: ") && strstr(out, "GET: "), "no results: %s", out);
	cr_assert(!strstr(out, "rror") && !strstr(out, "Could not connect") &&
		  !strstr(out, "reset"), "redis-benchmark reported an error: %s", out);
	cr_assert_eq(lab_tw_total(), 0, "TIME_WAIT sockets: %ld", lab_tw_total());

	crecs = lab_records_checked(clog);
	nc = json_array_size(crecs);
	cr_assert_geq(nc, 1000, "benchmark records: %zu", nc);
	lab_rec_assert_all(crecs, "", "comm=redis-benchmark,role=client,policy=abort,end=abort,"
			   "tw=none,!timeout");
	/* the server saw each of those connections once */
	json_decref(lab_records_wait_expect(slog, nc, "comm=redis-server,role=server,"
					    "policy=normal,tw=none", 5000));
	lab_stop(s, 5000);
}

/* -- Python --------------------------------------------------------------- */

/*
 * One script, both sides:
 *   server PORT first N  serve N connections one by one: read a line, reply,
 *                        close at once (first)
 *   server PORT idle     a thread per connection: reply, then close after the
 *                        client's EOF or 20 ms of silence; until SIGTERM
 *   server PORT reset N  as first, with SO_LINGER {1,0} set on the listener:
 *                        every accepted socket inherits it, every close resets
 *   server PORT oob      as idle, replying `hello`, an urgent byte, `more`
 *   client PORT N [MODE] N connections: a line, the reply, close first; stops
 *                        at the first error. MODE reset: SO_LINGER {1,0} set
 *                        before connect; dup: the socket dup'ed before connect,
 *                        which closes the first fd and goes on with the copy;
 *                        oob: reads `hello` only, leaving the rest unread
 *   pending PORT N       a listener whose queue one connection fills, then N
 *                        non-blocking connects to it, each closed while its
 *                        SYN waits (the kernel drops it: the queue is full),
 *                        every second one shut down first
 */
static const char py_script[] =
"import errno, socket, struct, sys, threading, time\n"
"LINGER0 = struct.pack('ii', 1, 0)\n"
"def serve(c, idle, oob=False):\n"
"    c.settimeout(5)\n"
"    buf = b''\n"
"    while b'\\n' not in buf:\n"
"        d = c.recv(4096)\n"
"        if not d:\n"
"            break\n"
"        buf += d\n"
"    if oob:\n"
"        c.sendall(b'hello')\n"
"        c.send(b'!', socket.MSG_OOB)\n"
"        c.sendall(b'more\\n')\n"
"    else:\n"
"        c.sendall(b'pong\\n')\n"
"    if idle:\n"
"        c.settimeout(0.02)\n"
"        try:\n"
"            while c.recv(4096):\n"
"                pass\n"
"        except (socket.timeout, OSError):\n"
"            pass\n"
"    c.close()\n"
"def server(port, mode, n):\n"
"    ls = socket.socket(socket.AF_INET, socket.SOCK_STREAM)\n"
"    ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n"
"    if mode == 'reset':\n"
"        ls.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, LINGER0)\n"
"    ls.bind(('127.0.0.1', port))\n"
"    ls.listen(1024)\n"
"    print('listening', port, flush=True)\n"
"    served = 0\n"
"    while n == 0 or served < n:\n"
"        c, _ = ls.accept()\n"
"        served += 1\n"
"        if mode in ('idle', 'oob'):\n"
"            threading.Thread(target=serve, args=(c, True, mode == 'oob'),\n"
"                             daemon=True).start()\n"
"        else:\n"
"            serve(c, False)\n"
"    ls.close()\n"
"    print('served=%d' % served, flush=True)\n"
"def client(port, n, mode):\n"
"    ok, err, at = 0, '', 0\n"
"    for i in range(n):\n"
"        try:\n"
"            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)\n"
"            if mode == 'reset':\n"
"                s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, LINGER0)\n"
"            s.settimeout(5)\n"
"            d = s.dup() if mode == 'dup' else None\n"
"            s.connect(('127.0.0.1', port))\n"
"            if d:\n"
"                s.close()\n"
"                s = d\n"
"            s.sendall(b'ping\\n')\n"
"            if mode == 'oob':\n"
"                time.sleep(0.05)\n"
"                if s.recv(5) != b'hello':\n"
"                    raise OSError(errno.EPROTO, 'no hello')\n"
"                s.close()\n"
"                ok += 1\n"
"                continue\n"
"            buf = b''\n"
"            while b'\\n' not in buf:\n"
"                d = s.recv(4096)\n"
"                if not d:\n"
"                    raise OSError(errno.ECONNRESET, 'early EOF')\n"
"                buf += d\n"
"            s.close()\n"
"            ok += 1\n"
"        except OSError as e:\n"
"            err, at = errno.errorcode.get(e.errno, str(e.errno)), i + 1\n"
"            break\n"
"    print('ok=%d first_error=%s first_error_conn=%d' % (ok, err, at), flush=True)\n"
"    sys.exit(0 if ok == n else 1)\n"
"def pending(port, n):\n"
"    ls = socket.socket(socket.AF_INET, socket.SOCK_STREAM)\n"
"    ls.bind(('127.0.0.1', port))\n"
"    ls.listen(0)\n"
"    filler = socket.create_connection(('127.0.0.1', port), timeout=5)\n"
"    waiting = 0\n"
"    for i in range(n):\n"
"        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)\n"
"        s.setblocking(False)\n"
"        if s.connect_ex(('127.0.0.1', port)) == errno.EINPROGRESS:\n"
"            waiting += 1\n"
"        time.sleep(0.005)\n"
"        if i % 2:\n"
"            s.shutdown(socket.SHUT_RDWR)\n"
"        s.close()\n"
"    print('waiting=%d' % waiting, flush=True)\n"
"if sys.argv[1] == 'pending':\n"
"    pending(int(sys.argv[2]), int(sys.argv[3]))\n"
"elif sys.argv[1] == 'server':\n"
"    server(int(sys.argv[2]), sys.argv[3], int(sys.argv[4]) if len(sys.argv) > 4 else 0)\n"
"else:\n"
"    client(int(sys.argv[2]), int(sys.argv[3]), sys.argv[4] if len(sys.argv) > 4 else '')\n";

static const char *python(void)
{
	return need_program("python3", "/usr/bin/python3", NULL);
}

static const char *py_path(void)
{
	const char *p = lab_path("tw.py");

	lab_write_file(p, py_script);
	return p;
}

/*
 * A Python server that closes right after its reply; under defer its close
 * waits for the Python client's, which reads the reply and closes: every
 * TIME_WAIT is the client's, and both interpreters record every connection.
 */
Test(programs, python_server_under_defer_leaves_timewait_with_the_python_client,
     .timeout = 60)
{
	const int n = 100;
	const char *slog, *clog, *py = python(), *script;
	struct lab_proc *s, *c;
	struct lab_tw tw;
	json_t *recs;
	int port;

	lab_enter(1000);
	script = py_path();
	slog = lab_path("server.jsonl");
	clog = lab_path("client.jsonl");
	port = lab_port();
	s = lab_start_server("py-server", lab_traced(slog, "close=defer"), py, script, "server",
			     lab_fmt("%d", port), "first", lab_fmt("%d", n), NULL);
	c = lab_run("py-client", lab_traced(clog, NULL), RUN_MS, py, script, "client",
		    lab_fmt("%d", port), lab_fmt("%d", n), NULL);
	cr_assert_eq(lab_exit_code(c), 0, "client: %s%s", lab_stdout(c), lab_stderr(c));
	cr_assert_eq(lab_value_long(lab_stdout(c), "ok"), n, "client: %s", lab_stdout(c));
	cr_assert_eq(lab_wait(s, 10000), 0, "server: %s%s", lab_stdout(s), lab_stderr(s));
	cr_assert_eq(lab_value_long(lab_stdout(s), "served"), n, "server: %s", lab_stdout(s));

	lab_tw_count(&tw, port);
	cr_assert_eq(tw.server, 0, "server-side TIME_WAIT: %ld", tw.server);
	cr_assert_eq(tw.client, n, "client-side TIME_WAIT: %ld", tw.client);
	recs = lab_records_checked(slog);
	lab_rec_assert_count(recs, "", n);
	lab_rec_assert_all(recs, "", lab_fmt("pid=%d,role=server,policy=defer,end=passive,"
					     "tw=peer,!timeout", s->pid));
	recs = lab_records_checked(clog);
	lab_rec_assert_count(recs, "", n);
	lab_rec_assert_all(recs, "", lab_fmt("pid=%d,role=client,policy=normal,end=active,"
					     "tw=local", c->pid));
}

/*
 * A Python client closing first runs out of 100 ports at connection 101;
 * under defer (its close waits for the server's, 20 ms later) 300 in a row
 * succeed. The deferred run goes to another server port: the ports the first
 * run left in TIME_WAIT are free for another 4-tuple.
 */
Test(programs, python_client_under_defer_completes_300_with_100_ports, .timeout = 90)
{
	const char *log, *py = python(), *script;
	struct lab_proc *s1, *s2, *c;
	struct lab_tw tw;
	json_t *recs;
	char err[64];
	int p1, p2;

	lab_enter(100);
	script = py_path();
	log = lab_path("client.jsonl");
	p1 = lab_port();
	p2 = lab_port();
	s1 = lab_start_server("py-server", NULL, py, script, "server", lab_fmt("%d", p1), "idle",
			      NULL);
	s2 = lab_start_server("py-server", NULL, py, script, "server", lab_fmt("%d", p2), "idle",
			      NULL);

	c = lab_run("py-plain", NULL, RUN_MS, py, script, "client", lab_fmt("%d", p1), "300",
		    NULL);
	cr_assert_eq(lab_value_long(lab_stdout(c), "ok"), 100, "client: %s%s", lab_stdout(c),
		     lab_stderr(c));
	lab_value_str(lab_stdout(c), "first_error", err, sizeof(err));
	cr_assert_str_eq(err, "EADDRNOTAVAIL", "client: %s", lab_stdout(c));

	c = lab_run("py-defer", lab_traced(log, "close=defer"), RUN_MS, py, script, "client",
		    lab_fmt("%d", p2), "300", NULL);
	cr_assert_eq(lab_exit_code(c), 0, "client: %s%s", lab_stdout(c), lab_stderr(c));
	cr_assert_eq(lab_value_long(lab_stdout(c), "ok"), 300, "client: %s", lab_stdout(c));
	lab_tw_count(&tw, p2);
	cr_assert_eq(tw.client, 0, "client-side TIME_WAIT under defer: %ld", tw.client);
	recs = lab_records_checked(log);
	lab_rec_assert_count(recs, "", 300);
	lab_rec_assert_all(recs, "", lab_fmt("pid=%d,comm=python3,role=client,policy=defer,"
					     "end=passive,tw=peer,!timeout", c->pid));
	lab_stop(s1, 5000);
	lab_stop(s2, 5000);
}

/*
 * SO_LINGER {1,0} set where no connection exists yet: on the listener (the
 * accepted sockets inherit it) and on a client's socket before connect. Each
 * close is the program's own reset: recorded as abort, no TIME_WAIT
 * anywhere, and not deferred (the program asked for a reset).
 */
Test(programs, python_linger0_on_listener_and_before_connect_is_abort, .timeout = 60)
{
	const int n = 20;
	const char *slog, *clog, *py = python(), *script;
	struct lab_proc *s, *c;
	json_t *recs;
	int p1, p2;

	lab_enter(1000);
	script = py_path();
	slog = lab_path("server.jsonl");
	clog = lab_path("client.jsonl");
	p1 = lab_port();
	p2 = lab_port();

	s = lab_start_server("py-server", lab_traced(slog, "close=defer"), py, script, "server",
			     lab_fmt("%d", p1), "reset", lab_fmt("%d", n), NULL);
	c = lab_run("py-client", NULL, RUN_MS, py, script, "client", lab_fmt("%d", p1),
		    lab_fmt("%d", n), NULL);
	cr_assert_eq(lab_wait(s, 10000), 0, "server: %s%s", lab_stdout(s), lab_stderr(s));
	cr_assert_eq(lab_value_long(lab_stdout(s), "served"), n, "server: %s", lab_stdout(s));
	recs = lab_records_checked(slog);
	lab_rec_assert_count(recs, "", n);
	lab_rec_assert_all(recs, "", lab_fmt("pid=%d,role=server,policy=normal,why=linger,"
					     "end=abort,tw=none", s->pid));

	s = lab_start_server("py-server", NULL, py, script, "server", lab_fmt("%d", p2), "idle",
			     NULL);
	c = lab_run("py-client", lab_traced(clog, NULL), RUN_MS, py, script, "client",
		    lab_fmt("%d", p2), lab_fmt("%d", n), "reset", NULL);
	cr_assert_eq(lab_exit_code(c), 0, "client: %s%s", lab_stdout(c), lab_stderr(c));
	recs = lab_records_checked(clog);
	lab_rec_assert_count(recs, "", n);
	lab_rec_assert_all(recs, "", lab_fmt("pid=%d,role=client,policy=normal,state=ESTABLISHED,"
					     "end=abort,tw=none", c->pid));
	cr_assert_eq(lab_tw_total(), 0, "TIME_WAIT after resets: %ld", lab_tw_total());
	lab_stop(s, 5000);
}

/*
 * A connect given up while its SYN is unanswered never came up: no FIN, no
 * TIME_WAIT. Recorded as a reset in SYN_SENT (a shutdown in SYN_SENT only
 * disconnects, which once read as a passive close).
 */
Test(programs, python_close_during_connect_is_a_reset, .timeout = 60)
{
	const int n = 10;
	const char *log, *py = python(), *script;
	struct lab_proc *c;
	json_t *recs;

	lab_enter(1000);
	script = py_path();
	log = lab_path("client.jsonl");
	c = lab_run("py-pending", lab_traced(log, NULL), RUN_MS, py, script, "pending",
		    lab_fmt("%d", lab_port()), lab_fmt("%d", n), NULL);
	cr_assert_eq(lab_exit_code(c), 0, "client: %s%s", lab_stdout(c), lab_stderr(c));
	cr_assert_eq(lab_value_long(lab_stdout(c), "waiting"), n, "client: %s", lab_stdout(c));
	recs = lab_records_checked(log);
	/* and the connection that filled the queue, ended at exit */
	lab_rec_assert_count(recs, "", n + 1);
	lab_rec_assert_count(recs, "state=SYN_SENT,role=client,end=reset,tw=none,bytes_acked=0",
			     n);
	/* the program's own shutdown in SYN_SENT gives the connect up just the same */
	lab_rec_assert_count(recs, "state=SYN_SENT,via=shutdown", n / 2);
}

/* A Python server in one mode and the Python client in another, the client traced. */
struct py_run {
	struct lab_proc *s, *c;
	int port;
	json_t *recs;	/* the client's records, checked */
};

static void py_pair(struct py_run *r, const char *server_mode, const char *client_mode, int n)
{
	const char *log, *py = python(), *script;

	lab_enter(1000);
	script = py_path();
	log = lab_path("client.jsonl");
	r->port = lab_port();
	r->s = lab_start_server("py-server", NULL, py, script, "server", lab_fmt("%d", r->port),
				server_mode, NULL);
	r->c = lab_run("py-client", lab_traced(log, NULL), RUN_MS, py, script, "client",
		       lab_fmt("%d", r->port), lab_fmt("%d", n), client_mode, NULL);
	cr_assert_eq(lab_exit_code(r->c), 0, "client: %s%s", lab_stdout(r->c), lab_stderr(r->c));
	r->recs = lab_records_checked(log);
	lab_rec_assert_count(r->recs, "", (size_t)n);
}

/*
 * A socket dup'ed before connect has two fds: closing the one that
 * connected must not end the connection (no FIN from the library: the copy
 * goes on talking), and the close of the copy records it, once.
 */
Test(programs, python_socket_dup_before_connect_keeps_its_copy, .timeout = 60)
{
	const int n = 20;
	struct py_run r;
	struct lab_tw tw;

	py_pair(&r, "idle", "dup", n);
	lab_rec_assert_all(r.recs, "", lab_fmt("pid=%d,role=client,state=ESTABLISHED,end=active,"
					       "tw=local,via=close", r.c->pid));
	lab_tw_count(&tw, r.port);
	cr_assert_eq(tw.client, n, "client-side TIME_WAIT: %ld", tw.client);
	lab_stop(r.s, 5000);
}

/*
 * A close that leaves data unread, with an urgent byte among it, resets:
 * recorded as abort, and no TIME_WAIT anywhere.
 */
Test(programs, python_close_with_urgent_data_unread_is_abort, .timeout = 60)
{
	struct py_run r;

	py_pair(&r, "oob", "oob", 10);
	/* (the server may have closed by then: CLOSE_WAIT with data unread resets too) */
	lab_rec_assert_all(r.recs, "", lab_fmt("pid=%d,role=client,end=abort,tw=none", r.c->pid));
	cr_assert_eq(lab_tw_total(), 0, "TIME_WAIT after resets: %ld", lab_tw_total());
	lab_stop(r.s, 5000);
}

/* -- how programs reach the library ----------------------------------------- */

/* A tw-server that replies and closes 30 ms later: client closes are deferred for real. */
static struct lab_proc *late_closing_server(int port, int ms)
{
	return lab_start_server("server", NULL, lab_example("tw-server"), "-l", lab_addr4(port),
				"--close", "first", "--close-delay", lab_fmt("%d", ms),
				"--threads", "8", NULL);
}

/*
 * A shell started with the library preloaded passes LD_PRELOAD and the
 * settings on to what it runs: each program records its own connections,
 * the shell none.
 */
Test(programs, preloaded_shell_passes_the_library_to_the_programs_it_runs, .timeout = 60)
{
	const char *log, *cl = lab_example("tw-client");
	struct lab_proc *s, *sh;
	json_t *recs;
	int port;

	lab_enter(100);
	log = lab_path("tw-%p.jsonl");
	port = lab_port();
	s = late_closing_server(port, 30);
	sh = lab_run("sh", lab_traced(lab_path("all.jsonl"), "close=defer"), RUN_MS, "/bin/sh",
		     "-c", lab_fmt("'%1$s' -n 3 %2$s && '%1$s' -n 4 %2$s && '%1$s' -n 5 %2$s", cl,
				   lab_addr4(port)), NULL);
	cr_assert_eq(lab_exit_code(sh), 0, "sh: %s%s", lab_stdout(sh), lab_stderr(sh));
	(void)log;

	recs = lab_records_wait_expect(lab_path("all.jsonl"), 12, "comm=tw-client,role=client,"
				       "policy=defer,end=passive", 5000);
	/* three processes, 3, 4 and 5 connections each */
	{
		json_t *per = json_object();
		size_t seen3 = 0, seen4 = 0, seen5 = 0;
		const char *k;
		json_t *v;

		for (size_t i = 0; i < json_array_size(recs); i++) {
			const char *pid = lab_fmt("%lld", (long long)json_integer_value(
				json_object_get(json_array_get(recs, i), "pid")));
			json_t *n = json_object_get(per, pid);

			json_object_set_new(per, pid, json_integer(n ? json_integer_value(n) + 1
								       : 1));
		}
		json_object_foreach(per, k, v) {
			seen3 += json_integer_value(v) == 3;
			seen4 += json_integer_value(v) == 4;
			seen5 += json_integer_value(v) == 5;
		}
		cr_assert(json_object_size(per) == 3 && seen3 == 1 && seen4 == 1 && seen5 == 1,
			  "records per process: %s", json_dumps(per, JSON_COMPACT));
	}
	lab_stop(s, 5000);
}

/*
 * Children started with posix_spawn, vfork + exec and system() while a
 * connection is open, its close deferred right after: one record per
 * connection, from the parent; the children run normally.
 */
static void spawn_run(bool inherit)
{
	const int n = 10;
	const char *log, *prog;
	struct lab_proc *s, *c;
	struct lab_tw tw;
	json_t *recs;
	char *out;
	int port;

	lab_enter(100);
	prog = lab_test_program("tw-stress", RUN_MS);
	log = lab_path("client.jsonl");
	port = lab_port();
	s = late_closing_server(port, 50);
	c = lab_run("spawner", lab_traced(log, "close=defer,defer_ms=5000"), RUN_MS, prog, "spawn",
		    "-n", lab_fmt("%d", n), "--child-ms", inherit ? "300" : "0", "--sleep-end",
		    "1000", inherit ? "--inherit" : "--", lab_addr4(port), NULL);
	out = lab_stdout(c);
	cr_assert_eq(lab_exit_code(c), 0, "spawner: %s%s", out, lab_stderr(c));
	cr_assert_eq(lab_value_long(out, "ok"), n, "spawner: %s", out);
	cr_assert_eq(lab_value_long(out, "children_failed"), 0, "spawner: %s", out);
	cr_assert_eq(lab_value_long(out, "sockets_end"), 0, "spawner: %s", out);

	recs = lab_records_wait(log, "", n, 5000);
	lab_sleep_ms(500);
	recs = lab_records_checked(log);
	lab_rec_assert_count(recs, "", n);
	lab_rec_assert_all(recs, "", lab_fmt("pid=%d,role=client", c->pid));
	lab_tw_count(&tw, port);
	cr_assert_eq(tw.client, (long)lab_rec_count(recs, "tw=local"),
		     "client-side TIME_WAIT %ld\n(%s)", tw.client, lab_rec_summary(recs));
	lab_stop(s, 5000);
}

Test(programs, posix_spawn_vfork_and_system_children_leave_one_record_per_connection,
     .timeout = 60)
{
	spawn_run(false);
}

/*
 * The same with the socket inherited (no SOCK_CLOEXEC) by children that
 * outlive the parent's close: the connection has two holders, the parent's
 * close does not end it, and it must still be recorded once.
 */
Test(programs, spawned_children_inheriting_a_deferred_connection_record_it_once,
     .timeout = 60)
{
	spawn_run(true);
}

/*
 * /etc/ld.so.preload, without touching it: in a private mount namespace
 * (unshare -m) a directory holding only ld.so.cache and our ld.so.preload is
 * bind-mounted over /etc, and the client is exec'd there. The real
 * /etc/ld.so.preload is checked to be as it was.
 */
Test(programs, etc_ld_so_preload_in_a_private_mount_namespace_traces_a_program,
     .timeout = 60)
{
	const char *unshare = need_program("util-linux", "/usr/bin/unshare", NULL);
	const char *first = getenv("TWSHIM_TEST_PRELOAD");
	const char *etc, *log;
	char lib[PATH_MAX];
	struct stat before, after;
	bool had = stat("/etc/ld.so.preload", &before) == 0;
	struct lab_proc *s, *c;
	struct lab_opts o = { 0 };
	int port;

	need_program("mount", "/usr/bin/mount", "/bin/mount");
	lab_enter(100);
	log = lab_path("client.jsonl");
	port = lab_port();
	etc = lab_path("etc");
	cr_assert(mkdir(etc, 0755) == 0);
	cr_assert(realpath(lab_build_path("libtwshim.so"), lib), "libtwshim.so: %s",
		  strerror(errno));
	lab_write_file(lab_fmt("%s/ld.so.preload", etc),
		   lab_fmt("%s%s%s\n", first && *first ? first : "", first && *first ? " " : "",
			   lib));
	if (access("/etc/ld.so.cache", R_OK) == 0) {
		struct lab_proc *cp = lab_run("cp", NULL, RUN_MS, "/bin/cp", "/etc/ld.so.cache",
					      etc, NULL);

		cr_assert_eq(lab_exit_code(cp), 0, "cp: %s", lab_stderr(cp));
	}
	s = late_closing_server(port, 30);
	o.options = lab_fmt("log=%s,close=defer", log);
	c = lab_run("client", &o, RUN_MS, unshare, "-m", "--propagation", "private", "/bin/sh",
		    "-c", "mount --bind \"$0\" /etc && exec \"$@\"", etc,
		    lab_example("tw-client"), "-n", "5", lab_addr4(port), NULL);
	cr_assert_eq(lab_exit_code(c), 0, "client: %s%s", lab_stdout(c), lab_stderr(c));
	cr_assert_eq(lab_value_long(lab_stdout(c), "ok"), 5, "client: %s", lab_stdout(c));

	json_decref(lab_records_wait_expect(log, 5, "comm=tw-client,role=client,policy=defer,"
					    "end=passive", 5000));

	/* the machine's own file is as it was */
	if (had) {
		cr_assert(stat("/etc/ld.so.preload", &after) == 0, "/etc/ld.so.preload vanished");
		cr_assert(after.st_ino == before.st_ino && after.st_size == before.st_size &&
			  after.st_mtime == before.st_mtime, "/etc/ld.so.preload changed");
	} else {
		cr_assert(stat("/etc/ld.so.preload", &after) < 0, "/etc/ld.so.preload appeared");
	}
	lab_stop(s, 5000);
}

/*
 * A static binary has no dynamic loader: LD_PRELOAD does nothing. It must
 * run as without the library, and nothing is recorded. (tw-client, linked
 * with -static here.)
 */
Test(programs, static_binary_runs_untouched_and_unrecorded, .timeout = 90)
{
	const char *src = lab_source_dir(), *log, *bin;
	struct lab_proc *cc, *s, *c;
	struct lab_tw tw;
	int port;

	if (!src)
		cr_skip_test("no source tree to build the static client from");
	lab_enter(100);
	bin = lab_path("tw-client-static");
	cc = lab_run("cc", NULL, RUN_MS, "/bin/sh", "-c",
		     lab_fmt("exec ${CC:-cc} -std=gnu11 -D_GNU_SOURCE -O1 -static -o '%s' "
			     "-I'%s/examples/common' '%s/examples/tw-client.c' "
			     "'%s/examples/common/common.c' -lpthread", bin, src, src, src), NULL);
	if (lab_exit_code(cc) != 0)
		cr_skip_test("cannot link statically here (libc6-dev): %s", lab_stderr(cc));
	log = lab_path("client.jsonl");
	port = lab_port();
	s = late_closing_server(port, 30);
	c = lab_run("client", lab_traced(log, "close=defer"), RUN_MS, bin, "-n", "5",
		    lab_addr4(port), NULL);
	cr_assert_eq(lab_exit_code(c), 0, "client: %s%s", lab_stdout(c), lab_stderr(c));
	cr_assert_eq(lab_value_long(lab_stdout(c), "ok"), 5, "client: %s", lab_stdout(c));
	cr_assert(!strstr(lab_stderr(c), "twshim"), "stderr: %s", lab_stderr(c));
	/* nothing deferred: the client closed first, as it does without the library */
	lab_tw_count(&tw, port);
	cr_assert_eq(tw.client, 5, "client-side TIME_WAIT: %ld", tw.client);
	cr_assert_eq(access(log, F_OK), -1, "a static binary wrote records");
	lab_stop(s, 5000);
}

/* Go's runtime makes its socket calls itself: nothing is interposed, nothing breaks. */
static const char go_client[] =
"package main\n"
"import (\"bufio\"; \"fmt\"; \"net\"; \"os\")\n"
"func main() {\n"
"\tok := 0\n"
"\tfor i := 0; i < 5; i++ {\n"
"\t\tc, err := net.Dial(\"tcp\", os.Args[1])\n"
"\t\tif err != nil { fmt.Println(\"error\", err); os.Exit(1) }\n"
"\t\tfmt.Fprintf(c, \"req\\n\")\n"
"\t\tif _, err := bufio.NewReader(c).ReadString('\\n'); err != nil { os.Exit(1) }\n"
"\t\tc.Close()\n"
"\t\tok++\n"
"\t}\n"
"\tfmt.Printf(\"ok=%d\\n\", ok)\n"
"}\n";

Test(programs, go_program_runs_untouched_and_unrecorded, .timeout = 180)
{
	const char *go = need_program("golang-go", "/usr/bin/go", "/usr/lib/go/bin/go");
	const char *log, *bin, *src;
	struct lab_proc *b, *s, *c;
	struct lab_tw tw;
	int port;

	lab_enter(100);
	src = lab_path("main.go");
	bin = lab_path("go-client");
	lab_write_file(src, go_client);
	{
		const char *env[] = { lab_fmt("GOCACHE=%s", lab_path("gocache")),
				      lab_fmt("HOME=%s", lab_dir()), "GO111MODULE=off",
				      "GOFLAGS=", NULL };
		struct lab_opts o = { .env = env };

		b = lab_run("go-build", &o, 170000, go, "build", "-o", bin, src, NULL);
	}
	cr_assert_eq(lab_exit_code(b), 0, "go build: %s", lab_stderr(b));
	log = lab_path("client.jsonl");
	port = lab_port();
	s = late_closing_server(port, 30);
	c = lab_run("client", lab_traced(log, "close=defer"), RUN_MS, bin, lab_addr4(port), NULL);
	cr_assert_eq(lab_exit_code(c), 0, "client: %s%s", lab_stdout(c), lab_stderr(c));
	cr_assert_eq(lab_value_long(lab_stdout(c), "ok"), 5, "client: %s", lab_stdout(c));
	lab_tw_count(&tw, port);
	cr_assert_eq(tw.client, 5, "client-side TIME_WAIT: %ld", tw.client);
	cr_assert_eq(json_array_size(lab_records(log)), 0, "a Go program was recorded");
	lab_stop(s, 5000);
}
