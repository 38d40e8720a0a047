// SPDX-License-Identifier: MIT
/*
 * Faults and bad input around the library: a log that cannot be opened
 * (missing directory, read-only file system) or written (/dev/full, a file
 * system that fills up and frees again), a config file that cannot be read,
 * and programs that close the log's fd, or every fd, while connections are
 * deferred. Each time: one clear line on stderr, the program runs as it
 * would without the library, records resume where they can, and no record
 * is ever written in part.
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <sched.h>
#include <stdio.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "lab.h"

#define RUN_MS	60000


/* Exactly one line from the library on stderr, holding each of the words. */
static void assert_one_line(const struct lab_proc *p, const char *w1, const char *w2)
{
	char *err = lab_stderr(p);

	cr_assert_eq(lab_shim_lines(err), 1, "expected one twshim line on stderr, got:\n%s", err);
	cr_assert(strstr(err, w1) && (!w2 || strstr(err, w2)), "stderr lacks '%s'/'%s':\n%s",
		  w1, w2 ? w2 : "", err);
}

/*
 * A private mount namespace for this test process and what it starts, so
 * that file systems can be mounted in the scratch directory without the
 * machine seeing them. Skips when not allowed.
 */
static void private_mounts(void)
{
	if (unshare(CLONE_NEWNS) < 0)
		cr_skip_test("unshare(CLONE_NEWNS): %s", strerror(errno));
	cr_assert(mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) == 0,
		  "making / private: %s", strerror(errno));
}

/* A tw-server that replies and closes ms later. */
static struct lab_proc *server(int port, int ms)
{
	return lab_start_server("server", NULL, lab_example("tw-server"), "-l", lab_addr4(port),
				"--close", "first", "--close-delay", lab_fmt("%d", ms),
				"--threads", "32", NULL);
}

/*
 * A log that cannot be opened: the program still runs, the policy is still
 * applied (no client-side TIME_WAIT under defer), one line says why there
 * are no records.
 */
static void unopenable_log(const char *log, const char *why)
{
	struct lab_proc *s, *c;
	struct lab_tw tw;
	int port = lab_port();

	s = server(port, 20);
	c = lab_run("client", lab_traced(log, "close=defer"), RUN_MS,
		    lab_example("tw-client"), "-n", "20", lab_addr4(port), NULL);
	cr_assert_eq(lab_exit_code(c), 0, "client: %s%s", lab_stdout(c), lab_stderr(c));
	cr_assert_eq(lab_value_long(lab_stdout(c), "ok"), 20, "client: %s", lab_stdout(c));
	assert_one_line(c, log, why);
	lab_tw_count(&tw, port);
	cr_assert_eq(tw.client, 0, "client-side TIME_WAIT: %ld", tw.client);
	lab_stop(s, 5000);
}

Test(faults, log_in_a_missing_directory, .timeout = 60)
{
	lab_enter(100);
	unopenable_log(lab_path("missing/dir/tw.jsonl"), "No such file or directory");
	cr_assert_eq(access(lab_path("missing"), F_OK), -1, "the library made the directory");
}

Test(faults, log_on_a_read_only_file_system, .timeout = 60)
{
	const char *dir, *log;

	lab_enter(100);
	private_mounts();
	dir = lab_path("ro");
	log = lab_fmt("%s/tw.jsonl", dir);
	cr_assert(mkdir(dir, 0755) == 0);
	fclose(fopen(log, "we"));
	cr_assert(mount(dir, dir, NULL, MS_BIND, NULL) == 0, "bind: %s", strerror(errno));
	cr_assert(mount(NULL, dir, NULL, MS_REMOUNT | MS_BIND | MS_RDONLY, NULL) == 0,
		  "read-only: %s", strerror(errno));
	unopenable_log(log, "Read-only file system");
	umount2(dir, MNT_DETACH);
	cr_assert_eq(json_array_size(lab_records(log)), 0);
}

/* /dev/full: every write fails with ENOSPC; one line, not one per record. */
Test(faults, log_on_a_full_disk_dev_full, .timeout = 60)
{
	struct lab_proc *s, *c;
	struct lab_tw tw;
	int port;

	lab_enter(100);
	port = lab_port();
	s = server(port, 20);
	c = lab_run("client", lab_traced("/dev/full", "close=defer"), RUN_MS,
		    lab_example("tw-client"), "-n", "50", lab_addr4(port), NULL);
	cr_assert_eq(lab_exit_code(c), 0, "client: %s%s", lab_stdout(c), lab_stderr(c));
	cr_assert_eq(lab_value_long(lab_stdout(c), "ok"), 50, "client: %s", lab_stdout(c));
	assert_one_line(c, "/dev/full", "No space left on device");
	lab_tw_count(&tw, port);
	cr_assert_eq(tw.client, 0, "client-side TIME_WAIT: %ld", tw.client);
	lab_stop(s, 5000);
}

