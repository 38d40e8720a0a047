/* SPDX-License-Identifier: MIT */
/*
 * Settings: built-in defaults, the libconfig file, TWSHIM_OPTIONS; and the
 * policy each connection gets from them, resolved once at connect or accept.
 */
#ifndef TWSHIM_CONFIG_H
#define TWSHIM_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

enum tw_close_policy { TW_CLOSE_NORMAL = 0, TW_CLOSE_DEFER = 1, TW_CLOSE_ABORT = 2 };
enum tw_fallback { TW_FALLBACK_NORMAL = 0, TW_FALLBACK_ABORT = 1 };
enum tw_role { TW_ROLE_CLIENT = 0, TW_ROLE_SERVER = 1 };
enum tw_log_only { TW_LOG_ALL = 0, TW_LOG_TW_LOCAL = 1 };

#define TW_SINK_NONE	0xff

/* What one connection gets. */
struct tw_policy {
	uint8_t close;		/* enum tw_close_policy */
	uint8_t fallback;	/* enum tw_fallback */
	uint8_t sink;		/* index for conf_sink(); TW_SINK_NONE: no record */
	uint8_t arm;		/* 0: no A/B split; else 1 + index for conf_arm_name() */
	uint32_t defer_ms;
	/*
	 * Bit fields keep a connection slot within its 112 bytes (conn.h):
	 * exit_wait_ms is at most TW_MS_MAX, and the log_sample values a
	 * configuration names are few, so the policy holds an index to them.
	 */
	uint32_t exit_wait_ms : 20;
	uint32_t log_only : 1;	/* enum tw_log_only */
	uint32_t learn : 1;	/* `learn` is on */
	uint32_t sample : 10;	/* 0: log_sample 1; else 1 + index for conf_log_sample() */
};

struct conf;

/* Where settings come from; NULL members are absent. */
struct conf_source {
	const char *comm;	/* process name, as program_invocation_short_name */
	const char *file;	/* libconfig file */
	const char *options;	/* TWSHIM_OPTIONS text */
};

/*
 * Builds the settings from defaults, then src->file, then src->options.
 * Returns 0, or -errno with one line (no "twshim:" prefix, no newline) in err,
 * such as "/etc/twshim.conf:12: close: expected normal, defer or abort" or
 * "TWSHIM_OPTIONS: defer_ms: expected a number from 0 to 600000".
 */
int conf_load(struct conf **out, const struct conf_source *src, char *err, size_t errlen);
/*
 * The same from the environment: TWSHIM_CONFIG, else /etc/twshim.conf when it
 * exists; then TWSHIM_OPTIONS. With secure set (AT_SECURE) the environment is
 * ignored and only /etc/twshim.conf counts.
 */
int conf_load_env(struct conf **out, const char *comm, bool secure, char *err, size_t errlen);
void conf_free(struct conf *c);

/* true when some connection may be recorded or closed other than normally */
bool conf_tracking(const struct conf *c);
/* true when some connection may be closed under `defer` or `abort` */
bool conf_closing(const struct conf *c);
/* SO_REUSEADDR on this process's new TCP sockets (selected by `process` only) */
bool conf_reuseaddr(const struct conf *c);
/*
 * The policy of one connection. remote may be NULL (unknown); port is the
 * service port (remote port of a client, local port of a server); rnd is a
 * fresh random number for a per-connection A/B draw.
 */
void conf_resolve(const struct conf *c, enum tw_role role, const struct sockaddr *remote,
		  socklen_t remote_len, uint16_t port, uint64_t rnd, struct tw_policy *out);
/*
 * Can a rule choose a policy by the service port for this role? For a
 * server that is its local port, which conf_resolve() then needs.
 */
bool conf_port_matters(const struct conf *c, enum tw_role role);
/* Log destinations: "stderr", "syslog", or a path still holding %p and %n. */
size_t conf_nsinks(const struct conf *c);
const char *conf_sink(const struct conf *c, size_t i);
/* log_sample N of a policy: 1 .. TW_SAMPLE_MAX */
uint32_t conf_log_sample(const struct conf *c, const struct tw_policy *p);
/* The `stats` directory of this process (selected by `process` only), or NULL. */
const char *conf_stats_dir(const struct conf *c);
/* name of arm (>= 1) as given in the file */
const char *conf_arm_name(const struct conf *c, unsigned arm);
/* a new process (after fork) draws its per-process A/B arms again */
void conf_reseed(struct conf *c, uint64_t rnd);

#endif
