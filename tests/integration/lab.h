/* SPDX-License-Identifier: MIT */
/*
 * The integration-test lab: a private network namespace per test, the
 * example programs and the tool run with or without the preload library,
 * the kernel's TIME_WAIT sockets read with sock_diag, and close records read
 * back with jansson.
 *
 * Criterion runs each test in a process of its own; lab_enter() turns that
 * process into the lab. Everything here that can go wrong fails the test
 * with a message (cr_assert), so tests need not check return values unless
 * they say otherwise. Spawned processes are stopped and reaped when the test
 * process exits, and get SIGKILL should it die first.
 *
 * Environment:
 *   TWSHIM_BUILD         absolute build directory (make test sets it); else "build"
 *   TWSHIM_TEST_PRELOAD  put before the library in LD_PRELOAD (e.g. libasan.so)
 *   TWSHIM_TEST_KEEP     1: keep the scratch directory (logs, outputs) after the test
 */
#ifndef TWSHIM_LAB_H
#define TWSHIM_LAB_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include <jansson.h>

/* A program started by lab_spawn(). */
struct lab_proc {
	pid_t pid;
	char name[64];		/* short name, unique within the test */
	char *out;		/* path of the file holding its stdout */
	char *err;		/* path of the file holding its stderr */
	bool reaped;		/* it exited; the zombie stays until the test ends */
	int status;		/* wait status, once reaped */
	int port;		/* from "listening PORT", once seen */
};

/* How lab_spawn() runs a program. A zeroed struct: no library, nothing set. */
struct lab_opts {
	bool preload;			/* LD_PRELOAD the built libtwshim.so */
	const char *options;		/* TWSHIM_OPTIONS; NULL leaves it unset */
	const char *config;		/* TWSHIM_CONFIG; NULL leaves it unset */
	const char *const *env;		/* more "KEY=VALUE", NULL-terminated; may be NULL */
};

/*
 * Options for a program that runs with the library preloaded and writes its
 * close records to log: TWSHIM_OPTIONS "log=LOG", then ",MORE" when more is
 * not NULL (e.g. "close=defer,defer_ms=200"). Lives until the test process exits.
 */
const struct lab_opts *lab_traced(const char *log, const char *more);
/*
 * Options for a program that runs with the library preloaded and
 * TWSHIM_CONFIG=conf, nothing else set. Lives until the test process exits.
 */
const struct lab_opts *lab_configured(const char *conf);

/*
 * Enters a private network namespace: unshare(CLONE_NEWNET), lo up,
 * tcp_tw_reuse=0 and an ip_local_port_range of `ports` ports from 40000
 * (40000..40099 for 100). Also makes the scratch directory. Skips the test
 * (cr_skip_test) with the reason when not root or when namespaces are not
 * allowed here.
 */
void lab_enter(unsigned ports);
/* first and last port of the range lab_enter() set */
#define LAB_PORT_FIRST	40000

/*
 * A fresh service port for this test, below the ephemeral range, different
 * in each test that runs at the same time. Servers must not
 * bind port 0: the kernel would take the port from the small ephemeral
 * range and the clients would get one port less.
 */
int lab_port(void);
/* "127.0.0.1:PORT", "[::1]:PORT" */
const char *lab_addr4(int port);
const char *lab_addr6(int port);

/* Writes value into a /proc/sys file of this namespace; fails the test on error. */
void lab_sysctl(const char *path, const char *value);

/*
 * Path of a build output: TWSHIM_BUILD (or "build") joined with name, e.g.
 * lab_build_path("libtwshim.so"), lab_build_path("examples/tw-client"). The
 * strings live until the test process exits.
 */
