// SPDX-License-Identifier: MIT
/*
 * Reading close records: JSON Lines, one object a line, streamed so that
 * memory stays bounded whatever the size of the log.
 *
 * jansson is the judge of what is JSON, but building a jansson object costs
 * about 8 us a line, too slow for a log of millions. So a line first goes
 * through a strict scanner for the shape the library writes (one flat object
 * of plain ASCII strings without escapes, numbers, true, false, null); any
 * line the scanner is not sure about (escapes, UTF-8, nesting, a syntax
 * error) goes to json_loadb() instead, whose verdict and message count. The
 * scanner accepts nothing that jansson would reject.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>

#include "defaults.h"
#include "record.h"
#include "tool.h"

enum raw_type { RAW_ABSENT, RAW_STR, RAW_INT, RAW_REAL, RAW_TRUE, RAW_FALSE, RAW_NULL, RAW_OTHER };

struct raw {
	enum raw_type type;
	struct strv s;
	double d;
	long long i;
};

/* the keys the tool reads; the rest of a record is checked as JSON only */
enum {
	K_TS, K_PID, K_COMM, K_ROLE, K_LOCAL, K_REMOTE, K_TW, K_ARM, K_DEFERRED, K_TIMEOUT,
	K_SAMPLE, K_HELD, K_WAITED, K_WHY, K_N
};

static const char *const key_names[K_N] = {
	"ts", "pid", "comm", "role", "local", "remote", "tw", "arm", "deferred_ms", "timeout",
	"sample", "held", "connect_waited", "why",
};

static int key_index(const char *p, size_t n)
{
	for (int k = 0; k < K_N; k++)
		if (strlen(key_names[k]) == n && memcmp(key_names[k], p, n) == 0)
			return k;
	return -1;
}

/* ---- the fast scanner ------------------------------------------------- */

struct scan {
	const char *p, *end;
};

static void scan_ws(struct scan *s)
{
	while (s->p < s->end && (*s->p == ' ' || *s->p == '\t' || *s->p == '\n' || *s->p == '\r'))
		s->p++;
}

/* A string of printable ASCII without escapes; false for anything else. */
static bool scan_string(struct scan *s, struct strv *out)
{
	const char *q;

	if (s->p >= s->end || *s->p != '"')
		return false;
	q = ++s->p;
	while (q < s->end && *q != '"') {
		unsigned char c = (unsigned char)*q;

		if (c < 0x20 || c >= 0x7f || c == '\\')
			return false;
		q++;
	}
	if (q >= s->end)
		return false;
	out->p = s->p;
	out->n = (size_t)(q - s->p);
	s->p = q + 1;
	return true;
}

static bool is_digit(char c)
{
	return c >= '0' && c <= '9';
}

/* A number by RFC 8259's grammar; integers of up to 18 digits are kept exact. */
static bool scan_number(struct scan *s, struct raw *v)
{
	const char *start = s->p, *q = s->p;
	bool integer = true;
	char buf[64];
	size_t n;

	if (q < s->end && *q == '-')
		q++;
	if (q >= s->end || !is_digit(*q))
		return false;
	if (*q == '0')
		q++;
	else
		while (q < s->end && is_digit(*q))
			q++;
	if (q < s->end && *q == '.') {
		integer = false;
		q++;
		if (q >= s->end || !is_digit(*q))
			return false;
		while (q < s->end && is_digit(*q))
			q++;
	}
	if (q < s->end && (*q == 'e' || *q == 'E')) {
		integer = false;
		q++;
		if (q < s->end && (*q == '+' || *q == '-'))
			q++;
		if (q >= s->end || !is_digit(*q))
			return false;
		while (q < s->end && is_digit(*q))
			q++;
	}
	n = (size_t)(q - start);
	if (n >= sizeof(buf) || (integer && n > 18))
		return false;
	memcpy(buf, start, n);
	buf[n] = '\0';
	if (integer) {
		v->type = RAW_INT;
		v->i = strtoll(buf, NULL, 10);
		v->d = (double)v->i;
	} else {
		v->type = RAW_REAL;
		v->d = strtod(buf, NULL);
		/* jansson rejects what does not fit a double */
		if (!isfinite(v->d))
			return false;
	}
	s->p = q;
	return true;
}

static bool scan_literal(struct scan *s, const char *lit, enum raw_type type, struct raw *v)
{
	size_t n = strlen(lit);

	if ((size_t)(s->end - s->p) < n || memcmp(s->p, lit, n) != 0)
		return false;
	s->p += n;
	v->type = type;
	return true;
}

