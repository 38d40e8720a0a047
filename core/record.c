// SPDX-License-Identifier: MIT
/*
 * The close record as one JSON line, and how a TCP state at the program's
 * close or shutdown decides the end. Written by hand rather than with a JSON
 * library because it runs on the close path, possibly in a signal handler:
 * no allocation, no stdio, no locale.
 */
#include <string.h>

#include "config.h"
#include "record.h"

struct out {
	char *p, *end;
	bool full;
};

static void put(struct out *o, const char *s, size_t n)
{
	if (o->full || (size_t)(o->end - o->p) < n) {
		o->full = true;
		return;
	}
	memcpy(o->p, s, n);
	o->p += n;
}

static void puts_lit(struct out *o, const char *s)
{
	put(o, s, strlen(s));
}

size_t fmt_u64(char *buf, uint64_t v)
{
	char tmp[20];
	size_t i = sizeof(tmp);

	do {
		tmp[--i] = (char)('0' + v % 10);
		v /= 10;
	} while (v);
	memcpy(buf, tmp + i, sizeof(tmp) - i);
	return sizeof(tmp) - i;
}

static void put_u64(struct out *o, uint64_t v)
{
	char tmp[20];

	put(o, tmp, fmt_u64(tmp, v));
}

/* v / 10^digits with exactly `digits` decimals */
static void put_fixed(struct out *o, uint64_t v, int digits)
{
	uint64_t div = 1;
	char frac[8];

	for (int i = 0; i < digits; i++)
		div *= 10;
	put_u64(o, v / div);
	put(o, ".", 1);
	v %= div;
	for (int i = digits - 1; i >= 0; i--) {
		frac[i] = (char)('0' + v % 10);
		v /= 10;
	}
	put(o, frac, (size_t)digits);
}

/*
 * A JSON string. Quotes, backslashes and control characters are escaped;
 * bytes that are not valid UTF-8 become U+FFFD so that the line stays valid
 * JSON whatever a process calls itself.
 */
static void put_str(struct out *o, const char *s)
{
	static const char hex[] = "0123456789abcdef";
	const unsigned char *u = (const unsigned char *)s;

	put(o, "\"", 1);
	while (*u) {
		unsigned char ch = *u;
		int len = 0;

		if (ch == '"' || ch == '\\') {
			char esc[2] = { '\\', (char)ch };

			put(o, esc, 2);
			u++;
			continue;
		}
		if (ch < 0x20 || ch == 0x7f) {
			char esc[6] = { '\\', 'u', '0', '0', hex[ch >> 4], hex[ch & 15] };

			put(o, esc, 6);
			u++;
			continue;
		}
		if (ch < 0x80) {
			const unsigned char *run = u;

			while (*u >= 0x20 && *u < 0x7f && *u != '"' && *u != '\\')
				u++;
			put(o, (const char *)run, (size_t)(u - run));
			continue;
		}
		if (ch >= 0xc2 && ch <= 0xdf)
			len = 2;
		else if (ch >= 0xe0 && ch <= 0xef)
			len = 3;
		else if (ch >= 0xf0 && ch <= 0xf4)
			len = 4;
		for (int i = 1; i < len; i++)
			if ((u[i] & 0xc0) != 0x80)
				len = 0;
		/* overlong, surrogate and out-of-range forms (RFC 3629) */
		if (len == 3 && ((ch == 0xe0 && u[1] < 0xa0) || (ch == 0xed && u[1] > 0x9f)))
			len = 0;
		if (len == 4 && ((ch == 0xf0 && u[1] < 0x90) || (ch == 0xf4 && u[1] > 0x8f)))
			len = 0;
		if (!len) {
			put(o, "\\ufffd", 6);
			u++;
			continue;
		}
		put(o, (const char *)u, (size_t)len);
		u += len;
	}
	put(o, "\"", 1);
}

/* a literal, its length known at compile time */
#define PUT_LIT(o, lit)	put((o), (lit), sizeof(lit) - 1)
/* ,"key": */
#define PUT_KEY(o, key)	PUT_LIT((o), ",\"" key "\":")

/* one of the record's own names (role, state, ...): nothing to escape */
static void put_name(struct out *o, const char *name)
{
	put(o, "\"", 1);
	puts_lit(o, name);
	put(o, "\"", 1);
}

static void put_addr(struct out *o, const struct tw_addr *a)
{
	char buf[TW_ADDR_STRLEN];

	put(o, "\"", 1);
	put(o, buf, addr_format(buf, a));
	put(o, "\"", 1);
}

