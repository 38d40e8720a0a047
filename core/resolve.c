/* SPDX-License-Identifier: MIT */
/*
 * The policy of one connection, from a loaded struct conf: the top level,
 * then the first rule that matches, then the A/B arm drawn in the `ab` group
 * of that rule (or of the top level when no rule matches). conf_resolve()
 * runs at every connect and accept, in any thread: it reads struct conf only,
 * allocates nothing and compares addresses as two masked 64-bit words.
 */
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "conf_impl.h"
#include "config.h"
#include "defaults.h"

/* splitmix64: spreads one seed over the per-process draws of several groups */
static uint64_t mix64(uint64_t x)
{
	x += 0x9e3779b97f4a7c15ull;
	x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
	x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
	return x ^ (x >> 31);
}

/*
 * The arm (index within the group) that rnd falls on. rnd * total / 2^64
 * uses the high bits of rnd and, unlike rnd % total, has no bias worth
 * naming for totals far below 2^64.
 */
static unsigned ab_pick(const struct conf *c, const struct conf_ab *ab, uint64_t rnd)
{
	uint64_t x = (uint64_t)(((unsigned __int128)rnd * ab->total) >> 64);
	unsigned i;

	for (i = 0; i + 1 < ab->n; i++)
		if (x < c->arms[ab->first + i].cum)
			break;
	return i;
}

static void level_apply(struct tw_policy *p, const struct conf_level *lv)
{
	uint32_t s = lv->set;

	if (s & CONF_BIT(CONF_K_CLOSE))
		p->close = lv->close;
	if (s & CONF_BIT(CONF_K_FALLBACK))
		p->fallback = lv->fallback;
	if (s & CONF_BIT(CONF_K_LOG))
		p->sink = lv->sink;
	if (s & CONF_BIT(CONF_K_DEFER_MS))
		p->defer_ms = lv->defer_ms;
	if (s & CONF_BIT(CONF_K_EXIT_WAIT_MS))
		p->exit_wait_ms = lv->exit_wait_ms;
	if (s & CONF_BIT(CONF_K_LOG_SAMPLE))
		p->sample = lv->sample;
	if (s & CONF_BIT(CONF_K_LOG_ONLY))
		p->log_only = lv->log_only;
	if (s & CONF_BIT(CONF_K_LEARN))
		p->learn = lv->learn;
}

/* The remote address as IPv6 (IPv4 mapped) in two words; false when unknown. */
static bool remote_words(const struct sockaddr *sa, socklen_t len, uint64_t w[2])
{
	uint8_t a[16];

	if (!sa || len < (socklen_t)sizeof(sa_family_t))
		return false;
	if (sa->sa_family == AF_INET && len >= (socklen_t)sizeof(struct sockaddr_in)) {
		const struct sockaddr_in *in = (const struct sockaddr_in *)sa;

		memset(a, 0, 10);
		a[10] = 0xff;
		a[11] = 0xff;
		memcpy(a + 12, &in->sin_addr, 4);
	} else if (sa->sa_family == AF_INET6 &&
		   len >= (socklen_t)sizeof(struct sockaddr_in6)) {
		const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)sa;

		memcpy(a, &in6->sin6_addr, 16);
	} else {
		return false;
	}
	memcpy(w, a, 16);
	return true;
}

/*
 * The top level, then the first rule whose every match key matches (and the
 * arm drawn in its ab group), else the arm drawn in the top-level ab group.
 * Keys a level does not name come from the level before.
 */