const char *lab_build_path(const char *name);
/* lab_build_path("examples/NAME") */
const char *lab_example(const char *name);
/* A path in this test's scratch directory (exists until the test ends). */
const char *lab_path(const char *name);
/* The scratch directory itself. */
const char *lab_dir(void);
/* printf into a string that lives until the test process exits */
const char *lab_fmt(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/*
 * The top of the source tree, for sources built at test time: the current
 * directory when the tests run from there (make test), else the parent of
 * TWSHIM_BUILD. NULL when neither holds the tree.
 */
const char *lab_source_dir(void);
/*
 * Path of the test program tests/programs/NAME.c: the one tests/sanitize.sh
 * built into TWSHIM_BUILD/programs/, else compiled into the scratch
 * directory from lab_source_dir(), the compiler bounded by timeout_ms.
 * Skips the test when there is neither; fails it when the compiler fails.
 */
const char *lab_test_program(const char *name, int timeout_ms);

/*
 * Starts prog (a path) with the arguments that follow, up to a NULL; argv[0]
 * is prog's basename. stdout and stderr go to files in the scratch directory
 * named after name. The inherited LD_PRELOAD, TWSHIM_OPTIONS and
 * TWSHIM_CONFIG are removed, then o applies (o may be NULL).
 */
struct lab_proc *lab_spawn(const char *name, const struct lab_opts *o, const char *prog, ...)
	__attribute__((sentinel));
/* The same with an argv array (NULL-terminated, argv[0] included). */
struct lab_proc *lab_spawnv(const char *name, const struct lab_opts *o, const char *prog,
			    char *const argv[]);
/*
 * lab_spawn() and then lab_wait_listening() with 5 s: a server that is
 * ready; its port is in p->port.
 */
struct lab_proc *lab_start_server(const char *name, const struct lab_opts *o,
				  const char *prog, ...) __attribute__((sentinel));
/*
 * lab_spawn() and then lab_wait(): runs the program to its end, failing the
 * test when it does not end within timeout_ms. The exit code is in
 * lab_exit_code().
 */
struct lab_proc *lab_run(const char *name, const struct lab_opts *o, int timeout_ms,
			 const char *prog, ...) __attribute__((sentinel));

/*
 * Waits until the program printed "listening PORT" on stdout and returns
 * PORT (also kept in p->port). Fails the test, with the program's stderr,
 * when it exits first or timeout_ms passes.
 */
int lab_wait_listening(struct lab_proc *p, int timeout_ms);
/*
 * Waits up to timeout_ms for the program to exit. Returns its exit code, 128
 * + the signal when a signal ended it, or -1 when it was still running (it is
 * then killed and reaped, and the test is not failed: the caller decides).
 */
int lab_wait(struct lab_proc *p, int timeout_ms);
/*
 * SIGTERM, then SIGKILL when it has not exited after timeout_ms; always
 * reaped. Returns what lab_wait() returns for the SIGTERM wait.
 */
int lab_stop(struct lab_proc *p, int timeout_ms);
/* exit code of a reaped program as lab_wait() returns it */
int lab_exit_code(const struct lab_proc *p);
/* Is it still running? (reaps it if it is not) */
bool lab_running(struct lab_proc *p);

/* Whole contents of a file, NUL-terminated; "" when it does not exist. */
char *lab_read_file(const char *path);
/* Creates or truncates path and writes text into it; fails the test on error. */
void lab_write_file(const char *path, const char *text);
/* what the program wrote so far */
char *lab_stdout(const struct lab_proc *p);
char *lab_stderr(const struct lab_proc *p);
/*
 * The value of the last "key=value" in text (key at the start of a line or
 * after a space), as in the example programs' summary lines. lab_value_long
 * returns -1 when key is absent; lab_value_str copies "" then.
 */
long lab_value_long(const char *text, const char *key);
void lab_value_str(const char *text, const char *key, char *buf, size_t len);
/*
 * Fails the test, with the program's stdout and stderr, unless the summary
 * line of tw-client p says ok=n (n connections succeeded).
 */
void lab_assert_ok(const struct lab_proc *p, long n);

/* The kernel's TIME_WAIT sockets in this namespace, split by side. */
struct lab_tw {
	long total;
	long server;		/* local port is the server port */
	long client;		/* remote port is the server port */
};
/*
 * Counts them with sock_diag; server_port 0 counts only the total. First
 * waits (up to 1 s, see lab_settle()) for closes still on the wire to end:
 * a socket in FIN_WAIT2 becomes TIME_WAIT only when the peer's FIN arrives.
 */
void lab_tw_count(struct lab_tw *out, int server_port);
/*
 * Waits up to timeout_ms until no TCP socket of the namespace is in
 * FIN_WAIT1, FIN_WAIT2, CLOSING or LAST_ACK. Returns true when none is left
 * (a peer that never closes keeps FIN_WAIT2: then it returns false).
 */
bool lab_settle(int timeout_ms);
/* TIME_WAIT sockets in the namespace (sock_diag) */
long lab_tw_total(void);
/*
 * The TIME_WAIT sockets themselves as a JSON array of
 * {"local": "127.0.0.1:40001", "remote": "127.0.0.1:8080"} in the record's
 * address format. The caller owns the reference.
 */
json_t *lab_tw_list(void);
/*
 * "LOCAL REMOTE" of a close record or of a lab_tw_list() entry (both carry
 * "local" and "remote" in the same text): a key that matches the two by
 * 4-tuple. Lives until the test process exits.
 */
const char *lab_tuple_key(const json_t *obj);
/* Which of the kernel's TIME_WAIT sockets lab_tw_match() compares. */
enum lab_tw_side {
	LAB_TW_ALL,		/* every one in the namespace */
	LAB_TW_SERVER,		/* local port is the server port */
	LAB_TW_CLIENT,		/* remote port is the server port */
};
/* What lab_tw_match() found. */
struct lab_tw_diff {
	size_t extra;		/* records with tw=local and no TIME_WAIT socket */
	size_t orphans;		/* TIME_WAIT sockets that no such record stands for */
	const char *text;	/* both counts and up to 5 of each, for a failure
				 * message; "" when both are 0 (lives until exit) */
};
/*
 * Matches the records with tw=local to the kernel's TIME_WAIT sockets
 * (lab_tw_list()) one for one by 4-tuple. side and server_port select the
 * sockets that count (server_port is not looked at with LAB_TW_ALL); skip,
 * when not NULL, is a JSON object whose keys are lab_tuple_key() 4-tuples
 * whose TIME_WAIT sockets are left out. A record older than 55 s whose
 * socket is gone does not count: TIME_WAIT lasts 60 s, and a slow run (a
 * sanitizer build) outlives it. Fails the test only when a record
 * lacks local or remote (check the records first); the caller asserts on
 * out->extra and out->orphans as its scenario needs.
 */
void lab_tw_match(struct lab_tw_diff *out, const json_t *recs, enum lab_tw_side side,
		  int server_port, const json_t *skip);
/* TCP sockets in the given state (1 << TW_* bits of record.h) */
long lab_tcp_count(uint32_t states);
/*
 * lab_tw_count(server_port), then fails the test unless the client side
 * holds `client` TIME_WAIT sockets and the server side `server`; -1 leaves
 * that side unchecked.
 */
void lab_assert_tw(int server_port, long client, long server);

/*
 * The holder processes (twshim-hold) in this network namespace: their pids
 * in pids (up to max), and how many there are.
 */
int lab_holders(int *pids, int max);
/*
 * Reads a JSON-Lines close-record file into an array (owned by the caller).
 * Fails the test when a line is not one complete JSON object ending in a
 * newline. A missing file is an empty array. First waits (up to 15 s) for
 * the holders of this namespace to end: the connections a program left
 * deferred at its exit end in them, and so do their records.
 */
json_t *lab_records(const char *path);
/*
 * Checks every record against the record schema of the spec: field types,
 * known values, end/tw agreement. Fails the test on the first mismatch.
 */
void lab_records_check(const json_t *recs);
/* lab_records() and then lab_records_check(): the records of path, checked. */
json_t *lab_records_checked(const char *path);
/*
 * lab_records_checked(), then fails the test unless it holds n records and
 * each matches want (a filter as in lab_rec_count; NULL: not checked).
 * Returns the records (owned by the caller).
 */
json_t *lab_records_expect(const char *path, size_t n, const char *want);
/*
 * Counts records matching a filter: comma-separated terms, each
 * "key=value" (equal: strings as text, numbers and booleans by their JSON
 * text), "key!=value", "key" (present) or "!key" (absent). E.g.
 * "role=client,end=active,tw=local,pid=1234". "" matches all.
 */
size_t lab_rec_count(const json_t *recs, const char *filter);
/* Fails the test, with lab_rec_summary(), unless n records match filter. */
void lab_rec_assert_count(const json_t *recs, const char *filter, size_t n);
/* the first record matching filter, or NULL */
json_t *lab_rec_find(const json_t *recs, const char *filter);
/* does one record match the filter? */
bool lab_rec_match(const json_t *rec, const char *filter);
/*
 * Fails the test unless every record matching sel also matches want, naming
 * the first that does not.
 */
void lab_rec_assert_all(const json_t *recs, const char *sel, const char *want);
/*
 * One line for failure messages: how many records, and how many of each
 * role, policy, state, end, tw and via value, e.g. "3 records: role client=3
 * end active=2 passive=1 ...". Lives until the test process exits.
 */
const char *lab_rec_summary(const json_t *recs);
/*
 * Waits until the file holds at least n records matching filter, up to
 * timeout_ms (deferred connections end after the program's close). Returns
 * the records read last (owned by the caller); does not fail on timeout.
 */
json_t *lab_records_wait(const char *path, const char *filter, size_t n, int timeout_ms);
/*
 * lab_records_wait() for n records (any), then as lab_records_expect() on
 * the records read: each checked against the schema, exactly n of them,
 * each matching want (NULL: not checked). Returns them (owned by the caller).
 */
json_t *lab_records_wait_expect(const char *path, size_t n, const char *want, int timeout_ms);

/* Sleeps ms milliseconds. */
void lab_sleep_ms(int ms);

/*
 * A Python script (lab_path("pairs.py")) that makes connection pairs inside
 * one process: `python3 SCRIPT plain|client|vfork|defer N`. plain: N pairs,
 * each server end closed first, then the client end at its EOF; client: the
 * client end first (its TIME_WAIT ports stay out of new connects); vfork:
 * as plain, with a subprocess run before each close; defer: N pairs opened,
 * every server end closed, then each client end at its EOF. Prints "done".
 */
const char *lab_pairs_script(void);

/* The lines of text that hold word. */
size_t lab_lines_with(const char *text, const char *word);
/* The lines of text that start with "twshim[" (the library's own lines). */
size_t lab_shim_lines(const char *text);

#endif