/*
 * Scans one flat object into raw[]. false: not sure; let jansson judge.
 * A later duplicate key replaces an earlier one, as json_object_set() does.
 */
static bool scan_object(const char *line, size_t len, struct raw *raw)
{
	struct scan s = { line, line + len };
	struct strv key;
	struct raw v;

	scan_ws(&s);
	if (s.p >= s.end || *s.p != '{')
		return false;
	s.p++;
	scan_ws(&s);
	if (s.p < s.end && *s.p == '}') {
		s.p++;
		goto tail;
	}
	for (;;) {
		int k;

		if (!scan_string(&s, &key))
			return false;
		scan_ws(&s);
		if (s.p >= s.end || *s.p != ':')
			return false;
		s.p++;
		scan_ws(&s);
		if (s.p >= s.end)
			return false;
		memset(&v, 0, sizeof(v));
		switch (*s.p) {
		case '"':
			if (!scan_string(&s, &v.s))
				return false;
			v.type = RAW_STR;
			break;
		case 't':
			if (!scan_literal(&s, "true", RAW_TRUE, &v))
				return false;
			break;
		case 'f':
			if (!scan_literal(&s, "false", RAW_FALSE, &v))
				return false;
			break;
		case 'n':
			if (!scan_literal(&s, "null", RAW_NULL, &v))
				return false;
			break;
		default:
			if (!scan_number(&s, &v))
				return false;
		}
		k = key_index(key.p, key.n);
		if (k >= 0)
			raw[k] = v;
		scan_ws(&s);
		if (s.p >= s.end)
			return false;
		if (*s.p == '}') {
			s.p++;
			break;
		}
		if (*s.p != ',')
			return false;
		s.p++;
		scan_ws(&s);
	}
tail:
	scan_ws(&s);
	return s.p == s.end;
}

/* ---- jansson, for everything else ------------------------------------- */

static void raw_from_json(json_t *j, struct raw *v)
{
	memset(v, 0, sizeof(*v));
	switch (json_typeof(j)) {
	case JSON_STRING:
		v->type = RAW_STR;
		v->s.p = json_string_value(j);
		v->s.n = json_string_length(j);
		break;
	case JSON_INTEGER:
		v->type = RAW_INT;
		v->i = json_integer_value(j);
		v->d = (double)v->i;
		break;
	case JSON_REAL:
		v->type = RAW_REAL;
		v->d = json_real_value(j);
		break;
	case JSON_TRUE:
		v->type = RAW_TRUE;
		break;
	case JSON_FALSE:
		v->type = RAW_FALSE;
		break;
	case JSON_NULL:
		v->type = RAW_NULL;
		break;
	default:
		v->type = RAW_OTHER;
	}
}

/* ---- from raw values to a record --------------------------------------- */

static bool strv_eq(struct strv s, const char *lit)
{
	return s.n == strlen(lit) && memcmp(s.p, lit, s.n) == 0;
}

int endpoint_parse(const char *text, size_t len, struct tw_addr *out)
{
	char host[INET6_ADDRSTRLEN];
	const char *colon, *port;
	unsigned long p = 0;
	size_t hn, i;
	int family = AF_INET;

	if (len > 0 && text[0] == '[') {
		const char *close = memchr(text, ']', len);

		if (!close || close + 1 >= text + len || close[1] != ':')
			return -EINVAL;
		family = AF_INET6;
		hn = (size_t)(close - text - 1);
		if (hn >= sizeof(host))
			return -EINVAL;
		memcpy(host, text + 1, hn);
		port = close + 2;
	} else {
		colon = NULL;
		for (i = 0; i < len; i++)
			if (text[i] == ':')
				colon = text + i;
		if (!colon)
			return -EINVAL;
		hn = (size_t)(colon - text);
		if (hn >= sizeof(host))
			return -EINVAL;
		memcpy(host, text, hn);
		port = colon + 1;
	}
	host[hn] = '\0';
	if (port >= text + len || text + len - port > 5)
		return -EINVAL;
	for (; port < text + len; port++) {
		if (!is_digit(*port))
			return -EINVAL;
		p = p * 10 + (unsigned long)(*port - '0');
	}
	if (p > 65535)
		return -EINVAL;
	if (family == AF_INET) {
		static const uint8_t mapped[12] = { 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff };

		memcpy(out->a, mapped, sizeof(mapped));
		if (inet_pton(AF_INET, host, out->a + 12) != 1)
			return -EINVAL;
	} else if (inet_pton(AF_INET6, host, out->a) != 1) {
		return -EINVAL;
	}
	out->port = (uint16_t)p;
	return 0;
}