size_t record_format(char *buf, size_t len, const struct tw_record *r)
{
	struct out o = { buf, buf + len, false };

	PUT_LIT(&o, "{\"ts\":");
	put_fixed(&o, r->ts_us, 6);
	PUT_KEY(&o, "pid");
	put_u64(&o, (uint64_t)r->pid);
	PUT_KEY(&o, "comm");
	put_str(&o, r->comm ? r->comm : "");
	PUT_KEY(&o, "role");
	put_name(&o, r->role == TW_ROLE_SERVER ? "server" : "client");
	PUT_KEY(&o, "local");
	put_addr(&o, &r->local);
	PUT_KEY(&o, "remote");
	put_addr(&o, &r->remote);
	PUT_KEY(&o, "policy");
	put_name(&o, record_policy_name(r->policy));
	if (r->arm) {
		PUT_KEY(&o, "arm");
		put_str(&o, r->arm);
	}
	PUT_KEY(&o, "state");
	put_name(&o, record_state_name(r->state));
	PUT_KEY(&o, "end");
	put_name(&o, record_end_name((enum tw_end)r->end));
	PUT_KEY(&o, "tw");
	put_name(&o, record_where_name(record_where((enum tw_end)r->end)));
	PUT_KEY(&o, "via");
	put_name(&o, record_via_name((enum tw_via)r->via));
	PUT_KEY(&o, "dur_ms");
	put_fixed(&o, r->dur_us, 3);
	if (r->deferred) {
		PUT_KEY(&o, "deferred_ms");
		put_fixed(&o, r->deferred_us, 3);
	}
	if (r->timeout)
		PUT_LIT(&o, ",\"timeout\":true");
	if (r->why) {
		PUT_KEY(&o, "why");
		put_name(&o, r->why);
	}
	if (r->held)
		PUT_LIT(&o, ",\"held\":true");
	if (r->connect_waited)
		PUT_LIT(&o, ",\"connect_waited\":true");
	PUT_KEY(&o, "bytes_acked");
	put_u64(&o, r->bytes_acked);
	PUT_KEY(&o, "bytes_received");
	put_u64(&o, r->bytes_received);
	PUT_KEY(&o, "fd");
	if (r->fd < 0) {
		put(&o, "-", 1);
		put_u64(&o, (uint64_t)-(int64_t)r->fd);
	} else {
		put_u64(&o, (uint64_t)r->fd);
	}
	put(&o, "}\n", 2);
	return o.full ? 0 : (size_t)(o.p - buf);
}

/*
 * The state the program's close or shutdown meets decides who sent the
 * first FIN (../shared/kernel-notes.md): ESTABLISHED, this side now;
 * CLOSE_WAIT or LAST_ACK, the peer did; FIN_WAIT or CLOSING, this side did
 * already with shutdown(); anything else, the connection was reset or never
 * came up.
 */
enum tw_end record_classify(int state)
{
	switch (state) {
	case TW_ESTABLISHED:
	case TW_FIN_WAIT1:
	case TW_FIN_WAIT2:
	case TW_CLOSING:
	case TW_TIME_WAIT:
		return TW_END_ACTIVE;
	case TW_CLOSE_WAIT:
	case TW_LAST_ACK:
		return TW_END_PASSIVE;
	default:
		return TW_END_RESET;
	}
}

enum tw_where record_where(enum tw_end end)
{
	switch (end) {
	case TW_END_ACTIVE:
		return TW_TW_LOCAL;
	case TW_END_PASSIVE:
		return TW_TW_PEER;
	default:
		return TW_TW_NONE;
	}
}

const char *record_state_name(int state)
{
	static const char *const names[] = {
		"UNKNOWN", "ESTABLISHED", "SYN_SENT", "SYN_RECV", "FIN_WAIT1", "FIN_WAIT2",
		"TIME_WAIT", "CLOSE", "CLOSE_WAIT", "LAST_ACK", "LISTEN", "CLOSING",
	};

	if (state < 0 || state >= (int)(sizeof(names) / sizeof(names[0])))
		return "UNKNOWN";
	return names[state];
}

const char *record_end_name(enum tw_end end)
{
	static const char *const names[] = { "active", "passive", "abort", "reset" };

	return (unsigned)end < 4 ? names[end] : "reset";
}

const char *record_where_name(enum tw_where w)
{
	static const char *const names[] = { "local", "peer", "none" };

	return (unsigned)w < 3 ? names[w] : "none";
}

const char *record_via_name(enum tw_via via)
{
	static const char *const names[] = {
		"close", "shutdown", "dup2", "dup3", "close_range", "closefrom", "fclose", "exit",
		"exec",
	};

	return (unsigned)via < sizeof(names) / sizeof(names[0]) ? names[via] : "close";
}

const char *record_policy_name(int policy)
{
	switch (policy) {
	case TW_CLOSE_DEFER:
		return "defer";
	case TW_CLOSE_ABORT:
		return "abort";
	default:
		return "normal";
	}
}
