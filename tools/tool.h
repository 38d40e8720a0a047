/* SPDX-License-Identifier: MIT */
/*
 * The twshim command-line tool: what its subcommands share.
 */
#ifndef TWSHIM_TOOL_H
#define TWSHIM_TOOL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include <jansson.h>

#include "addr.h"

/* where `make install` puts the library; the Makefile passes it */
#ifndef TW_LIBDIR
#define TW_LIBDIR "/usr/local/lib"
#endif

/* exit codes, the same for every subcommand */
#define EXIT_OK		0
#define EXIT_FAIL	1
#define EXIT_USAGE	2

/* malformed lines named on stderr per run of the tool; the rest are only counted */
#define MALFORMED_SHOWN	10

/* a string inside the line being read; not NUL-terminated */
struct strv {
	const char *p;
	size_t n;
};

/* The fields of one close record the tool uses, valid during the callback only. */
struct rec {
	double ts;
	long long pid;
	struct strv comm;
	bool server;		/* role */
	struct tw_addr local, remote;
	struct strv local_text, remote_text;
	struct strv arm;	/* p == NULL: no arm */
	uint8_t tw;		/* enum tw_where */
	bool deferred;		/* deferred_ms present */
	bool timeout;
	uint32_t sample;	/* log_sample: the record stands for this many connections */
	bool held;		/* ended by the holder after the program's exit or exec */
	bool learned;		/* why: learned */
	bool connect_waited;	/* its connect waited for a port a deferred connection held */
};

/* Counts kept over all files one command reads. */
struct rec_stats {
	unsigned long long records;
	unsigned long long malformed;
	unsigned long long shown;	/* malformed lines named on stderr so far */
	int open_errors;		/* files that could not be read */
};

/*
 * Reads close records from path ("-" for stdin), one JSON object a line,
 * and calls cb for each well-formed one. Blank lines are skipped; any other
 * line that is not a record is counted in stats->malformed and, for the
 * first MALFORMED_SHOWN, named on stderr as "prog: file:line: why". cb
 * returns 0 to go on. Returns 0, or -errno when the file could not be read
 * (also said on stderr).
 */
int records_read(const char *prog, const char *path, int (*cb)(const struct rec *r, void *arg),
		 void *arg, struct rec_stats *stats);
/* Says on stderr how many malformed lines were not named, if any. */
void records_summary(const char *prog, const struct rec_stats *stats);
/*
 * Parses one record line (no newline needed). Returns 0 and fills *r, or
 * -EINVAL with why in err. *r points into line, or into *hold, which the
 * caller must json_decref() (when not NULL) once done with *r.
 */
int record_parse(const char *line, size_t len, struct rec *r, void **hold, char *err,
		 size_t errlen);
/* Parses "1.2.3.4:80" or "[2001:db8::1]:80"; 0 or -EINVAL. */
int endpoint_parse(const char *text, size_t len, struct tw_addr *out);

/* wall clock in seconds, as the records' ts */
double now_realtime(void);
/* CLOCK_MONOTONIC in nanoseconds */
uint64_t now_mono_ns(void);
/* The directory of the running twshim binary (from /proc/self/exe), or "" */
const char *self_dir(void);
/* The preload library to use: next to the tool, in its ../lib, else TW_LIBDIR. */
const char *preload_lib_path(const char *cmd);
/*
 * Prepends lib to LD_PRELOAD, keeping what it held. 0 or -errno.
 */
int env_prepend_preload(const char *lib);
/* Appends item to the comma-separated *list (malloc'd, NULL: empty); 0 or -ENOMEM. */
int opt_list_append(char **list, const char *item);
/* Appends extra to TWSHIM_OPTIONS with a comma; 0 or -errno. */
int env_append_options(const char *extra);

/* What report and ab count for a set of records. */
struct counts {
	unsigned long long conns, tw_local, tw_peer, tw_none, deferred, timeouts, tw_now;
	unsigned long long held, learned, connect_waits;
};

/*
 * Adds one record, weighted by its sample (a sampled record stands for
 * `sample` connections); tw_now counts tw=local records newer than now -
 * TIME_WAIT's 60 s.
 */
void counts_add(struct counts *c, const struct rec *r, double now);
/* a += b */
void counts_sum(struct counts *a, const struct counts *b);
/* Sets "held", "learned" and "connect_waits" of c in o (a JSON object). */
void counts_json_defer(json_t *o, const struct counts *c);

/* A left-aligned text table for people; every cell a string. */
struct table {
	size_t ncols, nrows, cap;
	char **cells;		/* nrows * ncols */
	bool *right;		/* per column: align right (numbers) */
};

/*
 * s for a terminal: control characters, DEL, C1 controls and bytes that are
 * not well-formed UTF-8 become \xNN (malloc'd; NULL when out of memory).
 */
char *text_escape(const char *s);
/* a JSON string of s; text_escape()d when s is not UTF-8, never NULL but for ENOMEM */
json_t *json_text(const char *s);

void table_init(struct table *t, size_t ncols);
void table_add(struct table *t, const char *const *cells);
void table_print(const struct table *t, FILE *f);
void table_free(struct table *t);

/* "twshim CMD: message" and a pointer to --help on stderr; returns EXIT_USAGE */
int usage_error(const char *cmd, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* A count per key (and pid): what `twshim tw` shows. */
struct count_row {
	const char *key;	/* comm, or an endpoint's text */
	long long pid;
	unsigned long n;
};

/* The kernel's TIME_WAIT sockets now, attributed through close records (tools/tw.c). */
struct tw_attribution {
	size_t total, attributed;
	unsigned long no_record, too_old;	/* not attributed, and why */
	struct count_row *rows;			/* per comm and pid, most first */
	size_t nrows;
	struct rec_stats rs;
	void *priv;
};

/*
 * Reads the TIME_WAIT sockets with sock_diag and matches them to the
 * records in logs (errors said on stderr as "prog: ..."). Returns 0; -EIO
 * when a log could not be read (a is filled from the others); another
 * -errno when nothing could be counted. tw_attribution_free() a in any case.
 */
int tw_attribute(const char *prog, char *const *logs, int nlogs, struct tw_attribution *a);
void tw_attribution_free(struct tw_attribution *a);

int cmd_run(int argc, char **argv);
int cmd_report(int argc, char **argv);
int cmd_tw(int argc, char **argv);
int cmd_ab(int argc, char **argv);
int cmd_exporter(int argc, char **argv);
int cmd_enable(int argc, char **argv);
int cmd_disable(int argc, char **argv);
int cmd_status(int argc, char **argv);

#endif