static int need(const struct raw *raw, int k, enum raw_type type, const char *what, char *err,
		size_t errlen)
{
	const struct raw *v = &raw[k];

	if (v->type == type || (type == RAW_REAL && v->type == RAW_INT))
		return 0;
	if (v->type == RAW_ABSENT)
		snprintf(err, errlen, "no \"%s\"", key_names[k]);
	else
		snprintf(err, errlen, "\"%s\": expected %s", key_names[k], what);
	return -EINVAL;
}

/* Checks the fields the tool reads and fills *r. */
/* a field that is true when present (timeout, held, ...): false, null or absent is false */
static int flag(const struct raw *raw, int k, bool *out, char *err, size_t errlen)
{
	const struct raw *v = &raw[k];

	*out = v->type == RAW_TRUE;
	if (v->type != RAW_TRUE && v->type != RAW_ABSENT && v->type != RAW_FALSE &&
	    v->type != RAW_NULL)
		return need(raw, k, RAW_TRUE, "true or false", err, errlen);
	return 0;
}

static int rec_from_raw(const struct raw *raw, struct rec *r, char *err, size_t errlen)
{
	const struct raw *v;

	memset(r, 0, sizeof(*r));
	if (need(raw, K_TS, RAW_REAL, "a number", err, errlen) ||
	    need(raw, K_PID, RAW_INT, "an integer", err, errlen) ||
	    need(raw, K_COMM, RAW_STR, "a string", err, errlen) ||
	    need(raw, K_ROLE, RAW_STR, "\"client\" or \"server\"", err, errlen) ||
	    need(raw, K_LOCAL, RAW_STR, "an address and port", err, errlen) ||
	    need(raw, K_REMOTE, RAW_STR, "an address and port", err, errlen) ||
	    need(raw, K_TW, RAW_STR, "\"local\", \"peer\" or \"none\"", err, errlen))
		return -EINVAL;
	r->ts = raw[K_TS].d;
	r->pid = raw[K_PID].i;
	r->comm = raw[K_COMM].s;
	if (strv_eq(raw[K_ROLE].s, "server")) {
		r->server = true;
	} else if (!strv_eq(raw[K_ROLE].s, "client")) {
		snprintf(err, errlen, "\"role\": expected \"client\" or \"server\"");
		return -EINVAL;
	}
	if (strv_eq(raw[K_TW].s, "local")) {
		r->tw = TW_TW_LOCAL;
	} else if (strv_eq(raw[K_TW].s, "peer")) {
		r->tw = TW_TW_PEER;
	} else if (strv_eq(raw[K_TW].s, "none")) {
		r->tw = TW_TW_NONE;
	} else {
		snprintf(err, errlen, "\"tw\": expected \"local\", \"peer\" or \"none\"");
		return -EINVAL;
	}
	r->local_text = raw[K_LOCAL].s;
	r->remote_text = raw[K_REMOTE].s;
	if (endpoint_parse(r->local_text.p, r->local_text.n, &r->local)) {
		snprintf(err, errlen, "\"local\": expected an address and port");
		return -EINVAL;
	}
	if (endpoint_parse(r->remote_text.p, r->remote_text.n, &r->remote)) {
		snprintf(err, errlen, "\"remote\": expected an address and port");
		return -EINVAL;
	}
	v = &raw[K_ARM];
	if (v->type == RAW_STR)
		r->arm = v->s;
	else if (v->type != RAW_ABSENT && v->type != RAW_NULL)
		return need(raw, K_ARM, RAW_STR, "a string", err, errlen);
	v = &raw[K_DEFERRED];
	if (v->type == RAW_INT || v->type == RAW_REAL)
		r->deferred = true;
	else if (v->type != RAW_ABSENT && v->type != RAW_NULL)
		return need(raw, K_DEFERRED, RAW_REAL, "a number", err, errlen);
	if (flag(raw, K_TIMEOUT, &r->timeout, err, errlen) ||
	    flag(raw, K_HELD, &r->held, err, errlen) ||
	    flag(raw, K_WAITED, &r->connect_waited, err, errlen))
		return -EINVAL;
	v = &raw[K_WHY];
	if (v->type == RAW_STR)
		r->learned = v->s.n == 7 && !memcmp(v->s.p, "learned", 7);
	else if (v->type != RAW_ABSENT && v->type != RAW_NULL)
		return need(raw, K_WHY, RAW_STR, "a string", err, errlen);
	v = &raw[K_SAMPLE];
	r->sample = 1;
	if (v->type == RAW_INT && v->i >= 1 && v->i <= TW_SAMPLE_MAX) {
		r->sample = (uint32_t)v->i;
	} else if (v->type != RAW_ABSENT && v->type != RAW_NULL) {
		snprintf(err, errlen, "\"sample\": expected a whole number from 1 to %d",
			 TW_SAMPLE_MAX);
		return -EINVAL;
	}
	return 0;
}

