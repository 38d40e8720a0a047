/* SPDX-License-Identifier: MIT */
/*
 * The libconfig file: policy keys at the top level, `rules` (a list of
 * groups, each with match keys, policy keys and maybe an `ab` group) and an
 * `ab` group. Every mistake, a misspelt key included, stops the load with one
 * line "file:line: key: what was expected".
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fnmatch.h>
#include <libconfig.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "conf_impl.h"
#include "config.h"
#include "defaults.h"

#define WEIGHT_MAX	1000000
#define ARM_NAME_MAX	63

/*
 * The limits on arms and log destinations hold for the whole file, dropped
 * rules included, so that a file valid for one program is valid for all.
 */
struct file_ctx {
	const char *path;
	const char *comm;
	char *err;
	size_t errlen;
	unsigned narms;				/* arms in the file so far */
	unsigned nlogs;
	const char *logs[TW_SINKS_MAX];		/* distinct destinations so far */
};

/* Where a key was found, for the message about one found in the wrong place. */
enum where { AT_TOP, AT_RULE, AT_AB, AT_ARM };

/* "file:line: " and the message, for setting s; returns -EINVAL. */
static int __attribute__((format(printf, 3, 4)))
fail(const struct file_ctx *x, const config_setting_t *s, const char *fmt, ...)
{
	const char *file = config_setting_source_file(s);
	va_list ap;
	int n;

	n = snprintf(x->err, x->errlen, "%s:%u: ", file ? file : x->path,
		     (unsigned)config_setting_source_line(s));
	if (n < 0 || (size_t)n >= x->errlen)
		return -EINVAL;
	va_start(ap, fmt);
	vsnprintf(x->err + n, x->errlen - (size_t)n, fmt, ap);
	va_end(ap);
	return -EINVAL;
}

/*
 * A key that is not valid at this place: named plainly when it belongs
 * somewhere else in the file, "unknown key" otherwise (a typo must not
 * silently do nothing).
 */
static int fail_key(const struct file_ctx *x, const config_setting_t *s, enum where at)
{
	static const struct {
		const char *key;
		const char *where;
		unsigned ok;	/* bit per enum where */
	} homes[] = {
		{ "rules", "at the top level", 1u << AT_TOP },
		{ "ab", "at the top level or in a rule", (1u << AT_TOP) | (1u << AT_RULE) },
		{ "process", "in a rule", 1u << AT_RULE },
		{ "role", "in a rule", 1u << AT_RULE },
		{ "remote", "in a rule", 1u << AT_RULE },
		{ "port", "in a rule", 1u << AT_RULE },
		{ "split", "in an ab group", 1u << AT_AB },
		{ "arms", "in an ab group", 1u << AT_AB },
		{ "name", "in an arm", 1u << AT_ARM },
		{ "weight", "in an arm", 1u << AT_ARM },
	};
	const char *key = config_setting_name(s);
	size_t i;

	for (i = 0; i < sizeof(homes) / sizeof(homes[0]); i++)
		if (!strcmp(key, homes[i].key) && !(homes[i].ok & (1u << at)))
			return fail(x, s, "%s: allowed only %s", key, homes[i].where);
	return fail(x, s, "unknown key \"%s\"", key);
}

/* Counts a log destination against the file-wide limit. */
static int log_count(struct file_ctx *x, const config_setting_t *s, const char *dest)
{
	unsigned i;

	if (!*dest || !strcmp(dest, "none"))
		return 0;
	for (i = 0; i < x->nlogs; i++)
		if (!strcmp(x->logs[i], dest))
			return 0;
	if (x->nlogs == TW_SINKS_MAX)
		return fail(x, s, "log: more than %d different log destinations", TW_SINKS_MAX);
	x->logs[x->nlogs++] = dest;
	return 0;
}

/* A policy key: 0, -ENOENT when s is no policy key, -errno with err set. */
static int level_member(struct file_ctx *x, struct conf *c, struct conf_level *lv,
			const config_setting_t *s)
{
	struct conf_value v = { .type = CONF_V_OTHER };
	char msg[256];
	int ret;

	switch (config_setting_type(s)) {
	case CONFIG_TYPE_INT:
	case CONFIG_TYPE_INT64:
		v.type = CONF_V_INT;
		v.i = config_setting_get_int64(s);
		break;
	case CONFIG_TYPE_STRING:
		v.type = CONF_V_STRING;
		v.s = config_setting_get_string(s);
		break;
	case CONFIG_TYPE_BOOL:
		v.type = CONF_V_BOOL;
		v.b = config_setting_get_bool(s);
		break;
	default:
		break;
	}
	if (v.type == CONF_V_STRING && !strcmp(config_setting_name(s), "log")) {
		ret = log_count(x, s, v.s);
		if (ret)
			return ret;
	}
	ret = conf_key_set(c, lv, config_setting_name(s), &v, msg, sizeof(msg));
	if (ret && ret != -ENOENT) {
		fail(x, s, "%s", msg);
		return ret;
	}
	return ret;
}

