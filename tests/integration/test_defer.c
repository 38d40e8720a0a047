// SPDX-License-Identifier: MIT
/*
 * Defer that pays off: a process that ends does not wait for its deferred
 * connections (the holder process does), peers that never close are learned,
 * and a connect never fails for a port the library holds.
 */
#include <criterion/criterion.h>
#include <dirent.h>
#include <fcntl.h>
#include <stddef.h>
#include <sys/stat.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "lab.h"
#include "stats.h"

#define RUN_MS	20000
/* long enough that a process waiting for it could not go unnoticed */
#define WAIT_MS	3000

static long mono_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1000L + ts.tv_nsec / 1000000;
}

/* a server that never closes first: it waits for the client's EOF (nginx keep-alive) */
static struct lab_proc *keepalive_server(void)
{
	return lab_start_server("server", NULL, lab_example("tw-server"), "--close", "last", "--threads", "8",
				"--timeout", "60000", "-l", lab_addr4(lab_port()), NULL);
}

/* Fails unless every fd of pid is a socket or log; returns the number of sockets. */
static int holder_sockets(int pid, const char *log)
{
	char path[64], link[PATH_MAX], fds[4096] = "";
	struct dirent *e;
	DIR *d;
	int socks = 0, logs = 0;

	snprintf(path, sizeof(path), "/proc/%d/fd", pid);
	d = opendir(path);
	cr_assert(d, "holder %d: %s", pid, path);
	while ((e = readdir(d))) {
		char fp[PATH_MAX];
		ssize_t l;

		if (e->d_name[0] == '.')
			continue;
		snprintf(fp, sizeof(fp), "%s/%s", path, e->d_name);
		l = readlink(fp, link, sizeof(link) - 1);
		if (l <= 0)
			continue;
		link[l] = 0;
		snprintf(fds + strlen(fds), sizeof(fds) - strlen(fds), " %.16s->%.200s", e->d_name,
			 link);
		if (!strncmp(link, "socket:[", 8))
			socks++;
		else if (!strcmp(link, log))
			logs++;
		else
			cr_assert_fail("holder %d keeps an fd that is not its own:%s", pid, fds);
	}
	closedir(d);
	/* the log is opened at the first record: the program may have written none */
	cr_assert_leq(logs, 1, "holder %d: the log at most once:%s", pid, fds);
	return socks;
}

/*
 * Short-lived clients against a server that never closes first: each ends
 * as fast as without the library, not exit_wait_ms later, also when its
 * connection is still open at exit and when a shell reads its output
 * through a pipe. The holder keeps the connections and the log only,
 * applies the fallback (abort: no TIME_WAIT anywhere) and writes one record
 * a connection, with the program's pid and comm.
 */
Test(defer, short_lived_client_against_keepalive_server_exits_at_once, .timeout = 90)
{
	const char *log, *opts, *client, *addr, *sh;
	struct lab_proc *srv, *p[3];
	int pids[8], n, socks = 0;
	long t[3];
	json_t *recs;

	lab_enter(100);
	srv = keepalive_server();
	addr = lab_addr4(srv->port);
	log = lab_path("client.jsonl");
	/* long enough that the first holder is still there after the third run */
	opts = lab_fmt("close=defer,fallback=abort,defer_ms=%d,exit_wait_ms=%d",
		       3 * WAIT_MS, 3 * WAIT_MS);
	client = lab_example("tw-client");
	sh = lab_fmt("%s %s | cat", client, addr);
	t[0] = mono_ms();
	p[0] = lab_run("closes", lab_traced(log, opts), RUN_MS, client, addr, NULL);
	t[0] = mono_ms() - t[0];
	t[1] = mono_ms();
	p[1] = lab_run("leaves_open", lab_traced(log, opts), RUN_MS, client, "--end", "exit",
		       addr, NULL);
	t[1] = mono_ms() - t[1];
	t[2] = mono_ms();
	p[2] = lab_run("piped", lab_traced(log, opts), RUN_MS, "/bin/sh", "-c", sh, NULL);
	t[2] = mono_ms() - t[2];
	for (int i = 0; i < 3; i++) {
		cr_assert_eq(lab_exit_code(p[i]), 0, "%s: %s%s", p[i]->name, lab_stdout(p[i]),
			     lab_stderr(p[i]));
		cr_assert_lt(t[i], 3 * WAIT_MS, "%s took %ld ms: it waited for exit_wait_ms",
			     p[i]->name, t[i]);
	}
	n = lab_holders(pids, 8);
	cr_assert_geq(n, 1, "no holder process in this namespace");
	for (int i = 0; i < n; i++)
		socks += holder_sockets(pids[i], log);
	cr_assert_eq(socks, 3, "the holders keep %d connections, want 3", socks);
	recs = lab_records_wait_expect(log, 3, "role=client,policy=defer,end=abort,tw=none,"
				       "timeout=true,held=true,comm=tw-client", RUN_MS);
	lab_rec_assert_count(recs, lab_fmt("pid=%d", p[0]->pid), 1);
	lab_rec_assert_count(recs, lab_fmt("pid=%d,via=exit", p[1]->pid), 1);
	lab_assert_tw(srv->port, 0, 0);
	cr_assert_eq(lab_tw_total(), 0, "TIME_WAIT somewhere");
	lab_sleep_ms(300);
	cr_assert_eq(lab_holders(pids, 8), 0, "a holder outlived its connections");
	json_decref(recs);
	lab_stop(srv, 5000);
}