void conf_resolve(const struct conf *c, enum tw_role role, const struct sockaddr *remote,
		  socklen_t remote_len, uint16_t port, uint64_t rnd, struct tw_policy *out)
{
	const struct conf_ab *ab = NULL;
	const struct conf_rule *r;
	uint64_t w[2];
	int have_addr = -1;	/* not looked at yet */
	unsigned i;
	size_t k;

	memset(out, 0, sizeof(*out));
	out->sink = TW_SINK_NONE;
	out->defer_ms = TW_DEFER_MS_DEFAULT;
	out->exit_wait_ms = TW_EXIT_WAIT_MS_DEFAULT;
	out->learn = true;
	if (!c)
		return;
	level_apply(out, &c->top);

	for (k = 0; k < c->nrules; k++) {
		r = &c->rules[k];
		if ((r->match & CONF_M_ROLE) && r->role != (uint8_t)role)
			continue;
		if ((r->match & CONF_M_PORT) && r->port != port)
			continue;
		if (r->match & CONF_M_REMOTE) {
			if (have_addr < 0)
				have_addr = remote_words(remote, remote_len, w);
			if (!have_addr || ((w[0] & r->mask[0]) != r->net[0]) ||
			    ((w[1] & r->mask[1]) != r->net[1]))
				continue;
		}
		level_apply(out, &r->lv);
		if (r->ab >= 0)
			ab = &c->abs[r->ab];
		goto arm;
	}
	if (c->top_ab >= 0)
		ab = &c->abs[c->top_ab];
arm:
	if (!ab)
		return;
	i = ab->split == CONF_SPLIT_PROCESS ? ab->drawn : ab_pick(c, ab, rnd);
	level_apply(out, &c->arms[ab->first + i].lv);
	out->arm = (uint8_t)(1 + ab->first + i);
}

bool conf_port_matters(const struct conf *c, enum tw_role role)
{
	if (!c)
		return false;
	for (size_t k = 0; k < c->nrules; k++) {
		const struct conf_rule *r = &c->rules[k];

		if ((r->match & CONF_M_PORT) &&
		    (!(r->match & CONF_M_ROLE) || r->role == (uint8_t)role))
			return true;
	}
	return false;
}

/* A level that could give a record or a close other than normal. */
static bool level_closes(const struct conf_level *lv)
{
	return (lv->set & CONF_BIT(CONF_K_CLOSE)) && lv->close != TW_CLOSE_NORMAL;
}

static bool level_tracks(const struct conf_level *lv)
{
	return ((lv->set & CONF_BIT(CONF_K_LOG)) && lv->sink != TW_SINK_NONE) ||
	       ((lv->set & CONF_BIT(CONF_K_STATS)) && lv->stats != TW_SINK_NONE) ||
	       level_closes(lv);
}

/* Copies process-wide key k (reuseaddr, stats) from lv to out; false when lv does not name it. */
static bool proc_key(const struct conf_level *lv, enum conf_key k, struct conf_level *out)
{
	if (!(lv->set & CONF_BIT(k)))
		return false;
	if (k == CONF_K_REUSEADDR)
		out->reuseaddr = lv->reuseaddr;
	else
		out->stats = lv->stats;
	return true;
}

/* Key k from a level and, for split=process, its drawn arm; false: not named */
static bool level_proc(const struct conf *c, const struct conf_level *lv, int abi,
		       enum conf_key k, struct conf_level *out)
{
	bool named = proc_key(lv, k, out);

	if (abi >= 0 && c->abs[abi].split == CONF_SPLIT_PROCESS)
		named |= proc_key(&c->arms[c->abs[abi].first + c->abs[abi].drawn].lv, k, out);
	return named;
}

/*
 * A key that acts for the whole process: the top level (and its drawn arm),
 * overridden by the first rule that only `process` selects (or nothing) and
 * that names it, itself or in its drawn arm.
 */
static void proc_settle(const struct conf *c, enum conf_key k, struct conf_level *out)
{
	size_t i;

	level_proc(c, &c->top, c->top_ab, k, out);
	for (i = 0; i < c->nrules; i++)
		if (c->rules[i].reuse_sel && level_proc(c, &c->rules[i].lv, c->rules[i].ab, k, out))
			break;
}

