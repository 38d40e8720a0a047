// SPDX-License-Identifier: MIT
/*
 * twshim report: close records aggregated per process, remote host, service
 * port or A/B arm. Records are streamed; memory grows with the number of
 * groups only.
 */
#include <errno.h>
#include <getopt.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "defaults.h"
#include "record.h"
#include "tool.h"

static const char report_usage[] =
	"usage: twshim report [--by process|remote|port|arm] [--json] LOG...\n"
	"\n"
	"Aggregates close records (JSON Lines; '-' reads standard input). Per group:\n"
	"connections, where TIME_WAIT landed (tw=local, peer, none), deferred closes,\n"
	"defer timeouts, HELD (ended by the holder after the program's exit or exec),\n"
	"LEARNED (the fallback at once, why=learned), WAITS (connects that waited for\n"
	"a port a deferred connection held), and TW_NOW: the TIME_WAIT sockets still\n"
	"held here (tw=local in the last 60 s).\n"
	"\n"
	"  -b, --by KEY   process (default: the process name), remote (remote host),\n"
	"                 port (service port: remote port of a client, local port of\n"
	"                 a server) or arm (A/B arm, '-' for none)\n"
	"  -j, --json     one JSON object: groups, totals, records, malformed\n"
	"  -h, --help     this text\n"
	"\n"
	"Lines that are not close records are counted, named on stderr (the first\n"
	"10) and skipped. Exit status: 0, 1 when a LOG cannot be read, 2 usage error.\n";

enum group_by { BY_PROCESS, BY_REMOTE, BY_PORT, BY_ARM };

static const char *const by_names[] = { "process", "remote", "port", "arm" };

struct group {
	char *key;
	struct counts c;
};

struct groups {
	struct group *slot;	/* open addressing; key NULL: empty */
	size_t cap, n;
};

struct report {
	enum group_by by;
	double now;
	struct groups g;
	struct counts total;
	bool oom;
};

void counts_add(struct counts *c, const struct rec *r, double now)
{
	unsigned long long w = r->sample ? r->sample : 1;

	c->conns += w;
	if (r->tw == TW_TW_LOCAL) {
		c->tw_local += w;
		if (r->ts > now - TW_TIMEWAIT_SEC)
			c->tw_now += w;
	} else if (r->tw == TW_TW_PEER) {
		c->tw_peer += w;
	} else {
		c->tw_none += w;
	}
	if (r->deferred)
		c->deferred += w;
	if (r->timeout)
		c->timeouts += w;
	c->held += r->held ? w : 0;
	c->learned += r->learned ? w : 0;
	c->connect_waits += r->connect_waited ? w : 0;
}

void counts_sum(struct counts *a, const struct counts *b)
{
	a->conns += b->conns;
	a->tw_local += b->tw_local;
	a->tw_peer += b->tw_peer;
	a->tw_none += b->tw_none;
	a->deferred += b->deferred;
	a->timeouts += b->timeouts;
	a->tw_now += b->tw_now;
	a->held += b->held;
	a->learned += b->learned;
	a->connect_waits += b->connect_waits;
}

void counts_json_defer(json_t *o, const struct counts *c)
{
	json_object_set_new(o, "held", json_integer((json_int_t)c->held));
	json_object_set_new(o, "learned", json_integer((json_int_t)c->learned));
	json_object_set_new(o, "connect_waits", json_integer((json_int_t)c->connect_waits));
}

static uint64_t hash_bytes(const char *p, size_t n)
{
	uint64_t h = 1469598103934665603ull;

	for (size_t i = 0; i < n; i++) {
		h ^= (unsigned char)p[i];
		h *= 1099511628211ull;
	}
	return h;
}

static int groups_grow(struct groups *g)
{
	size_t cap = g->cap ? g->cap * 2 : 64;
	struct group *slot = calloc(cap, sizeof(*slot));

	if (!slot)
		return -ENOMEM;
	for (size_t i = 0; i < g->cap; i++) {
		struct group *o = &g->slot[i];
		size_t j;

		if (!o->key)
			continue;
		j = hash_bytes(o->key, strlen(o->key)) & (cap - 1);
		while (slot[j].key)
			j = (j + 1) & (cap - 1);
		slot[j] = *o;
	}
	free(g->slot);
	g->slot = slot;
	g->cap = cap;
	return 0;
}

