// SPDX-License-Identifier: MIT
/*
 * twshim tw: the TIME_WAIT sockets the kernel holds in this network
 * namespace, each attributed through its 4-tuple to the close record that
 * made it. The kernel cannot say which process a TIME_WAIT socket belonged
 * to (sock_diag reports inode 0), so the records are the only witness.
 *
 * The kernel's list is read first and indexed by 4-tuple; the records are
 * then streamed past it, so memory grows with the TIME_WAIT sockets, not
 * with the size of the logs.
 */
#include <errno.h>
#include <getopt.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "defaults.h"
#include "diag.h"
#include "record.h"
#include "tool.h"

/* a record this much older than TIME_WAIT's 60 s cannot have made a socket still there */
#define TW_MATCH_SLACK_SEC	5
/* rows shown per table for people; --json has them all */
#define TW_TOP			20

static const char tw_usage[] =
	"usage: twshim tw [--json] [LOG...]\n"
	"\n"
	"Lists the TIME_WAIT sockets the kernel holds now in this network namespace\n"
	"(sock_diag). With LOG files of close records, each socket is matched by its\n"
	"4-tuple to the newest record with tw=local, and the sockets are counted per\n"
	"process (name and pid); the rest are counted by why they could not be\n"
	"attributed: 'no record' (no record has that 4-tuple) or 'record too old'\n"
	"(the newest such record is more than 65 s old, so a later connection that\n"
	"was not recorded made the socket). Without LOG files the sockets are\n"
	"counted by local endpoint and by remote endpoint.\n"
	"\n"
	"  -j, --json   one JSON object instead of tables\n"
	"  -h, --help   this text\n"
	"\n"
	"Exit status: 0, 1 when sock_diag or a LOG cannot be read, 2 usage error.\n";

struct tw_sock {
	struct tw_addr local, remote;
	uint32_t expires_ms;
	bool matched;
	double ts;		/* of the newest matching record */
	long long pid;
	char *comm;
};

struct tw_state {
	struct tw_sock *s;
	size_t n, cap;
	uint32_t *index;	/* open addressing: socket index + 1; 0 empty */
	size_t index_cap;
	bool oom;
};

static uint64_t tuple_hash(const struct tw_addr *l, const struct tw_addr *r)
{
	uint64_t h = 1469598103934665603ull;
	const struct tw_addr *e[2] = { l, r };

	for (int k = 0; k < 2; k++) {
		for (int i = 0; i < 16; i++) {
			h ^= e[k]->a[i];
			h *= 1099511628211ull;
		}
		h ^= e[k]->port;
		h *= 1099511628211ull;
	}
	return h;
}

static bool addr_eq(const struct tw_addr *x, const struct tw_addr *y)
{
	return x->port == y->port && memcmp(x->a, y->a, 16) == 0;
}

static int collect_cb(const struct diag_sock *d, void *arg)
{
	struct tw_state *st = arg;

	if (st->n == st->cap) {
		size_t cap = st->cap ? st->cap * 2 : 256;
		struct tw_sock *s = realloc(st->s, cap * sizeof(*s));

		if (!s)
			return -ENOMEM;
		st->s = s;
		st->cap = cap;
	}
	memset(&st->s[st->n], 0, sizeof(st->s[0]));
	st->s[st->n].local = d->local;
	st->s[st->n].remote = d->remote;
	st->s[st->n].expires_ms = d->expires_ms;
	st->n++;
	return 0;
}

static int index_build(struct tw_state *st)
{
	size_t cap = 64;

	while (cap < st->n * 2)
		cap *= 2;
	st->index = calloc(cap, sizeof(*st->index));
	if (!st->index)
		return -ENOMEM;
	st->index_cap = cap;
	for (size_t i = 0; i < st->n; i++) {
		size_t j = tuple_hash(&st->s[i].local, &st->s[i].remote) & (cap - 1);

		while (st->index[j])
			j = (j + 1) & (cap - 1);
		st->index[j] = (uint32_t)(i + 1);
	}
	return 0;
}