/*
 * The log on a 16 KiB tmpfs, three quarters taken by another file: records
 * fill the rest, then the disk is full; the other file goes, and records
 * resume (and may fill it again). A write that only partly fits leaves its
 * piece on a line of its own: the next record is never glued to it.
 */
Test(faults, log_on_a_disk_that_fills_up_and_frees_again, .timeout = 60)
{
	const char *dir, *log, *filler;
	struct lab_proc *s, *c;
	double freed;
	size_t pieces;
	char *text;
	json_t *recs;
	int port;
	FILE *f;

	lab_enter(1000);
	private_mounts();
	dir = lab_path("small");
	log = lab_fmt("%s/tw.jsonl", dir);
	filler = lab_fmt("%s/filler", dir);
	cr_assert(mkdir(dir, 0755) == 0);
	cr_assert(mount("tmpfs", dir, "tmpfs", 0, "size=16k,mode=0755") == 0, "tmpfs: %s",
		  strerror(errno));
	f = fopen(filler, "we");
	cr_assert(f);
	for (int i = 0; i < 3 * 4096; i++)
		fputc('x', f);
	cr_assert_eq(fclose(f), 0, "filler: %s", strerror(errno));

	port = lab_port();
	s = server(port, 5);
	c = lab_spawn("client", lab_traced(log, NULL), lab_example("tw-client"), "-n",
		      "120", "--interval-ms", "10", "--close", "last", lab_addr4(port), NULL);
	lab_sleep_ms(800);
	cr_assert_eq(unlink(filler), 0);
	freed = (double)time(NULL);
	cr_assert_neq(lab_wait(c, RUN_MS), -1, "client did not finish");
	cr_assert_eq(lab_exit_code(c), 0, "client: %s%s", lab_stdout(c), lab_stderr(c));
	cr_assert_eq(lab_value_long(lab_stdout(c), "ok"), 120, "client: %s", lab_stdout(c));

	text = lab_read_file(log);
	umount2(dir, MNT_DETACH);
	/*
	 * A record that only partly fitted stays as it was written (taking it
	 * back would cut other writers' records), but on a line of its own:
	 * the next record starts on a new line. Whole lines are kept for the
	 * strict reading below; pieces are counted.
	 */
	f = fopen(lab_path("copy.jsonl"), "we");
	cr_assert(f);
	pieces = 0;
	for (char *l = text, *e; *l; l = e + 1) {
		json_t *one;

		e = strchr(l, '\n');
		if (!e) {
			/* the disk was full at the last record */
			pieces++;
			break;
		}
		*e = 0;
		cr_assert(!strstr(l + 1, "{\"ts\""), "a record glued to another: %s", l);
		one = json_loads(l, 0, NULL);
		if (one)
			fprintf(f, "%s\n", l);
		else
			pieces++;
		json_decref(one);
	}
	fclose(f);
	/* strict: fails on any line that is not one whole JSON object */
	recs = lab_records(lab_path("copy.jsonl"));
	lab_records_check(recs);
	cr_assert_gt(json_array_size(recs), 0, "no record before the disk was full");
	cr_assert_lt(json_array_size(recs), 120, "no record was lost: the disk never filled");
	/* records came back once there was room */
	cr_assert_geq(json_number_value(json_object_get(json_array_get(recs,
		      json_array_size(recs) - 1), "ts")), freed - 1,
		      "no record after the disk had room again: %s", lab_rec_summary(recs));
	/* one line each time the log stops taking records, naming it */
	text = lab_stderr(c);
	cr_assert_geq(lab_shim_lines(text), 1, "nothing said about the lost records: %s", text);
	cr_assert_leq(lab_shim_lines(text), 2, "one line per outage: %s", text);
	cr_assert_eq(lab_lines_with(text, log), lab_shim_lines(text), "stderr: %s", text);
	cr_assert_leq(pieces, lab_shim_lines(text), "more pieces of records (%zu) than outages",
		      pieces);
	lab_stop(s, 5000);
}

/*
 * A config file that cannot be read (missing, a directory): one line naming
 * it, and then the library changes nothing: no policy (client-side
 * TIME_WAIT as without it), no records.
 */
static void unreadable_config(const char *conf)
{
	const char *log = lab_path("tw.jsonl");
	struct lab_opts o = { .preload = true, .config = conf };
	struct lab_proc *s, *c;
	struct lab_tw tw;
	int port = lab_port();

	o.options = lab_fmt("close=defer,log=%s", log);
	s = server(port, 20);
	c = lab_run("client", &o, RUN_MS, lab_example("tw-client"), "-n", "10", lab_addr4(port),
		    NULL);
	cr_assert_eq(lab_exit_code(c), 0, "client: %s%s", lab_stdout(c), lab_stderr(c));
	cr_assert_eq(lab_value_long(lab_stdout(c), "ok"), 10, "client: %s", lab_stdout(c));
	assert_one_line(c, conf, "changes nothing");
	lab_tw_count(&tw, port);
	cr_assert_eq(tw.client, 10, "client-side TIME_WAIT: %ld (the policy was applied)",
		     tw.client);
	cr_assert_eq(access(log, F_OK), -1, "records were written");
	lab_stop(s, 5000);
}