/* The group named key (n bytes), made when new; NULL when out of memory. */
static struct group *groups_get(struct groups *g, const char *key, size_t n)
{
	size_t j;

	if ((g->n + 1) * 10 > g->cap * 7 && groups_grow(g))
		return NULL;
	j = hash_bytes(key, n) & (g->cap - 1);
	while (g->slot[j].key) {
		if (strlen(g->slot[j].key) == n && memcmp(g->slot[j].key, key, n) == 0)
			return &g->slot[j];
		j = (j + 1) & (g->cap - 1);
	}
	g->slot[j].key = strndup(key, n);
	if (!g->slot[j].key)
		return NULL;
	g->n++;
	return &g->slot[j];
}

/* The remote host as text, without port or brackets; IPv4-mapped shown as IPv4. */
static size_t remote_host(char *buf, const struct tw_addr *a)
{
	char text[TW_ADDR_STRLEN];
	size_t n = addr_format(text, a);
	char *colon = strrchr(text, ':');

	n = (size_t)(colon - text);
	if (text[0] == '[') {
		memcpy(buf, text + 1, n - 2);
		n -= 2;
	} else {
		memcpy(buf, text, n);
	}
	buf[n] = '\0';
	return n;
}

static int report_cb(const struct rec *r, void *arg)
{
	struct report *rep = arg;
	char buf[TW_ADDR_STRLEN];
	const char *key = buf;
	struct group *g;
	size_t n;

	switch (rep->by) {
	case BY_PROCESS:
		key = r->comm.p;
		n = r->comm.n;
		break;
	case BY_REMOTE:
		n = remote_host(buf, &r->remote);
		break;
	case BY_PORT:
		n = (size_t)snprintf(buf, sizeof(buf), "%u",
				     r->server ? r->local.port : r->remote.port);
		break;
	default:
		if (r->arm.p) {
			key = r->arm.p;
			n = r->arm.n;
		} else {
			key = "-";
			n = 1;
		}
	}
	g = groups_get(&rep->g, key, n);
	if (!g) {
		rep->oom = true;
		return -ENOMEM;
	}
	counts_add(&g->c, r, rep->now);
	counts_add(&rep->total, r, rep->now);
	return 0;
}

static int cmp_group(const void *a, const void *b)
{
	const struct group *x = *(const struct group *const *)a;
	const struct group *y = *(const struct group *const *)b;

	if (x->c.conns != y->c.conns)
		return x->c.conns > y->c.conns ? -1 : 1;
	return strcmp(x->key, y->key);
}

static json_t *counts_json(const struct counts *c)
{
	json_t *o = json_pack("{s:I,s:I,s:I,s:I,s:I,s:I,s:I}",
			      "connections", (json_int_t)c->conns,
			      "tw_local", (json_int_t)c->tw_local,
			      "tw_peer", (json_int_t)c->tw_peer,
			      "tw_none", (json_int_t)c->tw_none,
			      "deferred", (json_int_t)c->deferred,
			      "timeouts", (json_int_t)c->timeouts,
			      "tw_now", (json_int_t)c->tw_now);

	if (o)
		counts_json_defer(o, c);
	return o;
}

#define NCELLS	10

static void counts_cells(const struct counts *c, char cells[NCELLS][24])
{
	const unsigned long long v[NCELLS] = { c->conns, c->tw_local, c->tw_peer, c->tw_none,
					       c->deferred, c->timeouts, c->held, c->learned,
					       c->connect_waits, c->tw_now };

	for (int i = 0; i < NCELLS; i++)
		snprintf(cells[i], sizeof(cells[i]), "%llu", v[i]);
}

