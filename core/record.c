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

/* the small helpers below inline into record_format(): its cursor stays in registers */
#define INLINE	static inline __attribute__((always_inline))

/*
 * The output cursor. A field (its key and a value of bounded length) is
 * formatted straight into the buffer when its longest form fits, else into a
 * scratch buffer and copied if it fits (PUT_FIELD): one check per field. Once something does not fit, end is pulled back to p so that
 * nothing more is written, and record_format() returns 0 rather than a cut
 * line.
 */
struct out {
	char *p, *end;
	bool full;
};

INLINE bool fits(const struct out *o, size_t n)
{
	return (size_t)(o->end - o->p) >= n;
}

INLINE void put(struct out *o, const char *s, size_t n)
{
	if (!fits(o, n)) {
		o->full = true;
		o->end = o->p;
		return;
	}
	memcpy(o->p, s, n);
	o->p += n;
}

INLINE void put_ch(struct out *o, char c)
{
	put(o, &c, 1);
}

/* longest key with its punctuation: ,"bytes_received": */
#define KEY_MAX	24

/*
 * A field of at most `max` bytes: `expr` formats it at q and gives its
 * length. Straight into the buffer when the longest form fits, else into a
 * scratch buffer, copied if it fits.
 */
#define PUT_FIELD(o, max, q, expr)						\
	do {									\
		if (fits((o), (max))) {						\
			char *q = (o)->p;					\
			(o)->p += (expr);					\
		} else {							\
			char q##_tmp[(max)], *q = q##_tmp;			\
			put((o), q, (expr));					\
		}								\
	} while (0)

/* a literal and its length known at compile time (memcpy becomes a few moves) */
#define LIT(s)		(s), sizeof(s) - 1
/* a field's key: ,"key": */
#define KEY(key)	LIT(",\"" key "\":")

/* Each fmt_TYPE() writes a key and a value at q and returns the length. */

INLINE size_t fmt_u64_key(char *q, const char *key, size_t klen, uint64_t v)
{
	memcpy(q, key, klen);
	return klen + fmt_u64(q + klen, v);
}

INLINE void put_u64(struct out *o, const char *key, size_t klen, uint64_t v)
{
	PUT_FIELD(o, KEY_MAX + 20, q, fmt_u64_key(q, key, klen, v));
}

INLINE size_t fmt_int_key(char *q, const char *key, size_t klen, int v)
{
	size_t n = klen;

	memcpy(q, key, klen);
	if (v < 0)
		q[n++] = '-';
	return n + fmt_u64(q + n, v < 0 ? (uint64_t)-(int64_t)v : (uint64_t)v);
}

INLINE void put_int(struct out *o, const char *key, size_t klen, int v)
{
	PUT_FIELD(o, KEY_MAX + 21, q, fmt_int_key(q, key, klen, v));
}

/* v / 10^digits with exactly `digits` (3 or 6) decimals */
INLINE size_t fmt_fixed_key(char *q, const char *key, size_t klen, uint64_t v, unsigned digits)
{
	static const uint32_t pow10[] = { 1, 10, 100, 1000, 10000, 100000, 1000000 };
	size_t n = klen;

	memcpy(q, key, klen);
	n += fmt_u64(q + n, v / pow10[digits]);
	q[n++] = '.';
	fmt_digits(q + n, (uint32_t)(v % pow10[digits]), digits);
	return n + digits;
}

INLINE void put_fixed(struct out *o, const char *key, size_t klen, uint64_t v, unsigned digits)
{
	PUT_FIELD(o, KEY_MAX + 20 + 1 + 6, q, fmt_fixed_key(q, key, klen, v, digits));
}

INLINE void put_true(struct out *o, const char *key, size_t klen)
{
	put(o, key, klen);
	put(o, LIT("true"));
}

/* what put_str() does with a byte: copy it, escape it, or look at a UTF-8 sequence */
enum { STR_COPY, STR_ESCAPE, STR_UTF8, STR_END };

/* what is not listed (printable ASCII) is STR_COPY, 0 */
static const uint8_t str_class[256] = {
	[0] = STR_END,
	[1 ... 0x1f] = STR_ESCAPE,
	['"'] = STR_ESCAPE,
	['\\'] = STR_ESCAPE,
	[0x7f] = STR_ESCAPE,
	[0x80 ... 0xff] = STR_UTF8,
};