static bool is_int(const config_setting_t *s)
{
	return config_setting_type(s) == CONFIG_TYPE_INT ||
	       config_setting_type(s) == CONFIG_TYPE_INT64;
}

static const char *string_of(const config_setting_t *s)
{
	return config_setting_type(s) == CONFIG_TYPE_STRING ? config_setting_get_string(s) : NULL;
}

/* Adds one arm of group ab (its arms so far: c->arms[ab->first ..]). */
static int arm_parse(struct file_ctx *x, struct conf *c, struct conf_ab *ab,
		     const config_setting_t *s)
{
	const config_setting_t *m;
	struct conf_arm *arm;
	uint64_t weight = 1;
	const char *name = NULL, *p;
	unsigned i, j;
	int ret;

	if (!config_setting_is_group(s))
		return fail(x, s, "arms: each arm is a group { name = ...; weight = ...; }");
	if (x->narms >= TW_ARMS_MAX || c->narms >= TW_ARMS_MAX)
		return fail(x, s, "arms: more than %d arms in all", TW_ARMS_MAX);
	arm = &c->arms[c->narms];
	memset(arm, 0, sizeof(*arm));
	for (i = 0; (m = config_setting_get_elem(s, i)); i++) {
		const char *key = config_setting_name(m);

		if (!strcmp(key, "name")) {
			name = string_of(m);
			if (!name || !*name || strlen(name) > ARM_NAME_MAX)
				return fail(x, m, "name: expected a string of 1 to %d characters",
					    ARM_NAME_MAX);
			for (p = name; *p; p++)
				if ((unsigned char)*p < 0x20 || *p == 0x7f || *p == '"' ||
				    *p == '\\')
					return fail(x, m, "name: expected printable characters "
						    "other than \" and \\");
			for (j = 0; j < ab->n; j++)
				if (!strcmp(c->arms[ab->first + j].name, name))
					return fail(x, m, "name: \"%s\" names two arms of one "
						    "ab group", name);
		} else if (!strcmp(key, "weight")) {
			if (!is_int(m) || config_setting_get_int64(m) < 0 ||
			    config_setting_get_int64(m) > WEIGHT_MAX)
				return fail(x, m, "weight: expected a whole number from 0 to %d",
					    WEIGHT_MAX);
			weight = (uint64_t)config_setting_get_int64(m);
		} else {
			ret = level_member(x, c, &arm->lv, m);
			if (ret == -ENOENT)
				return fail_key(x, m, AT_ARM);
			if (ret)
				return ret;
		}
	}
	if (!name)
		return fail(x, s, "name: missing; every arm needs a name");
	arm->name = strdup(name);
	if (!arm->name) {
		fail(x, s, "out of memory");
		return -ENOMEM;
	}
	ab->total += weight;
	arm->cum = ab->total;
	ab->n++;
	c->narms++;
	x->narms++;
	return 0;
}

/* Parses an `ab` group into c->abs; its index in *idx. */
static int ab_parse(struct file_ctx *x, struct conf *c, const config_setting_t *s,
		    int *idx)
{
	const config_setting_t *m, *arms = NULL;
	struct conf_ab *ab, *grown;
	const char *split;
	unsigned i;
	int ret;

	if (!config_setting_is_group(s))
		return fail(x, s, "ab: expected a group { split = ...; arms = ( ... ); }");
	if (c->nabs == c->abs_cap) {
		grown = realloc(c->abs, (c->abs_cap * 2 + 4) * sizeof(*grown));
		if (!grown) {
			fail(x, s, "out of memory");
			return -ENOMEM;
		}
		c->abs = grown;
		c->abs_cap = c->abs_cap * 2 + 4;
	}
	ab = &c->abs[c->nabs];
	memset(ab, 0, sizeof(*ab));
	ab->first = (uint8_t)c->narms;
	ab->split = CONF_SPLIT_CONNECTION;
	for (i = 0; (m = config_setting_get_elem(s, i)); i++) {
		const char *key = config_setting_name(m);

		if (!strcmp(key, "split")) {
			split = string_of(m);
			if (split && !strcmp(split, "connection"))
				ab->split = CONF_SPLIT_CONNECTION;
			else if (split && !strcmp(split, "process"))
				ab->split = CONF_SPLIT_PROCESS;
			else
				return fail(x, m, "split: expected connection or process");
		} else if (!strcmp(key, "arms")) {
			arms = m;
		} else if (conf_key_known(key)) {
			return fail(x, m, "%s: belongs in an arm, not in the ab group itself",
				    key);
		} else {
			return fail_key(x, m, AT_AB);
		}
	}
	if (!arms)
		return fail(x, s, "arms: missing; an ab group needs a list of arms");
	if (!config_setting_is_list(arms) || config_setting_length(arms) == 0)
		return fail(x, arms, "arms: expected a list of arms ( { name = ...; }, ... )");
	for (i = 0; (m = config_setting_get_elem(arms, i)); i++) {
		ret = arm_parse(x, c, ab, m);
		if (ret)
			return ret;
	}
	if (ab->total == 0)
		return fail(x, arms, "weight: the weights of an ab group add up to 0");
	*idx = (int)c->nabs++;
	return 0;
}