int record_parse(const char *line, size_t len, struct rec *r, void **hold, char *err,
		 size_t errlen)
{
	struct raw raw[K_N];
	json_error_t jerr;
	json_t *j;
	int k, ret;

	*hold = NULL;
	memset(raw, 0, sizeof(raw));
	if (scan_object(line, len, raw))
		return rec_from_raw(raw, r, err, errlen);

	memset(raw, 0, sizeof(raw));
	j = json_loadb(line, len, 0, &jerr);
	if (!j) {
		snprintf(err, errlen, "not JSON: %s (column %d)", jerr.text, jerr.column);
		return -EINVAL;
	}
	if (!json_is_object(j)) {
		json_decref(j);
		snprintf(err, errlen, "not a JSON object");
		return -EINVAL;
	}
	for (k = 0; k < K_N; k++) {
		json_t *v = json_object_get(j, key_names[k]);

		if (v)
			raw_from_json(v, &raw[k]);
	}
	ret = rec_from_raw(raw, r, err, errlen);
	if (ret)
		json_decref(j);
	else
		*hold = j;
	return ret;
}

static bool blank(const char *p, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (p[i] != ' ' && p[i] != '\t' && p[i] != '\n' && p[i] != '\r')
			return false;
	return true;
}

int records_read(const char *prog, const char *path, int (*cb)(const struct rec *r, void *arg),
		 void *arg, struct rec_stats *stats)
{
	bool is_stdin = strcmp(path, "-") == 0;
	const char *name = is_stdin ? "<stdin>" : path;
	unsigned long long lineno = 0;
	char *line = NULL, err[256];
	size_t cap = 0;
	ssize_t n;
	FILE *f;
	int ret = 0, gerr = 0;

	f = is_stdin ? stdin : fopen(path, "re");
	if (!f) {
		ret = -errno;
		fprintf(stderr, "%s: %s: %s\n", prog, path, strerror(errno));
		stats->open_errors++;
		return ret;
	}
	if (!is_stdin)
		setvbuf(f, NULL, _IOFBF, 1 << 20);
	for (;;) {
		struct rec r;
		void *hold;

		errno = 0;
		n = getline(&line, &cap, f);
		if (n < 0) {
			/* a line too long for memory is no end of file (getline: ENOMEM) */
			if (!feof(f) && errno && !ferror(f))
				gerr = errno;
			break;
		}
		lineno++;
		if (blank(line, (size_t)n))
			continue;
		if (record_parse(line, (size_t)n, &r, &hold, err, sizeof(err))) {
			stats->malformed++;
			if (stats->shown < MALFORMED_SHOWN) {
				char *e = text_escape(err);

				stats->shown++;
				fprintf(stderr, "%s: %s:%llu: malformed record: %s\n", prog, name,
					lineno, e ? e : "?");
				free(e);
			}
			continue;
		}
		stats->records++;
		ret = cb(&r, arg);
		json_decref(hold);
		if (ret)
			break;
	}
	if (ret == 0 && (ferror(f) || gerr)) {
		ret = gerr ? -gerr : errno ? -errno : -EIO;
		fprintf(stderr, "%s: %s: %s\n", prog, name, strerror(-ret));
		stats->open_errors++;
	}
	free(line);
	if (!is_stdin)
		fclose(f);
	return ret < 0 ? ret : 0;
}

void records_summary(const char *prog, const struct rec_stats *stats)
{
	if (stats->malformed > stats->shown)
		fprintf(stderr, "%s: %llu more malformed lines not shown (%llu in all)\n", prog,
			stats->malformed - stats->shown, stats->malformed);
}

/* ---- small things the subcommands share -------------------------------- */

