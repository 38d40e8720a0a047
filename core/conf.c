/* SPDX-License-Identifier: MIT */
/*
 * Settings: what each policy key accepts (the one place, shared by the
 * TWSHIM_OPTIONS parser and the file loader), and the assembly of a struct
 * conf from defaults, the file and TWSHIM_OPTIONS.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "conf_impl.h"
#include "config.h"
#include "defaults.h"

static const char *const close_names[] = { "normal", "defer", "abort" };
static const char *const fallback_names[] = { "normal", "abort" };
static const char *const learn_names[] = { "off", "on" };

/* Index of v's text in names, or -1 when it is not one of them. */
static int value_enum(const struct conf_value *v, const char *const *names, int n)
{
	int i;

	if (v->type != CONF_V_TEXT && v->type != CONF_V_STRING)
		return -1;
	for (i = 0; i < n; i++)
		if (!strcmp(v->s, names[i]))
			return i;
	return -1;
}

/*
 * A number of milliseconds, 0 .. TW_MS_MAX: an integer in the file, plain
 * decimal digits in TWSHIM_OPTIONS (no sign, no suffix). Returns 0 or -EINVAL.
 */
static int value_ms(const struct conf_value *v, uint32_t *out)
{
	unsigned long long n = 0;
	const char *p;

	if (v->type == CONF_V_INT) {
		if (v->i < 0 || v->i > TW_MS_MAX)
			return -EINVAL;
		*out = (uint32_t)v->i;
		return 0;
	}
	if (v->type != CONF_V_TEXT || !*v->s)
		return -EINVAL;
	for (p = v->s; *p; p++) {
		if (*p < '0' || *p > '9')
			return -EINVAL;
		n = n * 10 + (unsigned)(*p - '0');
		if (n > TW_MS_MAX)
			return -EINVAL;
	}
	*out = (uint32_t)n;
	return 0;
}

/* true/false in the file; 1, 0, true, false in TWSHIM_OPTIONS. */
static int value_bool(const struct conf_value *v, bool *out)
{
	if (v->type == CONF_V_BOOL) {
		*out = v->b;
		return 0;
	}
	if (v->type != CONF_V_TEXT)
		return -EINVAL;
	if (!strcmp(v->s, "1") || !strcmp(v->s, "true"))
		*out = true;
	else if (!strcmp(v->s, "0") || !strcmp(v->s, "false"))
		*out = false;
	else
		return -EINVAL;
	return 0;
}

/*
 * The sink index for a log destination, adding it to c->sinks when it is new:
 * equal texts share one sink. Returns 0, -EINVAL when the table is full,
 * -ENOMEM.
 */
static int sink_add(struct conf *c, const char *dest, uint8_t *idx)
{
	size_t i;

	for (i = 0; i < c->nsinks; i++) {
		if (!strcmp(c->sinks[i], dest)) {
			*idx = (uint8_t)i;
			return 0;
		}
	}
	if (c->nsinks >= TW_SINKS_MAX)
		return -EINVAL;
	c->sinks[c->nsinks] = strdup(dest);
	if (!c->sinks[c->nsinks])
		return -ENOMEM;
	*idx = (uint8_t)c->nsinks++;
	return 0;
}

/* log: "none", "stderr", "syslog" or a path (kept with its %p and %n). */
static int value_log(struct conf *c, const struct conf_value *v, uint8_t *sink, char *msg,
		     size_t msglen)
{
	int ret;

	if ((v->type != CONF_V_TEXT && v->type != CONF_V_STRING) || !*v->s) {
		snprintf(msg, msglen, "log: expected a path, stderr, syslog or none");
		return -EINVAL;
	}
	if (!strcmp(v->s, "none")) {
		*sink = TW_SINK_NONE;
		return 0;
	}
	if (strlen(v->s) >= TW_PATH_MAX) {
		snprintf(msg, msglen, "log: path longer than %d bytes", TW_PATH_MAX - 1);
		return -EINVAL;
	}
	ret = sink_add(c, v->s, sink);
	if (ret == -EINVAL)
		snprintf(msg, msglen, "log: more than %d different log destinations",
			 TW_SINKS_MAX);
	else if (ret == -ENOMEM)
		snprintf(msg, msglen, "log: out of memory");
	return ret;
}

/*
 * The one function that applies a policy key to a level, for the file (typed
 * values) and TWSHIM_OPTIONS (text) alike, so that both accept the same
 * values and say the same thing about a wrong one.
 */