/*
 * remote = "a.b.c.d/n" or "x::y/n" (no /n: one address). IPv4 is kept as
 * ::ffff:a.b.c.d/(96 + n) so that it also matches IPv4-mapped IPv6 peers of
 * a dual-stack socket. Bits set beyond the prefix are a mistake worth naming.
 */
static int cidr_parse(const struct file_ctx *x, const config_setting_t *s, struct conf_rule *r)
{
	static const char expect[] = "remote: expected an IPv4 or IPv6 address, "
				     "optionally with /prefix";
	const char *text = string_of(s), *slash;
	uint8_t a[16] = { 0 }, m[16] = { 0 }, net[16];
	char buf[INET6_ADDRSTRLEN + 8], shown[INET6_ADDRSTRLEN];
	unsigned prefix, max, base, bits, i;
	bool v4;

	if (!text || strlen(text) >= sizeof(buf))
		return fail(x, s, "%s", expect);
	strcpy(buf, text);
	slash = strchr(text, '/');
	if (slash)
		buf[slash - text] = '\0';
	if (inet_pton(AF_INET, buf, a + 12) == 1) {
		a[10] = a[11] = 0xff;
		v4 = true;
		max = 32;
		base = 96;
	} else if (inet_pton(AF_INET6, buf, a) == 1) {
		v4 = false;
		max = 128;
		base = 0;
	} else {
		return fail(x, s, "%s", expect);
	}
	prefix = max;
	if (slash) {
		const char *p = slash + 1;

		if (!*p || strlen(p) > 3)
			return fail(x, s, "%s", expect);
		for (prefix = 0; *p; p++) {
			if (*p < '0' || *p > '9')
				return fail(x, s, "%s", expect);
			prefix = prefix * 10 + (unsigned)(*p - '0');
		}
		if (prefix > max)
			return fail(x, s, "remote: prefix longer than %u bits", max);
	}
	bits = base + prefix;
	for (i = 0; i < 16; i++) {
		if (bits >= 8 * (i + 1))
			m[i] = 0xff;
		else if (bits > 8 * i)
			m[i] = (uint8_t)(0xff << (8 * (i + 1) - bits));
		net[i] = a[i] & m[i];
	}
	if (memcmp(net, a, 16)) {
		inet_ntop(v4 ? AF_INET : AF_INET6, v4 ? net + 12 : net, shown, sizeof(shown));
		return fail(x, s, "remote: %s has bits set beyond the /%u prefix (%s/%u?)", text,
			    prefix, shown, prefix);
	}
	memcpy(r->net, net, 16);
	memcpy(r->mask, m, 16);
	return 0;
}

/* Whether a rule's `process` glob can match this program. */
static bool rule_applies(const struct file_ctx *x, const config_setting_t *s)
{
	const config_setting_t *p = config_setting_get_member(s, "process");
	const char *glob;

	if (!p)
		return true;
	glob = string_of(p);
	if (!glob)
		return true;	/* the wrong type is reported by rule_parse() */
	return x->comm && fnmatch(glob, x->comm, 0) == 0;
}

/* Parses one rule into *r; its arms and sinks go into c. */
static int rule_parse(struct file_ctx *x, struct conf *c, const config_setting_t *s,
		      struct conf_rule *r)
{
	const config_setting_t *m;
	const char *str;
	unsigned i;
	int ret;