/*
 * Against a server that closes 200 ms after its reply, the short-lived
 * client ends at once and the TIME_WAIT is still the server's: the holder
 * waited for the server's FIN.
 */
Test(defer, short_lived_client_against_closing_server_leaves_time_wait_to_it, .timeout = 60)
{
	const char *log = NULL;
	struct lab_proc *srv, *p;
	long t;

	lab_enter(100);
	srv = lab_start_server("server", NULL, lab_example("tw-server"), "--close-delay", "200",
			       "-l", lab_addr4(lab_port()), NULL);
	log = lab_path("client.jsonl");
	t = mono_ms();
	p = lab_run("client", lab_traced(log, lab_fmt("close=defer,defer_ms=%d,exit_wait_ms=%d",
						      WAIT_MS, WAIT_MS)),
		    RUN_MS, lab_example("tw-client"), lab_addr4(srv->port), NULL);
	t = mono_ms() - t;
	lab_assert_ok(p, 1);
	cr_assert_lt(t, WAIT_MS, "the client took %ld ms", t);
	json_decref(lab_records_wait_expect(log, 1, lab_fmt("pid=%d,end=passive,tw=peer,held=true,"
							    "!timeout", p->pid), RUN_MS));
	lab_assert_tw(srv->port, 0, 1);
	lab_stop(srv, 5000);
}

/*
 * An exec that fails with a deferred connection open returns at once, and
 * defer goes on working in the process: the next deferred close waits for
 * the peer's FIN as before (no timeout, passive).
 */
Test(defer, failed_exec_neither_waits_nor_turns_defer_off, .timeout = 60)
{
	struct lab_proc *never, *closing, *p;
	const char *log;
	json_t *recs;

	lab_enter(100);
	never = keepalive_server();
	closing = lab_start_server("closing", NULL, lab_example("tw-server"), "--close-delay",
				   "100", "-l", lab_addr4(lab_port()), NULL);
	log = lab_path("prog.jsonl");
	p = lab_run("prog", lab_traced(log, lab_fmt("close=defer,defer_ms=%d,exit_wait_ms=%d",
						    WAIT_MS, WAIT_MS)),
		    RUN_MS, lab_test_program("tw-defer", RUN_MS), "exec-fail",
		    lab_addr4(never->port), lab_addr4(closing->port), "--pause-ms", "1000", NULL);
	cr_assert_eq(lab_exit_code(p), 0, "%s%s", lab_stdout(p), lab_stderr(p));
	cr_assert_lt(lab_value_long(lab_stdout(p), "exec_ms"), WAIT_MS, "%s", lab_stdout(p));
	recs = lab_records_wait_expect(log, 2, "policy=defer", RUN_MS);
	lab_rec_assert_count(recs, lab_fmt("remote=%s,end=passive,!timeout,!held",
					   lab_addr4(closing->port)), 1);
	lab_rec_assert_count(recs, lab_fmt("remote=%s,held=true", lab_addr4(never->port)), 1);
	json_decref(recs);
	lab_stop(never, 5000);
	lab_stop(closing, 5000);
}

/* The counter at off (in struct tw_stats_file) summed over the files in dir. */
static uint64_t counter_sum(const char *dir, size_t off)
{
	DIR *d = opendir(dir);
	struct dirent *e;
	uint64_t sum = 0;

	cr_assert(d, "stats directory %s", dir);
	while ((e = readdir(d))) {
		uint64_t v = 0;
		int fd;

		if (!strstr(e->d_name, ".twstats"))
			continue;
		fd = openat(dirfd(d), e->d_name, O_RDONLY | O_CLOEXEC);
		cr_assert(fd >= 0 && pread(fd, &v, sizeof(v), (off_t)off) == (ssize_t)sizeof(v),
			  "read %s/%s", dir, e->d_name);
		close(fd);
		sum += v;
	}
	closedir(d);
	return sum;
}

/* A directory for the counters, in the scratch directory. */
static const char *stats_dir(void)
{
	const char *dir = lab_path("stats");

	cr_assert(mkdir(dir, 0755) == 0, "mkdir %s", dir);
	return dir;
}

/*
 * n connections, one every 300 ms, to a server that never closes first,
 * under defer_ms=200 and fallback=abort (plus more); returns the client.
 */
static struct lab_proc *paced_client(const char *name, const char *log, int port, const char *n,
				     const char *more)
{
	return lab_run(name, lab_traced(log, lab_fmt("close=defer,defer_ms=200,fallback=abort%s",
						     more)),
		       RUN_MS, lab_example("tw-client"), "-n", n, "--interval-ms", "300",
		       lab_addr4(port), NULL);
}