Test(faults, config_file_missing, .timeout = 60)
{
	lab_enter(100);
	unreadable_config(lab_path("no-such.conf"));
}

Test(faults, config_file_is_a_directory, .timeout = 60)
{
	lab_enter(100);
	cr_assert(mkdir(lab_path("conf.d"), 0755) == 0);
	unreadable_config(lab_path("conf.d"));
}

/* how many 4-tuples the records name */
static long tuples(const json_t *recs)
{
	json_t *seen = json_object();
	long n;

	for (size_t i = 0; i < json_array_size(recs); i++)
		json_object_set_new(seen, lab_tuple_key(json_array_get(recs, i)), json_true());
	n = (long)json_object_size(seen);
	json_decref(seen);
	return n;
}

/*
 * The program closes every fd from 3 up while 20 connections are deferred
 * (the server closes 300 ms after its reply), then makes 20 more. The
 * deferred ones survive and end as they would have; the log survives; each
 * connection is recorded once; the program's own calls all succeed.
 */
static void sweep(const char *how, bool with_log_arg)
{
	const char *log, *prog;
	struct lab_proc *s, *c;
	struct lab_tw tw;
	json_t *recs;
	char *out;
	int port;

	/*
	 * The log opens at the first record, so the log-fd sweeps wait for one:
	 * by then the first connections have ended, and with few ports the
	 * next ones would reuse theirs and recycle the server's TIME_WAIT.
	 */
	lab_enter(with_log_arg ? 1000 : 100);
	prog = lab_test_program("tw-stress", RUN_MS);
	log = lab_path("tw.jsonl");
	port = lab_port();
	s = server(port, 300);
	c = lab_run("client", lab_traced(log, "close=defer,defer_ms=5000"), RUN_MS,
		    prog, "sweep", "--how", how, "--threads", "20", "-n", "1", "--sleep-end",
		    "1000", with_log_arg ? "--log" : "--", with_log_arg ? log : "--",
		    lab_addr4(port), NULL);
	out = lab_stdout(c);
	cr_assert_eq(lab_exit_code(c), 0, "client: %s%s", out, lab_stderr(c));
	cr_assert_eq(lab_value_long(out, "ok"), 40, "client: %s", out);
	cr_assert_eq(lab_value_long(out, "sweep_failed"), 0, "client: %s", out);
	cr_assert_eq(lab_value_long(out, "close_fail"), 0, "client: %s", out);
	cr_assert_eq(lab_value_long(out, "errno_changed"), 0, "client: %s", out);
	cr_assert_eq(lab_value_long(out, "sockets_end"), 0, "client: %s", out);
	cr_assert_eq(lab_shim_lines(lab_stderr(c)), 0, "stderr: %s", lab_stderr(c));

	recs = lab_records_wait(log, "", 40, 5000);
	lab_records_check(recs);
	lab_rec_assert_count(recs, "", 40);
	lab_rec_assert_all(recs, "", lab_fmt("pid=%d,role=client,policy=defer,end=passive,"
					     "tw=peer,via=close,!timeout", c->pid));
	lab_tw_count(&tw, port);
	cr_assert_eq(tw.client, 0, "client-side TIME_WAIT: %ld", tw.client);
	/*
	 * One per 4-tuple: a client port the kernel hands out again (its
	 * passive end left it free) sends a SYN that ends the TIME_WAIT the
	 * server kept for it, and the new connection leaves its own.
	 */
	cr_assert_eq(tw.server, tuples(recs), "server-side TIME_WAIT: %ld (%s)", tw.server,
		     lab_rec_summary(recs));
	cr_assert(!strstr(lab_read_file(log), "program"), "the program's write reached the log");
	lab_stop(s, 5000);
}

Test(faults, close_range_of_every_fd_while_connections_are_deferred, .timeout = 60)
{
	sweep("close_range", false);
}

Test(faults, closefrom_3_while_connections_are_deferred, .timeout = 60)
{
	sweep("closefrom", false);
}

Test(faults, closing_each_fd_listed_in_proc_self_fd_while_connections_are_deferred,
     .timeout = 60)
{
	sweep("procfd", false);
}

Test(faults, closing_fds_3_to_the_limit_in_a_loop_while_connections_are_deferred,
     .timeout = 60)
{
	sweep("loop", false);
}

Test(faults, program_closes_the_log_fd_itself, .timeout = 60)
{
	sweep("logfd", true);
}

/* the program dup2()s /dev/null over the log's fd and writes into it */
Test(faults, program_dup2s_over_the_log_fd, .timeout = 60)
{
	sweep("dup2log", true);
}