	memset(r, 0, sizeof(*r));
	r->ab = -1;
	r->reuse_sel = true;
	if (!config_setting_is_group(s))
		return fail(x, s, "rules: each rule is a group { ... }");
	for (i = 0; (m = config_setting_get_elem(s, i)); i++) {
		const char *key = config_setting_name(m);

		if (!strcmp(key, "process")) {
			str = string_of(m);
			if (!str || !*str)
				return fail(x, m, "process: expected a glob such as \"nginx*\"");
		} else if (!strcmp(key, "role")) {
			str = string_of(m);
			if (str && !strcmp(str, "client"))
				r->role = TW_ROLE_CLIENT;
			else if (str && !strcmp(str, "server"))
				r->role = TW_ROLE_SERVER;
			else
				return fail(x, m, "role: expected client or server");
			r->match |= CONF_M_ROLE;
		} else if (!strcmp(key, "remote")) {
			ret = cidr_parse(x, m, r);
			if (ret)
				return ret;
			r->match |= CONF_M_REMOTE;
		} else if (!strcmp(key, "port")) {
			if (!is_int(m) || config_setting_get_int64(m) < 1 ||
			    config_setting_get_int64(m) > 65535)
				return fail(x, m, "port: expected a number from 1 to 65535");
			r->port = (uint16_t)config_setting_get_int64(m);
			r->match |= CONF_M_PORT;
		} else if (!strcmp(key, "ab")) {
			ret = ab_parse(x, c, m, &r->ab);
			if (ret)
				return ret;
		} else {
			ret = level_member(x, c, &r->lv, m);
			if (ret == -ENOENT)
				return fail_key(x, m, AT_RULE);
			if (ret)
				return ret;
		}
	}
	r->reuse_sel = !r->match;
	return 0;
}

/*
 * rules = ( { ... }, ... ). A rule whose `process` cannot match this program
 * is checked like any other, into a scratch conf, and then dropped, so that
 * resolution never looks at it and its log destinations open no sink.
 */
static int rules_parse(struct file_ctx *x, struct conf *c, const config_setting_t *s)
{
	const config_setting_t *m;
	struct conf_rule r;
	struct conf *scratch;
	unsigned i, n;
	int ret;

	if (!config_setting_is_list(s) &&
	    !(config_setting_is_array(s) && config_setting_length(s) == 0))
		return fail(x, s, "rules: expected a list of rules ( { ... }, { ... } )");
	n = (unsigned)config_setting_length(s);
	if (n) {
		c->rules = calloc(n, sizeof(*c->rules));
		if (!c->rules) {
			fail(x, s, "out of memory");
			return -ENOMEM;
		}
		c->rules_cap = n;
	}
	for (i = 0; (m = config_setting_get_elem(s, i)); i++) {
		if (rule_applies(x, m)) {
			ret = rule_parse(x, c, m, &c->rules[c->nrules]);
			if (ret)
				return ret;
			c->nrules++;
			continue;
		}
		scratch = conf_new();
		if (!scratch) {
			fail(x, m, "out of memory");
			return -ENOMEM;
		}
		ret = rule_parse(x, scratch, m, &r);
		conf_free(scratch);
		if (ret)
			return ret;
	}
	return 0;
}

static int root_parse(struct file_ctx *x, struct conf *c, const config_setting_t *root)
{
	const config_setting_t *m;
	unsigned i;
	int ret;

	for (i = 0; (m = config_setting_get_elem(root, i)); i++) {
		const char *key = config_setting_name(m);

		if (!strcmp(key, "rules"))
			ret = rules_parse(x, c, m);
		else if (!strcmp(key, "ab"))
			ret = ab_parse(x, c, m, &c->top_ab);
		else if ((ret = level_member(x, c, &c->top, m)) == -ENOENT)
			ret = fail_key(x, m, AT_TOP);
		if (ret)
			return ret;
	}
	return 0;
}

/* A config file is small: anything larger is a mistake (or /dev/zero). */
#define CONF_FILE_MAX	(1 << 20)
/* libconfig's own limit on nested @include */
#define CONF_INCLUDE_DEPTH	10

/*
 * Reads the whole of path, which must be a regular file of at most
 * CONF_FILE_MAX bytes: a FIFO, a terminal or /dev/stdin would block start-up
 * or eat the program's input, so it is opened O_NONBLOCK and refused unless
 * fstat() says regular. Returns the text (malloc'd, NUL-terminated) or NULL
 * with "path: reason" in err and -errno in *ret (EINVAL: not regular, or too
 * large).
 */
