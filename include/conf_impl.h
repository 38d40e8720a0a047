/* SPDX-License-Identifier: MIT */
/*
 * Inside the settings module (core/conf.c, options.c, conffile.c, resolve.c):
 * the layout of struct conf and the few functions its files share. Everything
 * else goes through config.h.
 */
#ifndef TWSHIM_CONF_IMPL_H
#define TWSHIM_CONF_IMPL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "config.h"
#include "defaults.h"

/* The policy keys, valid at every level and in TWSHIM_OPTIONS. */
enum conf_key {
	CONF_K_CLOSE,
	CONF_K_DEFER_MS,
	CONF_K_FALLBACK,
	CONF_K_EXIT_WAIT_MS,
	CONF_K_REUSEADDR,
	CONF_K_LOG,
	CONF_K_LEARN,
	CONF_K_COUNT,
};
#define CONF_BIT(k)	(1u << (k))
#define CONF_ALL	(CONF_BIT(CONF_K_COUNT) - 1)

/* The keys one level (top, rule or arm) names, and their values. */
struct conf_level {
	uint32_t set;		/* CONF_BIT(k) for every key named here */
	uint8_t close;		/* enum tw_close_policy */
	uint8_t fallback;	/* enum tw_fallback */
	uint8_t sink;		/* index into conf.sinks, or TW_SINK_NONE */
	bool reuseaddr;
	uint32_t defer_ms;
	uint32_t exit_wait_ms;
	uint8_t learn;		/* 1: on */
};

enum conf_split { CONF_SPLIT_CONNECTION, CONF_SPLIT_PROCESS };

struct conf_arm {
	char *name;
	uint64_t cum;		/* weights of this arm and those before it in its group */
	struct conf_level lv;
};

/* One `ab` group: arms[first] .. arms[first + n - 1]. */
struct conf_ab {
	uint8_t split;		/* enum conf_split */
	uint8_t first;
	uint8_t n;
	uint8_t drawn;		/* split=process: this process's arm, within the group */
	uint64_t total;		/* sum of the weights, > 0 */
};

#define CONF_M_ROLE	0x1
#define CONF_M_REMOTE	0x2
#define CONF_M_PORT	0x4

/*
 * A rule whose `process` matched the program (those that cannot are dropped
 * at load). The remote network is kept as IPv6 (IPv4 mapped into
 * ::ffff:0:0/96) in two 64-bit words, so one masked compare serves both
 * families.
 */
struct conf_rule {
	uint8_t match;		/* CONF_M_* */
	uint8_t role;		/* enum tw_role */
	uint16_t port;
	bool reuse_sel;		/* no match key but `process`: may select reuseaddr */
	int ab;			/* index into conf.abs, or -1 */
	uint64_t net[2];
	uint64_t mask[2];
	struct conf_level lv;
};

struct conf {
	struct conf_level top;	/* every key set: defaults, then file, then options */
	int top_ab;		/* index into abs, or -1 */
	struct conf_rule *rules;
	size_t nrules, rules_cap;
	struct conf_ab *abs;
	size_t nabs, abs_cap;
	struct conf_arm arms[TW_ARMS_MAX];
	size_t narms;
	char *sinks[TW_SINKS_MAX];
	size_t nsinks;
	bool tracking;		/* computed by conf_finish() */
	bool closing;		/* some level closes other than normally; conf_finish() */
	bool reuseaddr;		/* for this process, after its per-process draw */
};

/* A value for conf_key_set(): text from TWSHIM_OPTIONS or a typed file value. */
enum conf_vtype { CONF_V_TEXT, CONF_V_STRING, CONF_V_INT, CONF_V_BOOL, CONF_V_OTHER };

struct conf_value {
	enum conf_vtype type;
	const char *s;		/* CONF_V_TEXT, CONF_V_STRING */
	long long i;		/* CONF_V_INT */
	bool b;			/* CONF_V_BOOL */
};

/*
 * Sets policy key `key` of level lv to v. Returns 0; -ENOENT when key is not
 * a policy key (msg untouched); -EINVAL with "key: expected ..." in msg.
 */
int conf_key_set(struct conf *c, struct conf_level *lv, const char *key,
		 const struct conf_value *v, char *msg, size_t msglen);
/* Whether key is one of the policy keys. */
bool conf_key_known(const char *key);
/* Applies TWSHIM_OPTIONS text to the top level; 0 or -EINVAL with err set. */
int conf_options_parse(struct conf *c, const char *text, char *err, size_t errlen);
/* Reads a libconfig file into c; 0 or -errno with err set. */
int conf_file_read(struct conf *c, const char *path, const char *comm, char *err,
		   size_t errlen);
/* After loading: precomputes tracking and draws the per-process arms. */
void conf_finish(struct conf *c, uint64_t seed);
/* A fresh struct conf holding only the defaults, or NULL. */
struct conf *conf_new(void);

#endif