/* Each record with tw=local updates the socket with its 4-tuple if it is the newest yet. */
static int match_cb(const struct rec *r, void *arg)
{
	struct tw_state *st = arg;
	size_t j;

	if (r->tw != TW_TW_LOCAL)
		return 0;
	j = tuple_hash(&r->local, &r->remote) & (st->index_cap - 1);
	for (; st->index[j]; j = (j + 1) & (st->index_cap - 1)) {
		struct tw_sock *s = &st->s[st->index[j] - 1];
		char *comm;

		if (!addr_eq(&s->local, &r->local) || !addr_eq(&s->remote, &r->remote))
			continue;
		if (s->matched && s->ts >= r->ts)
			return 0;
		comm = strndup(r->comm.p, r->comm.n);
		if (!comm) {
			st->oom = true;
			return -ENOMEM;
		}
		free(s->comm);
		s->comm = comm;
		s->matched = true;
		s->ts = r->ts;
		s->pid = r->pid;
		return 0;
	}
	return 0;
}

struct count_row {
	const char *key;	/* comm, or an endpoint's text */
	long long pid;
	unsigned long n;
};

static int cmp_key_pid(const void *a, const void *b)
{
	const struct count_row *x = a, *y = b;
	int c = strcmp(x->key, y->key);

	if (c)
		return c;
	return x->pid < y->pid ? -1 : x->pid > y->pid;
}

static int cmp_count(const void *a, const void *b)
{
	const struct count_row *x = a, *y = b;

	if (x->n != y->n)
		return x->n > y->n ? -1 : 1;
	return cmp_key_pid(a, b);
}

/* Folds rows with equal key and pid into one with their count; sorts by count. */
static size_t fold(struct count_row *rows, size_t n)
{
	size_t out = 0;

	qsort(rows, n, sizeof(*rows), cmp_key_pid);
	for (size_t i = 0; i < n; i++) {
		if (out && !cmp_key_pid(&rows[out - 1], &rows[i])) {
			rows[out - 1].n += rows[i].n;
			continue;
		}
		rows[out++] = rows[i];
	}
	qsort(rows, out, sizeof(*rows), cmp_count);
	return out;
}

static void print_rows(const char *head, const struct count_row *rows, size_t n, bool pid)
{
	const char *h[3] = { head, pid ? "PID" : "TIME_WAIT", "TIME_WAIT" };
	char c1[24], c2[24];
	const char *row[3];
	struct table t;
	size_t cols = pid ? 3 : 2;

	table_init(&t, cols);
	t.right[cols - 1] = true;
	if (pid)
		t.right[1] = true;
	table_add(&t, h);
	for (size_t i = 0; i < n && i < TW_TOP; i++) {
		snprintf(c1, sizeof(c1), "%lld", rows[i].pid);
		snprintf(c2, sizeof(c2), "%lu", rows[i].n);
		row[0] = rows[i].key;
		row[1] = pid ? c1 : c2;
		row[2] = c2;
		table_add(&t, row);
	}
	table_print(&t, stdout);
	table_free(&t);
	if (n > TW_TOP)
		printf("... and %zu more\n", n - TW_TOP);
}

static json_t *rows_json(const struct count_row *rows, size_t n, const char *keyname,
			 bool pid)
{
	json_t *arr = json_array();

	for (size_t i = 0; i < n; i++) {
		json_t *o = json_pack("{s:s,s:I}", keyname, rows[i].key, "timewait",
				      (json_int_t)rows[i].n);

		if (pid)
			json_object_set_new(o, "pid", json_integer(rows[i].pid));
		json_array_append_new(arr, o);
	}
	return arr;
}