/* length of a valid UTF-8 sequence at u, 0 when it is not one (RFC 3629) */
static int utf8_len(const unsigned char *u)
{
	unsigned char ch = u[0];
	int len = 0;

	if (ch >= 0xc2 && ch <= 0xdf)
		len = 2;
	else if (ch >= 0xe0 && ch <= 0xef)
		len = 3;
	else if (ch >= 0xf0 && ch <= 0xf4)
		len = 4;
	for (int i = 1; i < len; i++)
		if ((u[i] & 0xc0) != 0x80)
			return 0;
	/* overlong, surrogate and out-of-range forms */
	if (len == 3 && ((ch == 0xe0 && u[1] < 0xa0) || (ch == 0xed && u[1] > 0x9f)))
		return 0;
	if (len == 4 && ((ch == 0xf0 && u[1] < 0x90) || (ch == 0xf4 && u[1] > 0x8f)))
		return 0;
	return len;
}

/*
 * A JSON string. Quotes, backslashes and control characters are escaped;
 * bytes that are not valid UTF-8 become U+FFFD so that the line stays valid
 * JSON whatever a process calls itself. Runs of printable ASCII are copied
 * whole.
 */
INLINE void put_str(struct out *o, const char *key, size_t klen, const char *s)
{
	static const char hex[] = "0123456789abcdef";
	const unsigned char *u = (const unsigned char *)s;

	put(o, key, klen);
	put_ch(o, '"');
	for (;;) {
		const unsigned char *run = u;
		unsigned char ch = *u;
		int len;

		switch (str_class[ch]) {
		case STR_COPY:
			while (str_class[*++u] == STR_COPY)
				;
			put(o, (const char *)run, (size_t)(u - run));
			continue;
		case STR_ESCAPE:
			if (ch == '"' || ch == '\\') {
				char esc[2] = { '\\', (char)ch };

				put(o, esc, 2);
			} else {
				char esc[6] = { '\\', 'u', '0', '0', hex[ch >> 4], hex[ch & 15] };

				put(o, esc, 6);
			}
			u++;
			continue;
		case STR_UTF8:
			len = utf8_len(u);
			if (len) {
				put(o, (const char *)u, (size_t)len);
				u += len;
			} else {
				put(o, LIT("\\ufffd"));
				u++;
			}
			continue;
		}
		break;
	}
	put_ch(o, '"');
}

/*
 * The record's own names (role, state, ...), with their lengths: nothing to
 * escape, and the copy is one fixed-size move.
 */
struct name {
	char s[15];
	uint8_t len;
};

#define NAME(str)	{ str, sizeof(str) - 1 }

static const struct name state_names[] = {
	NAME("UNKNOWN"), NAME("ESTABLISHED"), NAME("SYN_SENT"), NAME("SYN_RECV"),
	NAME("FIN_WAIT1"), NAME("FIN_WAIT2"), NAME("TIME_WAIT"), NAME("CLOSE"),
	NAME("CLOSE_WAIT"), NAME("LAST_ACK"), NAME("LISTEN"), NAME("CLOSING"),
};
static const struct name end_names[] = {
	NAME("active"), NAME("passive"), NAME("abort"), NAME("reset"),
};
static const struct name where_names[] = { NAME("local"), NAME("peer"), NAME("none") };
static const struct name via_names[] = {
	NAME("close"), NAME("shutdown"), NAME("dup2"), NAME("dup3"), NAME("close_range"),
	NAME("closefrom"), NAME("fclose"), NAME("exit"), NAME("exec"),
};
/* in the orders of enum tw_role and enum tw_close_policy */
static const struct name role_names[] = { NAME("client"), NAME("server") };
static const struct name policy_names[] = { NAME("normal"), NAME("defer"), NAME("abort") };

#define COUNT(a)	(sizeof(a) / sizeof((a)[0]))

static const struct name *state_name(int state)
{
	return &state_names[state >= 0 && state < (int)COUNT(state_names) ? state : 0];
}

