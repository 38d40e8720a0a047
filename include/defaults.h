/* SPDX-License-Identifier: MIT */
/*
 * The one place for names the environment, the file system and the limits
 * know twshim by.
 */
#ifndef TWSHIM_DEFAULTS_H
#define TWSHIM_DEFAULTS_H

#define TW_ENV_CONFIG		"TWSHIM_CONFIG"
#define TW_ENV_OPTIONS		"TWSHIM_OPTIONS"
#define TW_ENV_DEBUG		"TWSHIM_DEBUG"	/* 0 errors, 1 warnings, 2 debug */
#define TW_SYSTEM_CONFIG	"/etc/twshim.conf"
#define TW_LIB_NAME		"libtwshim.so"
/* where `twshim exporter` looks for the processes' counters unless told */
#define TW_STATS_DIR_DEFAULT	"/run/twshim"

#define TW_DEFER_MS_DEFAULT	1000
#define TW_EXIT_WAIT_MS_DEFAULT	1000
#define TW_MS_MAX		600000
/* log_sample: 1 .. this */
#define TW_SAMPLE_MAX		1000000
/* distinct log_sample values one configuration may name (tw_policy.sample) */
#define TW_SAMPLES_MAX		1023

/* fds at or above this are not tracked (the table is reserved, not allocated). */
#define TW_FD_MAX		(1u << 20)
/*
 * With no room above the soft RLIMIT_NOFILE (soft = hard), the library keeps
 * fds in the upper half of a limit at least this large, and none below it.
 */
#define TW_LIBFD_SHARE_MIN	1024
/* most connection slots per process (112 bytes each, mapped 4096 at a time) */
#define TW_CONN_MAX		(1u << 20)
/* most connections one process keeps deferred at once */
#define TW_DEFER_CAP		131072
/* distinct log destinations one configuration may name */
#define TW_SINKS_MAX		8
/* A/B arms one configuration may name, over all groups */
#define TW_ARMS_MAX		64
/* longest process name kept for records and rule matching */
#define TW_COMM_MAX		128
/* longest log path after %p/%n expansion */
#define TW_PATH_MAX		4096
/* what `learn` keeps, per user: a file in shared memory (%u: the effective uid) */
#define TW_LEARN_PATH		"/dev/shm/twshim-learn-%u"
/* remote endpoints it remembers (8 bytes each) */
#define TW_LEARN_SLOTS		8192
/* deferred closes in a row that met no FIN within defer_ms before a peer is learned */
#define TW_LEARN_MISSES		2
/* a learned peer gets one wait again after this many seconds */
#define TW_LEARN_RETRY_S	30
/* TIME_WAIT lasts TCP_TIMEWAIT_LEN on Linux (include/net/tcp.h) */
#define TW_TIMEWAIT_SEC		60

#endif