static int print_json(const struct report *rep, struct group **sorted,
		      const struct rec_stats *st)
{
	json_t *root, *arr;
	int ret;

	arr = json_array();
	for (size_t i = 0; i < rep->g.n; i++) {
		json_t *o = json_pack("{s:s}", "key", sorted[i]->key);
		json_t *c = counts_json(&sorted[i]->c);

		json_object_update(o, c);
		json_decref(c);
		json_array_append_new(arr, o);
	}
	root = json_pack("{s:s,s:o,s:o,s:I,s:I}", "by", by_names[rep->by], "groups", arr,
			 "totals", counts_json(&rep->total), "records", (json_int_t)st->records,
			 "malformed", (json_int_t)st->malformed);
	if (!root)
		return -ENOMEM;
	ret = json_dumpf(root, stdout, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
	fputc('\n', stdout);
	json_decref(root);
	return ret ? -EIO : 0;
}

static void print_table(const struct report *rep, struct group **sorted)
{
	static const char *const upper[] = { "PROCESS", "REMOTE", "PORT", "ARM" };
	const char *head[NCELLS + 1] = { upper[rep->by], "CONNECTIONS", "TW_LOCAL", "TW_PEER",
					 "TW_NONE", "DEFERRED", "TIMEOUTS", "HELD", "LEARNED",
					 "WAITS", "TW_NOW" };
	char cells[NCELLS][24];
	const char *row[NCELLS + 1];
	struct table t;

	table_init(&t, NCELLS + 1);
	for (int i = 1; i <= NCELLS; i++)
		t.right[i] = true;
	table_add(&t, head);
	for (size_t i = 0; i < rep->g.n; i++) {
		counts_cells(&sorted[i]->c, cells);
		row[0] = sorted[i]->key;
		for (int k = 0; k < NCELLS; k++)
			row[k + 1] = cells[k];
		table_add(&t, row);
	}
	counts_cells(&rep->total, cells);
	row[0] = "TOTAL";
	for (int k = 0; k < NCELLS; k++)
		row[k + 1] = cells[k];
	table_add(&t, row);
	table_print(&t, stdout);
	table_free(&t);
	printf("TW_NOW: TIME_WAIT still held here (tw=local in the last %d s)\n",
	       TW_TIMEWAIT_SEC);
}

int cmd_report(int argc, char **argv)
{
	static const struct option longopts[] = {
		{ "by", required_argument, NULL, 'b' },
		{ "json", no_argument, NULL, 'j' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	struct report rep = { .by = BY_PROCESS };
	struct rec_stats st = { 0 };
	struct group **sorted = NULL;
	bool json = false;
	int opt, ret = EXIT_OK;
	size_t k;

	opterr = 0;
	optind = 1;
	while ((opt = getopt_long(argc, argv, "+b:jh", longopts, NULL)) != -1) {
		switch (opt) {
		case 'b':
			for (k = 0; k < 4; k++)
				if (!strcmp(optarg, by_names[k]))
					break;
			if (k == 4) {
				return usage_error("report", "--by %s: expected process, remote, "
						   "port or arm", optarg);
			}
			rep.by = (enum group_by)k;
			break;
		case 'j':
			json = true;
			break;
		case 'h':
			fputs(report_usage, stdout);
			return EXIT_OK;
		default:
			return usage_error("report", "%s: unknown option or missing argument",
					   argv[optind - 1]);
		}
	}
	if (optind >= argc) {
		return usage_error("report", "no LOG given ('-' reads standard input)");
	}

	rep.now = now_realtime();
	for (int i = optind; i < argc && !rep.oom; i++)
		if (records_read("twshim report", argv[i], report_cb, &rep, &st))
			ret = EXIT_FAIL;
	if (rep.oom) {
		fprintf(stderr, "twshim report: out of memory\n");
		ret = EXIT_FAIL;
		goto out;
	}
	records_summary("twshim report", &st);

	sorted = calloc(rep.g.n + 1, sizeof(*sorted));
	if (!sorted) {
		ret = EXIT_FAIL;
		goto out;
	}
	k = 0;
	for (size_t i = 0; i < rep.g.cap; i++)
		if (rep.g.slot[i].key)
			sorted[k++] = &rep.g.slot[i];
	qsort(sorted, rep.g.n, sizeof(*sorted), cmp_group);
	if (json) {
		if (print_json(&rep, sorted, &st))
			ret = EXIT_FAIL;
	} else {
		print_table(&rep, sorted);
		if (st.malformed)
			fprintf(stderr, "twshim report: %llu malformed line%s skipped\n",
				st.malformed, st.malformed == 1 ? "" : "s");
	}
	if (fflush(stdout))
		ret = EXIT_FAIL;
out:
	for (size_t i = 0; i < rep.g.cap; i++)
		free(rep.g.slot[i].key);
	free(rep.g.slot);
	free(sorted);
	return ret;
}