/*
 * A client that keeps meeting a peer that never closes stops waiting for it
 * after two misses (why: learned, the fallback at once), and a second
 * process of the same user knows it from its first connection.
 */
Test(defer, client_stops_waiting_for_a_peer_that_never_closes, .timeout = 60)
{
	struct lab_proc *srv, *first, *second;
	const char *log, *dir;
	json_t *recs;
	size_t learned;

	lab_enter(100);
	srv = keepalive_server();
	log = lab_path("client.jsonl");
	dir = stats_dir();
	first = paced_client("first", log, srv->port, "8", lab_fmt(",stats=%s", dir));
	lab_assert_ok(first, 8);
	recs = lab_records_wait_expect(log, 8, "role=client,end=abort,tw=none", RUN_MS);
	learned = lab_rec_count(recs, "why=learned,policy=abort,!timeout");
	cr_assert_geq(learned, 5, "%zu of 8 learned: %s", learned, lab_rec_summary(recs));
	/* the counters count them too */
	cr_assert_eq(counter_sum(dir, offsetof(struct tw_stats_file, learned_fallbacks)),
		     (uint64_t)learned, "learned fallbacks counted");
	cr_assert_eq(lab_rec_count(recs, "timeout=true") + learned, 8, "%s",
		     lab_rec_summary(recs));
	json_decref(recs);
	second = paced_client("second", log, srv->port, "1", "");
	lab_assert_ok(second, 1);
	recs = lab_records_wait_expect(log, 9, NULL, RUN_MS);
	lab_rec_assert_count(recs, lab_fmt("pid=%d,why=learned", second->pid), 1);
	cr_assert_eq(lab_tw_total(), 0, "TIME_WAIT somewhere");
	json_decref(recs);
	lab_stop(srv, 5000);
}

/* With learn=off every close to such a peer waits defer_ms, as before. */
Test(defer, learn_off_waits_every_time, .timeout = 60)
{
	struct lab_proc *srv, *c;
	const char *log;

	lab_enter(100);
	srv = keepalive_server();
	log = lab_path("client.jsonl");
	c = paced_client("client", log, srv->port, "5", ",learn=off");
	lab_assert_ok(c, 5);
	json_decref(lab_records_wait_expect(log, 5, "timeout=true,end=abort,!why", RUN_MS));
	lab_stop(srv, 5000);
}

/*
 * A client faster than its server's close (the server closes 50 ms after
 * its reply), through 20 ephemeral ports: the ports its deferred closes
 * hold would run out, and a connect that fails for want of one waits for a
 * deferred connection to end and is made again. Every connection succeeds,
 * with a blocking connect and with a non-blocking one (whose caller sees
 * EINPROGRESS or success, as with a free port); the TIME_WAIT is the
 * server's.
 */
Test(defer, connect_never_fails_for_a_port_the_library_holds, .timeout = 60)
{
	struct lab_proc *srv, *p;
	const char *log, *prog, *dir;
	json_t *recs;
	int blocking;

	lab_enter(20);
	srv = lab_start_server("server", NULL, lab_example("tw-server"), "--close-delay", "50",
			       "--threads", "32", "-l", lab_addr4(lab_port()), NULL);
	log = lab_path("client.jsonl");
	dir = stats_dir();
	prog = lab_test_program("tw-defer", RUN_MS);
	p = lab_run("blocking", lab_traced(log, lab_fmt("close=defer,stats=%s", dir)), RUN_MS,
		    prog, "connect", "200", lab_addr4(srv->port), NULL);
	cr_assert_eq(lab_value_long(lab_stdout(p), "ok"), 200, "%s%s", lab_stdout(p),
		     lab_stderr(p));
	blocking = p->pid;
	/* the holder of the first run lets its ports go within 50 ms */
	lab_sleep_ms(500);
	p = lab_run("nonblocking", lab_traced(log, "close=defer"), RUN_MS, prog, "connect", "200",
		    lab_addr4(srv->port), "--nonblock", NULL);
	cr_assert_eq(lab_value_long(lab_stdout(p), "ok"), 200, "%s%s", lab_stdout(p),
		     lab_stderr(p));
	recs = lab_records_wait_expect(log, 400, "role=client,policy=defer,end=passive,tw=peer",
				       RUN_MS);
	cr_assert_gt(lab_rec_count(recs, "connect_waited=true"), 0, "no connect waited: %s",
		     lab_rec_summary(recs));
	/* the first run's, counted in its file (the second run keeps no counters) */
	cr_assert_eq(counter_sum(dir, offsetof(struct tw_stats_file, connect_waits)),
		     (uint64_t)lab_rec_count(recs, lab_fmt("pid=%d,connect_waited=true", blocking)),
		     "waited connects counted");
	lab_assert_tw(srv->port, 0, -1);
	json_decref(recs);
	lab_stop(srv, 5000);
}