/* Draws the per-process arms and settles reuseaddr and stats. */
void conf_reseed(struct conf *c, uint64_t rnd)
{
	struct conf_level v = { .reuseaddr = false, .stats = TW_SINK_NONE };
	size_t k;

	if (!c)
		return;
	for (k = 0; k < c->nabs; k++)
		if (c->abs[k].split == CONF_SPLIT_PROCESS)
			c->abs[k].drawn = (uint8_t)ab_pick(c, &c->abs[k], mix64(rnd + k));
	proc_settle(c, CONF_K_REUSEADDR, &v);
	proc_settle(c, CONF_K_STATS, &v);
	c->reuseaddr = v.reuseaddr;
	c->stats = v.stats;
}

static void sink_mark(const struct conf_level *lv, bool *used)
{
	if ((lv->set & CONF_BIT(CONF_K_LOG)) && lv->sink != TW_SINK_NONE)
		used[lv->sink] = true;
}

static void sink_renumber(struct conf_level *lv, const uint8_t *map)
{
	if ((lv->set & CONF_BIT(CONF_K_LOG)) && lv->sink != TW_SINK_NONE)
		lv->sink = map[lv->sink];
}

/*
 * Drops the log destinations no level uses any more (a file's `log` that
 * TWSHIM_OPTIONS replaced, say), so that no one opens a file nobody wants.
 */
static void sinks_prune(struct conf *c)
{
	bool used[TW_SINKS_MAX] = { false };
	uint8_t map[TW_SINKS_MAX];
	size_t k, n = 0;

	sink_mark(&c->top, used);
	for (k = 0; k < c->nrules; k++)
		sink_mark(&c->rules[k].lv, used);
	for (k = 0; k < c->narms; k++)
		sink_mark(&c->arms[k].lv, used);
	for (k = 0; k < c->nsinks; k++) {
		if (!used[k]) {
			free(c->sinks[k]);
			continue;
		}
		map[k] = (uint8_t)n;
		c->sinks[n++] = c->sinks[k];
	}
	c->nsinks = n;
	sink_renumber(&c->top, map);
	for (k = 0; k < c->nrules; k++)
		sink_renumber(&c->rules[k].lv, map);
	for (k = 0; k < c->narms; k++)
		sink_renumber(&c->arms[k].lv, map);
}

void conf_finish(struct conf *c, uint64_t seed)
{
	size_t k;

	sinks_prune(c);

	c->tracking = level_tracks(&c->top);
	c->closing = level_closes(&c->top);
	for (k = 0; k < c->nrules; k++) {
		c->tracking |= level_tracks(&c->rules[k].lv);
		c->closing |= level_closes(&c->rules[k].lv);
	}
	for (k = 0; k < c->narms; k++) {
		c->tracking |= level_tracks(&c->arms[k].lv);
		c->closing |= level_closes(&c->arms[k].lv);
	}
	conf_reseed(c, seed);
}

bool conf_tracking(const struct conf *c)
{
	return c && c->tracking;
}

bool conf_closing(const struct conf *c)
{
	return c && c->closing;
}

bool conf_reuseaddr(const struct conf *c)
{
	return c && c->reuseaddr;
}

size_t conf_nsinks(const struct conf *c)
{
	return c ? c->nsinks : 0;
}

const char *conf_sink(const struct conf *c, size_t i)
{
	return c && i < c->nsinks ? c->sinks[i] : NULL;
}

uint32_t conf_log_sample(const struct conf *c, const struct tw_policy *p)
{
	return c && p->sample && p->sample <= c->nsamples ? c->samples[p->sample - 1] : 1;
}

const char *conf_stats_dir(const struct conf *c)
{
	return c && c->stats < c->ndirs ? c->dirs[c->stats] : NULL;
}

const char *conf_arm_name(const struct conf *c, unsigned arm)
{
	return c && arm >= 1 && arm <= c->narms ? c->arms[arm - 1].name : NULL;
}
