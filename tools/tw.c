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

/*
 * With records: the TIME_WAIT sockets of st counted per process (comm and
 * pid), and what could not be attributed. Takes st over.
 */
static int attribute(struct tw_state *st, double now, struct tw_attribution *a)
{
	struct count_row *rows;
	size_t n = 0;

	rows = calloc(st->n + 1, sizeof(*rows));
	if (!rows)
		return -ENOMEM;
	for (size_t i = 0; i < st->n; i++) {
		const struct tw_sock *s = &st->s[i];

		if (!s->matched)
			a->no_record++;
		else if (s->ts < now - TW_TIMEWAIT_SEC - TW_MATCH_SLACK_SEC)
			a->too_old++;
		else
			rows[n++] = (struct count_row){ .key = s->comm, .pid = s->pid, .n = 1 };
	}
	a->total = st->n;
	a->attributed = n;
	a->rows = rows;
	a->nrows = fold(rows, n);
	a->priv = st;
	return 0;
}

static void state_free(struct tw_state *st)
{
	for (size_t i = 0; i < st->n; i++)
		free(st->s[i].comm);
	free(st->s);
	free(st->index);
}

void tw_attribution_free(struct tw_attribution *a)
{
	if (a->priv) {
		state_free(a->priv);
		free(a->priv);
	}
	free(a->rows);
	memset(a, 0, sizeof(*a));
}

int tw_attribute(const char *prog, char *const *logs, int nlogs, struct tw_attribution *a)
{
	struct tw_state *st = calloc(1, sizeof(*st));
	double now = now_realtime();
	int err, ret = 0;

	memset(a, 0, sizeof(*a));
	if (!st)
		return -ENOMEM;
	err = diag_dump(1u << TW_TIME_WAIT, collect_cb, st);
	if (err) {
		fprintf(stderr, "%s: sock_diag: %s\n", prog, strerror(-err));
		ret = err;
		goto fail;
	}
	if (index_build(st)) {
		ret = -ENOMEM;
		goto fail;
	}
	for (int i = 0; i < nlogs && !st->oom; i++)
		if (records_read(prog, logs[i], match_cb, st, &a->rs))
			ret = -EIO;
	records_summary(prog, &a->rs);
	if (st->oom || attribute(st, now, a)) {
		fprintf(stderr, "%s: out of memory\n", prog);
		ret = -ENOMEM;
		goto fail;
	}
	return ret;
fail:
	state_free(st);
	free(st);
	return ret;
}

/* With records: TIME_WAIT per process, and what could not be attributed. */
static void show_processes(const struct tw_attribution *a, bool json)
{
	if (json) {
		json_t *root = json_pack("{s:I,s:I,s:o,s:{s:I,s:I},s:I,s:I}",
					 "timewait", (json_int_t)a->total,
					 "attributed", (json_int_t)a->attributed,
					 "processes", rows_json(a->rows, a->nrows, "comm", true),
					 "unattributed",
					 "no_record", (json_int_t)a->no_record,
					 "record_too_old", (json_int_t)a->too_old,
					 "records", (json_int_t)a->rs.records,
					 "malformed", (json_int_t)a->rs.malformed);

		json_dumpf(root, stdout, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
		fputc('\n', stdout);
		json_decref(root);
	} else {
		printf("TIME_WAIT sockets in this network namespace: %zu, attributed: %zu\n",
		       a->total, a->attributed);
		if (a->nrows) {
			putchar('\n');
			print_rows("PROCESS", a->rows, a->nrows, true);
		}
		if (a->no_record || a->too_old) {
			struct count_row why[2] = {
				{ .key = "no record", .n = a->no_record },
				{ .key = "record too old", .n = a->too_old },
			};

			putchar('\n');
			print_rows("NOT ATTRIBUTED", why, 2, false);
		}
	}
}

int cmd_tw(int argc, char **argv)
{
	static const struct option longopts[] = {
		{ "json", no_argument, NULL, 'j' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	struct tw_state st = { 0 };
	struct tw_attribution a;
	bool json = false;
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

	if (optind < argc) {
		err = tw_attribute("twshim tw", argv + optind, argc - optind, &a);
		if (err == -EIO || !err)
			show_processes(&a, json);
		if (err)
			ret = EXIT_FAIL;
		tw_attribution_free(&a);
		goto out;
	}
	err = diag_dump(1u << TW_TIME_WAIT, collect_cb, &st);
	if (err) {
		fprintf(stderr, "twshim tw: sock_diag: %s\n", strerror(-err));
		ret = EXIT_FAIL;
	} else if (show_endpoints(&st, json)) {
		ret = EXIT_FAIL;
	}
	state_free(&st);
out:
	if (fflush(stdout))
		ret = EXIT_FAIL;
	return ret;
}