static const struct name *end_name(enum tw_end end)
{
	return &end_names[(unsigned)end < COUNT(end_names) ? end : TW_END_RESET];
}

static const struct name *where_name(enum tw_where w)
{
	return &where_names[(unsigned)w < COUNT(where_names) ? w : TW_TW_NONE];
}

static const struct name *via_name(enum tw_via via)
{
	return &via_names[(unsigned)via < COUNT(via_names) ? via : TW_VIA_CLOSE];
}

static const struct name *policy_name(int policy)
{
	return &policy_names[policy >= 0 && policy < (int)COUNT(policy_names) ? policy :
			     TW_CLOSE_NORMAL];
}

INLINE size_t fmt_name_key(char *q, const char *key, size_t klen, const struct name *n)
{
	memcpy(q, key, klen);
	q[klen] = '"';
	memcpy(q + klen + 1, n->s, sizeof(n->s));
	q[klen + 1 + n->len] = '"';
	return klen + n->len + 2u;
}

INLINE void put_name(struct out *o, const char *key, size_t klen, const struct name *n)
{
	PUT_FIELD(o, KEY_MAX + sizeof(n->s) + 2, q, fmt_name_key(q, key, klen, n));
}

/* a name of the library's own whose length is not known here (why) */
INLINE void put_cname(struct out *o, const char *key, size_t klen, const char *s)
{
	put(o, key, klen);
	put_ch(o, '"');
	put(o, s, strlen(s));
	put_ch(o, '"');
}

/* addr_format() also writes a NUL, which the closing quote overwrites */
INLINE size_t fmt_addr_key(char *q, const char *key, size_t klen, const struct tw_addr *a)
{
	size_t n = klen + 1;

	memcpy(q, key, klen);
	q[klen] = '"';
	n += addr_format(q + n, a);
	q[n++] = '"';
	return n;
}

INLINE void put_addr(struct out *o, const char *key, size_t klen, const struct tw_addr *a)
{
	PUT_FIELD(o, KEY_MAX + TW_ADDR_STRLEN + 1, q, fmt_addr_key(q, key, klen, a));
}

/*
 * A field is one put_TYPE(&o, KEY("name"), value), in the contract's order;
 * a new one is one more such line (and its key no longer than KEY_MAX).
 */
size_t record_format(char *buf, size_t len, const struct tw_record *r)
{
	struct out o = { buf, buf + len, false };

	put_fixed(&o, LIT("{\"ts\":"), r->ts_us, 6);
	put_int(&o, KEY("pid"), r->pid);
	put_str(&o, KEY("comm"), r->comm ? r->comm : "");
	put_name(&o, KEY("role"), &role_names[r->role == TW_ROLE_SERVER]);
	put_addr(&o, KEY("local"), &r->local);
	put_addr(&o, KEY("remote"), &r->remote);
	put_name(&o, KEY("policy"), policy_name(r->policy));
	if (r->arm)
		put_str(&o, KEY("arm"), r->arm);
	put_name(&o, KEY("state"), state_name(r->state));
	put_name(&o, KEY("end"), end_name((enum tw_end)r->end));
	put_name(&o, KEY("tw"), where_name(record_where((enum tw_end)r->end)));
	put_name(&o, KEY("via"), via_name((enum tw_via)r->via));
	put_fixed(&o, KEY("dur_ms"), r->dur_us, 3);
	if (r->deferred)
		put_fixed(&o, KEY("deferred_ms"), r->deferred_us, 3);
	if (r->timeout)
		put_true(&o, KEY("timeout"));
	if (r->why)
		put_cname(&o, KEY("why"), r->why);
	put_u64(&o, KEY("bytes_acked"), r->bytes_acked);
	put_u64(&o, KEY("bytes_received"), r->bytes_received);
	put_int(&o, KEY("fd"), r->fd);
	put(&o, LIT("}\n"));
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
	return state_name(state)->s;
}

const char *record_end_name(enum tw_end end)
{
	return end_name(end)->s;
}

const char *record_where_name(enum tw_where w)
{
	return where_name(w)->s;
}

const char *record_via_name(enum tw_via via)
{
	return via_name(via)->s;
}

const char *record_policy_name(int policy)
{
	return policy_name(policy)->s;
}