/* Without records: TIME_WAIT per local endpoint and per remote endpoint. */
static int show_endpoints(const struct tw_state *st, bool json)
{
	struct count_row *loc, *rem;
	char (*text)[2][TW_ADDR_STRLEN];
	size_t nl, nr;
	int ret = 0;

	loc = calloc(st->n + 1, sizeof(*loc));
	rem = calloc(st->n + 1, sizeof(*rem));
	text = calloc(st->n + 1, sizeof(*text));
	if (!loc || !rem || !text) {
		ret = -ENOMEM;
		goto out;
	}
	for (size_t i = 0; i < st->n; i++) {
		addr_format(text[i][0], &st->s[i].local);
		addr_format(text[i][1], &st->s[i].remote);
		loc[i] = (struct count_row){ .key = text[i][0], .n = 1 };
		rem[i] = (struct count_row){ .key = text[i][1], .n = 1 };
	}
	nl = fold(loc, st->n);
	nr = fold(rem, st->n);
	if (json) {
		json_t *root = json_pack("{s:I,s:o,s:o}", "timewait", (json_int_t)st->n,
					 "by_local", rows_json(loc, nl, "endpoint", false),
					 "by_remote", rows_json(rem, nr, "endpoint", false));

		json_dumpf(root, stdout, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
		fputc('\n', stdout);
		json_decref(root);
	} else {
		printf("TIME_WAIT sockets in this network namespace: %zu\n", st->n);
		if (st->n) {
			putchar('\n');
			print_rows("LOCAL", loc, nl, false);
			putchar('\n');
			print_rows("REMOTE", rem, nr, false);
		}
	}
out:
	free(loc);
	free(rem);
	free(text);
	return ret;
}

/* With records: TIME_WAIT per process, and what could not be attributed. */
static int show_processes(const struct tw_state *st, double now, bool json,
			  const struct rec_stats *rs)
{
	unsigned long no_record = 0, too_old = 0;
	struct count_row *rows;
	size_t n = 0, attributed;

	rows = calloc(st->n + 1, sizeof(*rows));
	if (!rows)
		return -ENOMEM;
	for (size_t i = 0; i < st->n; i++) {
		const struct tw_sock *s = &st->s[i];

		if (!s->matched)
			no_record++;
		else if (s->ts < now - TW_TIMEWAIT_SEC - TW_MATCH_SLACK_SEC)
			too_old++;
		else
			rows[n++] = (struct count_row){ .key = s->comm, .pid = s->pid, .n = 1 };
	}
	attributed = n;
	n = fold(rows, n);
	if (json) {
		json_t *root = json_pack("{s:I,s:I,s:o,s:{s:I,s:I},s:I,s:I}",
					 "timewait", (json_int_t)st->n,
					 "attributed", (json_int_t)attributed,
					 "processes", rows_json(rows, n, "comm", true),
					 "unattributed",
					 "no_record", (json_int_t)no_record,
					 "record_too_old", (json_int_t)too_old,
					 "records", (json_int_t)rs->records,
					 "malformed", (json_int_t)rs->malformed);

		json_dumpf(root, stdout, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
		fputc('\n', stdout);
		json_decref(root);
	} else {
		printf("TIME_WAIT sockets in this network namespace: %zu, attributed: %zu\n",
		       st->n, attributed);
		if (n) {
			putchar('\n');
			print_rows("PROCESS", rows, n, true);
		}
		if (no_record || too_old) {
			struct count_row why[2] = {
				{ .key = "no record", .n = no_record },
				{ .key = "record too old", .n = too_old },
			};

			putchar('\n');
			print_rows("NOT ATTRIBUTED", why, 2, false);
		}
	}
	free(rows);
	return 0;
}

int cmd_tw(int argc, char **argv)
{
	static const struct option longopts[] = {
		{ "json", no_argument, NULL, 'j' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	struct tw_state st = { 0 };
	struct rec_stats rs = { 0 };
	bool json = false;
	double now;
	int opt, ret = EXIT_OK, err;

	opterr = 0;
	optind = 1;
	while ((opt = getopt_long(argc, argv, "+jh", longopts, NULL)) != -1) {
		switch (opt) {
		case 'j':
			json = true;
			break;
		case 'h':
			fputs(tw_usage, stdout);
			return EXIT_OK;
		default:
			return usage_error("tw", "%s: unknown option", argv[optind - 1]);
		}
	}

	now = now_realtime();
	err = diag_dump(1u << TW_TIME_WAIT, collect_cb, &st);
	if (err) {
		fprintf(stderr, "twshim tw: sock_diag: %s\n", strerror(-err));
		ret = EXIT_FAIL;
		goto out;
	}
	if (optind >= argc) {
		if (show_endpoints(&st, json))
			ret = EXIT_FAIL;
		goto out;
	}
	if (index_build(&st)) {
		ret = EXIT_FAIL;
		goto out;
	}
	for (int i = optind; i < argc && !st.oom; i++)
		if (records_read("twshim tw", argv[i], match_cb, &st, &rs))
			ret = EXIT_FAIL;
	records_summary("twshim tw", &rs);
	if (st.oom || show_processes(&st, now, json, &rs)) {
		fprintf(stderr, "twshim tw: out of memory\n");
		ret = EXIT_FAIL;
	}
out:
	for (size_t i = 0; i < st.n; i++)
		free(st.s[i].comm);
	free(st.s);
	free(st.index);
	if (fflush(stdout))
		ret = EXIT_FAIL;
	return ret;
}