double now_realtime(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

uint64_t now_mono_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

const char *self_dir(void)
{
	static char dir[PATH_MAX];
	ssize_t n;
	char *slash;

	if (dir[0])
		return dir;
	n = readlink("/proc/self/exe", dir, sizeof(dir) - 1);
	if (n <= 0) {
		dir[0] = '\0';
		return dir;
	}
	dir[n] = '\0';
	slash = strrchr(dir, '/');
	if (slash)
		*(slash == dir ? slash + 1 : slash) = '\0';
	return dir;
}

/*
 * The library next to the tool (the build directory), then in ../lib beside
 * it (an installed tree, wherever PREFIX or DESTDIR put it), then where
 * `make install` was told it goes. NULL, after a message naming `cmd`, when
 * it is in none of them.
 */
const char *preload_lib_path(const char *cmd)
{
	static char path[PATH_MAX + 32], resolved[PATH_MAX];
	const char *dir = self_dir();

	if (dir[0]) {
		snprintf(path, sizeof(path), "%s/%s", dir, TW_LIB_NAME);
		if (access(path, R_OK) == 0)
			return path;
		snprintf(path, sizeof(path), "%s/../lib/%s", dir, TW_LIB_NAME);
		if (access(path, R_OK) == 0 && realpath(path, resolved))
			return resolved;
	}
	snprintf(path, sizeof(path), "%s/%s", TW_LIBDIR, TW_LIB_NAME);
	if (access(path, R_OK) == 0)
		return path;
	fprintf(stderr, "twshim %s: %s not found in %s, in its ../lib, nor in %s\n", cmd,
		TW_LIB_NAME, dir[0] ? dir : "the tool's directory", TW_LIBDIR);
	return NULL;
}

/* Sanitizer runtimes insist on being first in LD_PRELOAD. */
static bool sanitizer_runtime(const char *entry, size_t n)
{
	static const char *const names[] = { "libasan", "libtsan", "libhwasan",
					     "libclang_rt.asan", "libclang_rt.tsan" };
	const char *base = entry;

	for (size_t i = 0; i < n; i++)
		if (entry[i] == '/')
			base = entry + i + 1;
	for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
		if (strncmp(base, names[i], strlen(names[i])) == 0)
			return true;
	return false;
}

/*
 * ld.so splits LD_PRELOAD at spaces and colons. The library goes first so
 * that its wrappers see the program's calls before any other preloaded
 * library's, except after a sanitizer runtime, which must stay first.
 */
int env_prepend_preload(const char *lib)
{
	const char *old = getenv("LD_PRELOAD");
	size_t first = 0, len;
	char *val;
	int ret;

	if (!old || !*old)
		return setenv("LD_PRELOAD", lib, 1) ? -errno : 0;
	len = strlen(old);
	/* already there: ld.so would load it once anyway */
	for (const char *p = old; (p = strstr(p, lib)); p++) {
		size_t n = strlen(lib);

		if ((p == old || p[-1] == ':' || p[-1] == ' ') &&
		    (p[n] == '\0' || p[n] == ':' || p[n] == ' '))
			return 0;
	}
	while (first < len && old[first] != ':' && old[first] != ' ')
		first++;
	val = malloc(len + strlen(lib) + 2);
	if (!val)
		return -ENOMEM;
	if (sanitizer_runtime(old, first) && first < len)
		sprintf(val, "%.*s:%s:%s", (int)first, old, lib, old + first + 1);
	else if (sanitizer_runtime(old, first))
		sprintf(val, "%s:%s", old, lib);
	else
		sprintf(val, "%s:%s", lib, old);
	ret = setenv("LD_PRELOAD", val, 1) ? -errno : 0;
	free(val);
	return ret;
}

int env_append_options(const char *extra)
{
	const char *old = getenv(TW_ENV_OPTIONS);
	char *val;
	int ret;

	if (!extra || !*extra)
		return 0;
	if (!old || !*old)
		return setenv(TW_ENV_OPTIONS, extra, 1) ? -errno : 0;
	if (asprintf(&val, "%s,%s", old, extra) < 0)
		return -ENOMEM;
	ret = setenv(TW_ENV_OPTIONS, val, 1) ? -errno : 0;
	free(val);
	return ret;
}

int usage_error(const char *cmd, const char *fmt, ...)
{
	va_list ap;

	fprintf(stderr, "twshim %s: ", cmd);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fprintf(stderr, "\nTry 'twshim %s --help'.\n", cmd);
	return EXIT_USAGE;
}

/* ---- tables for people ------------------------------------------------- */

void table_init(struct table *t, size_t ncols)
{
	memset(t, 0, sizeof(*t));
	t->ncols = ncols;
	t->right = calloc(ncols, sizeof(*t->right));
}

/*
 * Length of the printable UTF-8 character at p (1 to 4), or 0 for a byte
 * that must not reach a terminal as it is: a C0 or C1 control, DEL, or a
 * byte that does not start a well-formed sequence.
 */
static size_t utf8_printable(const unsigned char *p)
{
	size_t n;
	uint32_t cp;

	if (*p < 0x20 || *p == 0x7f)
		return 0;
	if (*p < 0x80)
		return 1;
	if (*p >= 0xc2 && *p <= 0xdf)
		n = 2, cp = *p & 0x1f;
	else if (*p >= 0xe0 && *p <= 0xef)
		n = 3, cp = *p & 0x0f;
	else if (*p >= 0xf0 && *p <= 0xf4)
		n = 4, cp = *p & 0x07;
	else
		return 0;
	for (size_t i = 1; i < n; i++) {
		if ((p[i] & 0xc0) != 0x80)
			return 0;
		cp = cp << 6 | (p[i] & 0x3f);
	}
	if ((n == 3 && cp < 0x800) || (n == 4 && (cp < 0x10000 || cp > 0x10ffff)) ||
	    (cp >= 0xd800 && cp <= 0xdfff) || (cp >= 0x80 && cp <= 0x9f))
		return 0;
	return n;
}

char *text_escape(const char *s)
{
	size_t len = strlen(s);
	char *out = malloc(4 * len + 1), *o = out;
	const unsigned char *p = (const unsigned char *)s;

	if (!out)
		return NULL;
	while (*p) {
		size_t n = utf8_printable(p);

		if (n) {
			memcpy(o, p, n);
			o += n;
			p += n;
		} else {
			o += sprintf(o, "\\x%02x", *p++);
		}
	}
	*o = 0;
	return out;
}

json_t *json_text(const char *s)
{
	json_t *j = json_string(s);
	char *e;

	if (j)
		return j;
	e = text_escape(s);
	j = e ? json_string(e) : NULL;
	free(e);
	return j ? j : json_string("");
}

void table_add(struct table *t, const char *const *cells)
{
	if (t->nrows == t->cap) {
		size_t cap = t->cap ? 2 * t->cap : 16;
		char **c = realloc(t->cells, cap * t->ncols * sizeof(*c));

		if (!c)
			return;
		t->cells = c;
		t->cap = cap;
	}
	for (size_t i = 0; i < t->ncols; i++)
		t->cells[t->nrows * t->ncols + i] = text_escape(cells[i] ? cells[i] : "");
	t->nrows++;
}

/* columns a cell takes on a terminal: UTF-8 continuation bytes take none */
static size_t text_width(const char *s)
{
	size_t w = 0;

	for (; *s; s++)
		if (((unsigned char)*s & 0xc0) != 0x80)
			w++;
	return w;
}

static void pad(FILE *f, size_t n)
{
	while (n--)
		fputc(' ', f);
}

void table_print(const struct table *t, FILE *f)
{
	size_t *w = calloc(t->ncols, sizeof(*w));

	if (!w)
		return;
	for (size_t r = 0; r < t->nrows; r++)
		for (size_t c = 0; c < t->ncols; c++) {
			const char *s = t->cells[r * t->ncols + c];
			size_t n = text_width(s ? s : "");

			if (n > w[c])
				w[c] = n;
		}
	for (size_t r = 0; r < t->nrows; r++) {
		for (size_t c = 0; c < t->ncols; c++) {
			const char *cell = t->cells[r * t->ncols + c];
			const char *s = cell ? cell : "";
			size_t n = text_width(s);
			bool last = c + 1 == t->ncols;

			if (t->right && t->right[c]) {
				pad(f, w[c] - n);
				fputs(s, f);
			} else {
				fputs(s, f);
				if (!last)
					pad(f, w[c] - n);
			}
			fputs(last ? "\n" : "  ", f);
		}
	}
	free(w);
}

void table_free(struct table *t)
{
	for (size_t i = 0; i < t->nrows * t->ncols; i++)
		free(t->cells[i]);
	free(t->cells);
	free(t->right);
	memset(t, 0, sizeof(*t));
}