static char *file_slurp(const char *path, int *ret, char *err, size_t errlen)
{
	struct stat st;
	char *text = NULL;
	size_t got = 0;
	ssize_t n;
	int fd, e = 0;

	fd = open(path, O_RDONLY | O_NONBLOCK | O_NOCTTY | O_CLOEXEC);
	*ret = -EINVAL;
	if (fd < 0) {
		*ret = -errno;
		snprintf(err, errlen, "%s: %s", path, strerror(errno));
		return NULL;
	}
	if (fstat(fd, &st) < 0) {
		e = errno;
	} else if (S_ISDIR(st.st_mode)) {
		e = EISDIR;
	} else if (!S_ISREG(st.st_mode)) {
		snprintf(err, errlen, "%s: not a regular file (a FIFO or device would block "
			 "or take the program's input)", path);
		goto out;
	} else if (st.st_size > CONF_FILE_MAX) {
		snprintf(err, errlen, "%s: larger than %d bytes", path, CONF_FILE_MAX);
		goto out;
	} else if (!(text = malloc((size_t)st.st_size + 1))) {
		e = ENOMEM;
	}
	while (!e && text && got < (size_t)st.st_size) {
		n = read(fd, text + got, (size_t)st.st_size - got);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			e = errno;
		if (n <= 0)
			break;
		got += (size_t)n;
	}
	if (e) {
		*ret = -e;
		snprintf(err, errlen, "%s: %s", path, strerror(e));
		free(text);
		text = NULL;
	} else if (text) {
		text[got] = 0;
	}
out:
	close(fd);
	return text;
}

/*
 * libconfig 1.5 opens @include files itself, with fopen(): each one named
 * in text is read first with file_slurp()'s checks (and its own includes in
 * turn), so that a FIFO or an oversized file is refused before libconfig
 * could block on it. dir is the including file's directory, as libconfig
 * resolves relative names. Returns 0 or -errno with err set.
 */
static int includes_check(const char *text, const char *dir, int depth, char *err,
			  size_t errlen)
{
	const char *l, *q, *e;
	char path[TW_PATH_MAX];
	char *sub;
	int ret;

	if (depth > CONF_INCLUDE_DEPTH)
		return 0;	/* libconfig reports the nesting itself */
	for (l = text; l && *l; l = strchr(l, '\n') ? strchr(l, '\n') + 1 : NULL) {
		q = l;
		while (*q == ' ' || *q == '\t')
			q++;
		if (strncmp(q, "@include", 8))
			continue;
		q = strchr(q + 8, '"');
		e = q ? strchr(q + 1, '"') : NULL;
		if (!q || !e || memchr(q, '\n', (size_t)(e - q)))
			continue;
		q++;
		snprintf(path, sizeof(path), "%s%.*s", *q == '/' || !dir ? "" : dir,
			 (int)(e - q), q);
		sub = file_slurp(path, &ret, err, errlen);
		if (!sub && ret == -EINVAL)
			return ret;
		if (!sub) {
			/* missing or unreadable: libconfig says so, with the line */
			err[0] = 0;
			continue;
		}
		ret = includes_check(sub, dir, depth + 1, err, errlen);
		free(sub);
		if (ret)
			return ret;
	}
	return 0;
}

/*
 * Reads path into c. Returns 0; -errno with "path: reason" when the file
 * cannot be read (also: not a regular file, larger than 1 MiB, nor any file
 * it includes); -EINVAL with "path:line: ..." for a mistake in it.
 */
int conf_file_read(struct conf *c, const char *path, const char *comm, char *err,
		   size_t errlen)
{
	struct file_ctx x = { .path = path, .comm = comm, .err = err, .errlen = errlen };
	char *dir = NULL, *slash, *text;
	config_t cfg;
	int ret;

	text = file_slurp(path, &ret, err, errlen);
	if (!text)
		return ret;
	config_init(&cfg);
	/* @include "x" is taken relative to the including file, not to the cwd */
	slash = strrchr(path, '/');
	if (slash) {
		dir = strndup(path, (size_t)(slash - path) + 1);
		if (dir)
			config_set_include_dir(&cfg, dir);
	}
	ret = includes_check(text, dir, 1, err, errlen);
	if (ret)
		goto out;
	if (config_read_string(&cfg, text) != CONFIG_TRUE) {
		const char *file = config_error_file(&cfg);

		ret = config_error_type(&cfg) == CONFIG_ERR_FILE_IO ? -EIO : -EINVAL;
		snprintf(err, errlen, "%s:%d: %s", file ? file : path, config_error_line(&cfg),
			 config_error_text(&cfg));
		goto out;
	}
	ret = root_parse(&x, c, config_root_setting(&cfg));
out:
	config_destroy(&cfg);
	free(dir);
	free(text);
	return ret;
}
