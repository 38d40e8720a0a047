// SPDX-License-Identifier: MIT
/*
 * The library inside a host program that does unlucky or hostile things
 * around it: a log past the program's RLIMIT_FSIZE, stderr a pipe nobody
 * reads, fd 2 closed and reused by a connection, a log path that is a
 * symlink or a file planted in a world-writable directory, a FIFO as the
 * config file, two copies of the library at once, logrotate renaming the log
 * under a running program, and calls the library must pass on exactly as
 * libc answers them. Each time the program runs as it would without the
 * library, and no record goes where it must not.
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "lab.h"

#define RUN_MS	30000

static const char *host(void)
{
	return lab_test_program("tw-host", RUN_MS);
}

/* path holds one line of n 'x's */
static void write_line(const char *path, long n)
{
	FILE *f = fopen(path, "we");

	cr_assert(f, "%s: %s", path, strerror(errno));
	for (long i = 0; i < n; i++)
		fputc('x', f);
	fputc('\n', f);
	cr_assert_eq(fclose(f), 0);
}

static long file_size(const char *path)
{
	struct stat st;

	return stat(path, &st) == 0 ? (long)st.st_size : -1;
}

/*
 * Runs argv with the library and TWSHIM_OPTIONS=options, its stderr the
 * write end of a pipe whose read end is already closed, its stdout
 * /dev/null. Returns what lab_wait() would: exit code, or 128 + signal.
 */