int conf_key_set(struct conf *c, struct conf_level *lv, const char *key,
		 const struct conf_value *v, char *msg, size_t msglen)
{
	int i, ret;

	if (!strcmp(key, "close")) {
		i = value_enum(v, close_names, 3);
		if (i < 0)
			goto bad_close;
		lv->close = (uint8_t)i;
		lv->set |= CONF_BIT(CONF_K_CLOSE);
	} else if (!strcmp(key, "fallback")) {
		i = value_enum(v, fallback_names, 2);
		if (i < 0)
			goto bad_fallback;
		lv->fallback = (uint8_t)i;
		lv->set |= CONF_BIT(CONF_K_FALLBACK);
	} else if (!strcmp(key, "defer_ms")) {
		if (value_ms(v, &lv->defer_ms))
			goto bad_ms;
		lv->set |= CONF_BIT(CONF_K_DEFER_MS);
	} else if (!strcmp(key, "exit_wait_ms")) {
		if (value_ms(v, &lv->exit_wait_ms))
			goto bad_ms;
		lv->set |= CONF_BIT(CONF_K_EXIT_WAIT_MS);
	} else if (!strcmp(key, "learn")) {
		i = value_enum(v, learn_names, 2);
		if (i < 0)
			goto bad_learn;
		lv->learn = (uint8_t)i;
		lv->set |= CONF_BIT(CONF_K_LEARN);
	} else if (!strcmp(key, "reuseaddr")) {
		if (value_bool(v, &lv->reuseaddr))
			goto bad_bool;
		lv->set |= CONF_BIT(CONF_K_REUSEADDR);
	} else if (!strcmp(key, "log")) {
		ret = value_log(c, v, &lv->sink, msg, msglen);
		if (ret)
			return ret;
		lv->set |= CONF_BIT(CONF_K_LOG);
	} else {
		return -ENOENT;
	}
	return 0;

bad_close:
	snprintf(msg, msglen, "close: expected normal, defer or abort");
	return -EINVAL;
bad_fallback:
	snprintf(msg, msglen, "fallback: expected normal or abort");
	return -EINVAL;
bad_learn:
	snprintf(msg, msglen, "learn: expected on or off");
	return -EINVAL;
bad_ms:
	snprintf(msg, msglen, "%s: expected a number from 0 to %d", key, TW_MS_MAX);
	return -EINVAL;
bad_bool:
	snprintf(msg, msglen, "reuseaddr: %s",
		 v->type == CONF_V_TEXT ? "expected 1, 0, true or false" :
		 "expected true or false");
	return -EINVAL;
}

bool conf_key_known(const char *key)
{
	static const char *const keys[] = { "close", "defer_ms", "fallback", "exit_wait_ms",
					    "reuseaddr", "log", "learn" };
	size_t i;

	for (i = 0; i < sizeof(keys) / sizeof(keys[0]); i++)
		if (!strcmp(key, keys[i]))
			return true;
	return false;
}

/* A struct conf holding the built-in defaults only. */
struct conf *conf_new(void)
{
	struct conf *c = calloc(1, sizeof(*c));

	if (!c)
		return NULL;
	c->top.set = CONF_ALL;
	c->top.close = TW_CLOSE_NORMAL;
	c->top.fallback = TW_FALLBACK_NORMAL;
	c->top.sink = TW_SINK_NONE;
	c->top.reuseaddr = false;
	c->top.defer_ms = TW_DEFER_MS_DEFAULT;
	c->top.exit_wait_ms = TW_EXIT_WAIT_MS_DEFAULT;
	c->top.learn = 1;
	c->top_ab = -1;
	return c;
}

void conf_free(struct conf *c)
{
	size_t i;

	if (!c)
		return;
	for (i = 0; i < c->narms; i++)
		free(c->arms[i].name);
	for (i = 0; i < c->nsinks; i++)
		free(c->sinks[i]);
	free(c->rules);
	free(c->abs);
	free(c);
}

/*
 * A seed for the first per-process draw. getrandom() may fail (old kernel,
 * seccomp); then time and pid still differ between processes.
 */
static uint64_t seed_new(void)
{
	struct timespec ts;
	uint64_t s;

	if (getrandom(&s, sizeof(s), GRND_NONBLOCK) == (ssize_t)sizeof(s))
		return s;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ((uint64_t)ts.tv_sec * 1000000007u) ^ (uint64_t)ts.tv_nsec ^
	       ((uint64_t)getpid() << 32);
}

/*
 * err must be one line whatever a user wrote: control characters (a newline
 * in TWSHIM_OPTIONS, say) become '?'.
 */
static void err_clean(char *err)
{
	for (; *err; err++)
		if ((unsigned char)*err < 0x20 || *err == 0x7f)
			*err = '?';
}

/*
 * Builds the settings: defaults, then src->file, then src->options. On any
 * mistake *out is NULL and err holds one line.
 */
int conf_load(struct conf **out, const struct conf_source *src, char *err, size_t errlen)
{
	char dummy[1];
	struct conf *c;
	int ret = 0;

	*out = NULL;
	if (!err || !errlen) {
		err = dummy;
		errlen = sizeof(dummy);
	}
	err[0] = '\0';
	c = conf_new();
	if (!c) {
		snprintf(err, errlen, "out of memory");
		return -ENOMEM;
	}
	if (src && src->file)
		ret = conf_file_read(c, src->file, src->comm, err, errlen);
	if (!ret && src && src->options)
		ret = conf_options_parse(c, src->options, err, errlen);
	if (ret) {
		err_clean(err);
		conf_free(c);
		return ret;
	}
	conf_finish(c, seed_new());
	*out = c;
	return 0;
}

/*
 * From the environment. TWSHIM_CONFIG set to "" reads no file at all, not
 * even /etc/twshim.conf. With secure set (AT_SECURE: setuid, setgid, file
 * capabilities) whoever started the program chose the environment, so only
 * the system file counts.
 */
int conf_load_env(struct conf **out, const char *comm, bool secure, char *err, size_t errlen)
{
	struct conf_source src = { .comm = comm };
	const char *file = NULL;
	struct stat st;

	if (!secure)
		file = getenv(TW_ENV_CONFIG);
	if (file) {
		if (*file)
			src.file = file;
	} else if (stat(TW_SYSTEM_CONFIG, &st) == 0 || errno != ENOENT) {
		src.file = TW_SYSTEM_CONFIG;
	}
	if (!secure)
		src.options = getenv(TW_ENV_OPTIONS);
	return conf_load(out, &src, err, errlen);
}
