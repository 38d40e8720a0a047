/* SPDX-License-Identifier: MIT */
/*
 * TWSHIM_OPTIONS: "key=value,key=value", the policy keys of the top level.
 * Spaces and tabs around items, keys and values are ignored, and so are
 * empty items ("a=1,,b=2," is fine); a key given twice takes its last value.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "conf_impl.h"
#include "config.h"
#include "defaults.h"

/* longest item looked at; a longer one cannot be a valid key=value anyway */
#define OPT_ITEM_MAX	(TW_PATH_MAX + 64)

static bool is_blank(char ch)
{
	return ch == ' ' || ch == '\t';
}

/* [*s, *e) without the blanks at either end. */
static void trim(const char **s, const char **e)
{
	while (*s < *e && is_blank(**s))
		(*s)++;
	while (*e > *s && is_blank((*e)[-1]))
		(*e)--;
}

/* Keys that only the file knows, named so the mistake is plain. */
static bool file_only(const char *key)
{
	static const char *const keys[] = { "rules", "ab", "process", "role", "remote", "port",
					    "split", "arms", "name", "weight" };
	size_t i;

	for (i = 0; i < sizeof(keys) / sizeof(keys[0]); i++)
		if (!strcmp(key, keys[i]))
			return true;
	return false;
}

/* One item [s, e), already trimmed and not empty. */
static int item_apply(struct conf *c, const char *s, const char *e, char *err, size_t errlen)
{
	char item[OPT_ITEM_MAX], msg[256];
	struct conf_value v = { .type = CONF_V_TEXT };
	const char *ks, *ke, *vs, *ve, *eq;
	size_t len = (size_t)(e - s);
	int ret;

	eq = memchr(s, '=', len);
	if (!eq) {
		snprintf(err, errlen, TW_ENV_OPTIONS ": \"%.*s\": expected key=value",
			 (int)(len > 64 ? 64 : len), s);
		return -EINVAL;
	}
	if (len >= sizeof(item)) {
		snprintf(err, errlen, TW_ENV_OPTIONS ": \"%.32s...\": value too long", s);
		return -EINVAL;
	}
	ks = s;
	ke = eq;
	vs = eq + 1;
	ve = e;
	trim(&ks, &ke);
	trim(&vs, &ve);
	if (ks == ke) {
		snprintf(err, errlen, TW_ENV_OPTIONS ": \"%.*s\": expected key=value",
			 (int)(len > 64 ? 64 : len), s);
		return -EINVAL;
	}
	/* key and value copied NUL-terminated side by side */
	memcpy(item, ks, (size_t)(ke - ks));
	item[ke - ks] = '\0';
	memcpy(item + (ke - ks) + 1, vs, (size_t)(ve - vs));
	item[(ke - ks) + 1 + (ve - vs)] = '\0';
	v.s = item + (ke - ks) + 1;

	ret = conf_key_set(c, &c->top, item, &v, msg, sizeof(msg));
	if (ret == -ENOENT) {
		if (file_only(item))
			snprintf(err, errlen, TW_ENV_OPTIONS ": %s: only in the config file", item);
		else
			snprintf(err, errlen, TW_ENV_OPTIONS ": unknown key \"%.64s\"", item);
		return -EINVAL;
	}
	if (ret)
		snprintf(err, errlen, TW_ENV_OPTIONS ": %s", msg);
	return ret;
}

/*
 * Applies TWSHIM_OPTIONS to the top level of c. Returns 0, or -EINVAL with
 * "TWSHIM_OPTIONS: ..." in err for the first mistake.
 */
int conf_options_parse(struct conf *c, const char *text, char *err, size_t errlen)
{
	const char *s = text, *e, *is, *ie;
	int ret;

	for (;;) {
		e = strchr(s, ',');
		if (!e)
			e = s + strlen(s);
		is = s;
		ie = e;
		trim(&is, &ie);
		if (is < ie) {
			ret = item_apply(c, is, ie, err, errlen);
			if (ret)
				return ret;
		}
		if (!*e)
			return 0;
		s = e + 1;
	}
}