static int run_with_broken_stderr(const char *options, char *const argv[])
{
	const char *pre = getenv("TWSHIM_TEST_PRELOAD");
	const char *lib = lab_build_path("libtwshim.so");
	char *preload = (char *)lab_fmt("LD_PRELOAD=%s%s%s", pre ? pre : "", pre ? " " : "", lib);
	char *envp[] = { preload, (char *)lab_fmt("TWSHIM_OPTIONS=%s", options), NULL };
	int status = 0;
	pid_t pid = fork();

	cr_assert_geq(pid, 0);
	if (pid == 0) {
		int p[2], null = open("/dev/null", O_WRONLY);

		if (pipe(p) < 0 || null < 0)
			_exit(120);
		close(p[0]);
		dup2(p[1], 2);
		dup2(null, 1);
		signal(SIGPIPE, SIG_DFL);
		execve(argv[0], argv, envp);
		_exit(121);
	}
	cr_assert_eq(waitpid(pid, &status, 0), pid);
	return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

/* A log already larger than the program's RLIMIT_FSIZE: records dropped, program untouched. */
Test(host, log_larger_than_the_file_size_limit_kills_nothing, .timeout = 60)
{
	const char *log;
	struct lab_proc *c;

	lab_enter(100);
	log = lab_path("big.jsonl");
	write_line(log, 5000);
	c = lab_run("client", lab_traced(log, NULL), RUN_MS, "/usr/bin/prlimit", "--fsize=4000",
		    host(), "connect", "3", NULL);
	cr_assert_eq(lab_exit_code(c), 0, "exit %d (153: SIGXFSZ): %s%s", lab_exit_code(c),
		     lab_stdout(c), lab_stderr(c));
	cr_assert_eq(lab_value_long(lab_stdout(c), "ok"), 3);
	cr_assert_eq(file_size(log), 5001, "the log changed");
	cr_assert_eq(lab_shim_lines(lab_stderr(c)), 1, "stderr: %s", lab_stderr(c));
	cr_assert(strstr(lab_stderr(c), "RLIMIT_FSIZE"), "stderr: %s", lab_stderr(c));
}

/*
 * The program lowers its own RLIMIT_FSIZE below the log's size between two
 * closes: the next records are dropped, the program goes on. Before, the
 * library wrote with the limit it had read (unlimited, up to a second ago),
 * and the kernel's SIGXFSZ killed the program (exit 153).
 */
Test(host, program_lowers_its_file_size_limit_kills_nothing, .timeout = 60)
{
	const char *log;
	struct lab_proc *c;

	lab_enter(100);
	log = lab_path("tw.jsonl");
	c = lab_run("client", lab_traced(log, NULL), RUN_MS, host(), "fsize", "3", "100", NULL);
	cr_assert_eq(lab_exit_code(c), 0, "exit %d (153: SIGXFSZ): %s%s", lab_exit_code(c),
		     lab_stdout(c), lab_stderr(c));
	cr_assert_eq(lab_value_long(lab_stdout(c), "ok"), 6, "%s", lab_stdout(c));
	json_decref(lab_records_expect(log, 6, NULL));
	/* stderr is a file here: the limit cuts the line short too */
	cr_assert(strstr(lab_stderr(c), "cannot write to"), "stderr: %s", lab_stderr(c));
}

/* log=stderr, stderr a pipe with no reader: no SIGPIPE (exit 141) */
Test(host, log_to_stderr_a_broken_pipe_kills_nothing, .timeout = 60)
{
	char *argv[] = { NULL, (char *)"connect", (char *)"3", NULL };

	lab_enter(100);
	argv[0] = (char *)host();
	cr_assert_eq(run_with_broken_stderr("log=stderr", argv), 0);
}

/* the one warning line for bad settings, stderr a pipe with no reader */
Test(host, warning_to_a_broken_pipe_kills_nothing, .timeout = 60)
{
	char *argv[] = { NULL, (char *)"connect", (char *)"1", NULL };

	lab_enter(100);
	argv[0] = (char *)host();
	cr_assert_eq(run_with_broken_stderr("close=later", argv), 0);
}

/* A daemon closed fd 2 and a connection got the number: no record goes down it. */
Test(host, stderr_closed_and_reused_by_a_connection_gets_no_record, .timeout = 60)
{
	struct lab_proc *c;

	lab_enter(100);
	c = lab_run("host", lab_traced("stderr", NULL), RUN_MS, host(), "stderr-reused", NULL);
	cr_assert_eq(lab_exit_code(c), 0, "%s", lab_stdout(c));
	cr_assert_eq(lab_value_long(lab_stdout(c), "afd"), 2, "%s", lab_stdout(c));
	cr_assert_eq(lab_value_long(lab_stdout(c), "leaked"), 0,
		     "a record went down the connection on fd 2: %s", lab_stdout(c));
}

/* A symlink planted where the log goes is not followed. */
Test(host, log_path_that_is_a_symlink_is_not_followed, .timeout = 60)
{
	const char *target, *log;
	struct lab_proc *c;

	lab_enter(100);
	target = lab_path("precious");
	log = lab_path("tw.jsonl");
	lab_write_file(target, "");
	cr_assert_eq(symlink(target, log), 0);
	c = lab_run("client", lab_traced(log, NULL), RUN_MS, host(), "connect", "2", NULL);
	cr_assert_eq(lab_exit_code(c), 0, "%s%s", lab_stdout(c), lab_stderr(c));
	cr_assert_eq(file_size(target), 0, "records were written through the symlink");
	cr_assert_eq(lab_shim_lines(lab_stderr(c)), 1, "stderr: %s", lab_stderr(c));
	cr_assert(strstr(lab_stderr(c), "symbolic link"), "stderr: %s", lab_stderr(c));
}

/*
 * In a sticky world-writable directory (as /tmp), a log file someone else
 * created there is refused; the user's own is used.
 */
Test(host, log_planted_in_a_world_writable_directory_is_refused, .timeout = 60)
{
	const char *dir, *log;
	struct lab_proc *c;

	lab_enter(100);
	dir = lab_path("shared");
	cr_assert_eq(mkdir(dir, 0777), 0);
	cr_assert_eq(chmod(dir, 01777), 0);
	log = lab_fmt("%s/tw.jsonl", dir);
	lab_write_file(log, "");
	cr_assert_eq(chown(log, 4321, 4321), 0);
	cr_assert_eq(chmod(log, 0666), 0);
	c = lab_run("client", lab_traced(log, NULL), RUN_MS, host(), "connect", "2", NULL);
	cr_assert_eq(lab_exit_code(c), 0, "%s%s", lab_stdout(c), lab_stderr(c));
	cr_assert_eq(file_size(log), 0, "records went into another user's file");
	cr_assert_eq(lab_shim_lines(lab_stderr(c)), 1, "stderr: %s", lab_stderr(c));
	cr_assert(strstr(lab_stderr(c), "others can write"), "stderr: %s", lab_stderr(c));

	cr_assert_eq(unlink(log), 0);
	c = lab_run("client2", lab_traced(log, NULL), RUN_MS, host(), "connect", "2", NULL);
	cr_assert_eq(lab_exit_code(c), 0, "%s%s", lab_stdout(c), lab_stderr(c));
	json_decref(lab_records_expect(log, 4, NULL));
}

/* A log path with a newline in it: the warning stays one line. */
Test(host, log_path_with_a_newline_gives_one_warning_line, .timeout = 60)
{
	struct lab_proc *c;
	const char *log;

	lab_enter(100);
	log = lab_path("missing/a\ntwshim[1]: forged");
	c = lab_run("client", lab_traced(log, NULL), RUN_MS, host(), "connect", "1", NULL);
	cr_assert_eq(lab_exit_code(c), 0, "%s%s", lab_stdout(c), lab_stderr(c));
	cr_assert_eq(lab_shim_lines(lab_stderr(c)), 1, "stderr: %s", lab_stderr(c));
	cr_assert(!strstr(lab_stderr(c), "\ntwshim[1]"), "stderr: %s", lab_stderr(c));
}

/* A program that makes no connection holds exactly the fds it would without the library. */
Test(host, no_log_fd_before_the_first_record, .timeout = 60)
{
	struct lab_proc *bare, *with;
	const char *log;

	lab_enter(100);
	log = lab_path("tw.jsonl");
	bare = lab_run("bare", NULL, RUN_MS, "/bin/ls", "/proc/self/fd", NULL);
	with = lab_run("with", lab_traced(log, NULL), RUN_MS, "/bin/ls", "/proc/self/fd", NULL);
	cr_assert_str_eq(lab_stdout(with), lab_stdout(bare));
	cr_assert_eq(access(log, F_OK), -1, "the log was made by a program with no connection");
}

/* accept(fd, addr, NULL) is EFAULT from libc: the library must not hand a connection. */
Test(host, accept_with_an_address_and_no_length_fails_with_efault, .timeout = 60)
{
	struct lab_proc *bare, *with;

	lab_enter(100);
	bare = lab_run("bare", NULL, RUN_MS, host(), "accept-null", NULL);
	with = lab_run("with", lab_traced(lab_path("tw.jsonl"), NULL), RUN_MS, host(),
		       "accept-null", NULL);
	cr_assert(strstr(lab_stdout(bare), "result=-1 errno=EFAULT"), "%s", lab_stdout(bare));
	cr_assert_str_eq(lab_stdout(with), lab_stdout(bare));
}

/* A FIFO as the config file, or @included: one line, no wait, no policy. */
static void fifo_config(bool included)
{
	const char *fifo = lab_path("fifo.conf"), *conf = fifo;
	struct lab_proc *c;

	cr_assert_eq(mkfifo(fifo, 0644), 0);
	if (included) {
		conf = lab_path("main.conf");
		lab_write_file(conf, "close = \"defer\";\n@include \"fifo.conf\"\n");
	}
	c = lab_spawn("client", lab_configured(conf), host(), "connect", "1", NULL);
	cr_assert_neq(lab_wait(c, 10000), -1, "start-up blocked on the FIFO");
	cr_assert_eq(lab_exit_code(c), 0, "%s%s", lab_stdout(c), lab_stderr(c));
	cr_assert_eq(lab_shim_lines(lab_stderr(c)), 1, "stderr: %s", lab_stderr(c));
	cr_assert(strstr(lab_stderr(c), "not a regular file"), "stderr: %s", lab_stderr(c));
}

Test(host, config_file_that_is_a_fifo_does_not_block, .timeout = 60)
{
	lab_enter(100);
	fifo_config(false);
}

Test(host, config_include_of_a_fifo_does_not_block, .timeout = 60)
{
	lab_enter(100);
	fifo_config(true);
}

/* A second copy of the library (another path) in LD_PRELOAD: each connection recorded once. */
Test(host, two_copies_of_the_library_record_each_connection_once, .timeout = 60)
{
	const char *copy, *log;
	struct lab_opts o = { 0 };
	const char *env[2];
	struct lab_proc *c, *cp;

	lab_enter(100);
	copy = lab_path("libtwshim.so");
	cp = lab_run("cp", NULL, RUN_MS, "/bin/cp", lab_build_path("libtwshim.so"), copy, NULL);
	cr_assert_eq(lab_exit_code(cp), 0, "cp: %s", lab_stderr(cp));
	log = lab_path("tw.jsonl");
	o = *lab_traced(log, NULL);
	env[0] = lab_fmt("LD_PRELOAD=%s %s", lab_build_path("libtwshim.so"), copy);
	env[1] = NULL;
	o.preload = false;
	o.env = env;
	c = lab_run("client", &o, RUN_MS, host(), "connect", "3", NULL);
	cr_assert_eq(lab_exit_code(c), 0, "%s%s", lab_stdout(c), lab_stderr(c));
	/* 3 client and 3 server ends, once each */
	json_decref(lab_records_expect(log, 6, NULL));
}

/*
 * logrotate renames the log (no copytruncate) while a program writes
 * records: the program moves to the new file within about a second, and
 * the records over all files are exactly the connections made.
 */
Test(host, logrotate_without_copytruncate_loses_nothing, .timeout = 90)
{
	const char *log, *conf, *state;
	struct lab_proc *c, *r;
	size_t total = 0, current;
	int port;

	if (access("/usr/sbin/logrotate", X_OK) != 0)
		cr_skip_test("logrotate is not installed (apt-get install logrotate)");
	lab_enter(1000);
	port = lab_port();
	lab_start_server("server", NULL, lab_example("tw-server"), "-l", lab_addr4(port), NULL);
	log = lab_path("tw.jsonl");
	conf = lab_path("rotate.conf");
	state = lab_path("rotate.state");
	lab_write_file(conf, lab_fmt("%s {\n\trotate 10\n\tcreate 0644 root root\n"
				     "\tnocompress\n\tmissingok\n}\n", log));
	/*
	 * At least 4.5 s of connections: the client outlives the second
	 * rotation (about 2.5 s in) by more than the once-a-second check
	 */
	c = lab_spawn("client", lab_traced(log, NULL), lab_example("tw-client"), "-n", "450",
		      "--interval-ms", "10", lab_addr4(port), NULL);
	for (int i = 0; i < 2; i++) {
		lab_sleep_ms(1200);
		r = lab_run(lab_fmt("logrotate%d", i), NULL, RUN_MS, "/usr/sbin/logrotate", "-f",
			    "-s", state, conf, NULL);
		cr_assert_eq(lab_exit_code(r), 0, "logrotate: %s", lab_stderr(r));
	}
	cr_assert_neq(lab_wait(c, RUN_MS), -1, "client did not finish");
	lab_assert_ok(c, 450);
	for (int i = 0; i <= 2; i++) {
		const char *p = i ? lab_fmt("%s.%d", log, i) : log;
		json_t *recs = lab_records(p);

		lab_records_check(recs);
		total += json_array_size(recs);
		if (!i)
			current = json_array_size(recs);
		json_decref(recs);
	}
	cr_assert_eq(total, 450, "records over all files: %zu of 450", total);
	cr_assert_gt(current, 0, "nothing went to the new file after the rotation");
}

/* report shows a process name with control characters escaped: no forged row */
Test(host, report_escapes_control_characters_in_names, .timeout = 60)
{
	const char *log;
	struct lab_proc *r;

	lab_enter(1);
	log = lab_path("evil.jsonl");
	lab_write_file(log, "{\"ts\":1796581193.09,\"pid\":1,\"comm\":\"evil\\u001b[2J\\nFAKE\","
		       "\"role\":\"client\",\"local\":\"127.0.0.1:1\",\"remote\":\"127.0.0.1:2\","
		       "\"policy\":\"normal\",\"state\":\"ESTABLISHED\",\"end\":\"active\","
		       "\"tw\":\"local\",\"via\":\"close\",\"dur_ms\":1,\"bytes_acked\":1,"
		       "\"bytes_received\":1,\"fd\":3}\n");
	r = lab_run("report", NULL, RUN_MS, lab_build_path("twshim"), "report", log, NULL);
	cr_assert_eq(lab_exit_code(r), 0, "%s", lab_stderr(r));
	cr_assert(!strchr(lab_stdout(r), 0x1b), "an escape reached the output: %s", lab_stdout(r));
	cr_assert(!strstr(lab_stdout(r), "\nFAKE"), "a forged row: %s", lab_stdout(r));
	cr_assert(strstr(lab_stdout(r), "evil\\x1b[2J\\x0aFAKE"), "%s", lab_stdout(r));
}

/* a line too long for the memory the tool may use is an error, not the end of the file */
Test(host, report_out_of_memory_on_a_long_line_fails, .timeout = 60)
{
	const char *log;
	struct lab_proc *r;

	/* a sanitizer's runtime needs terabytes of address space to start at all */
	if (getenv("TWSHIM_TEST_PRELOAD"))
		cr_skip_test("the tool under test is a sanitizer build");
	lab_enter(1);
	log = lab_path("long.jsonl");
	write_line(log, 40 << 20);
	r = lab_run("report", NULL, RUN_MS, "/usr/bin/prlimit", "--as=41943040",
		    lab_build_path("twshim"), "report", log, NULL);
	cr_assert_eq(lab_exit_code(r), 1, "exit %d: %s", lab_exit_code(r), lab_stderr(r));
	cr_assert(strstr(lab_stderr(r), "Cannot allocate memory"), "%s", lab_stderr(r));
}
