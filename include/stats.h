/* SPDX-License-Identifier: MIT */
/*
 * Exact per-process counters of connection ends, kept in a small file each
 * process maps (MAP_SHARED) in the `stats` directory, and read by
 * `twshim exporter`. The layout below is the file format (README, "The
 * stats files"); a change of it bumps TW_STATS_VERSION.
 */
#ifndef TWSHIM_STATS_H
#define TWSHIM_STATS_H

#include <stdbool.h>
#include <stdint.h>

#include "defaults.h"

/* the first 8 bytes, "TWSTATS\0"; written last, so a file still being made has none */
#define TW_STATS_MAGIC		0x0053544154535754ull
#define TW_STATS_VERSION	1u
/* the file name: PID-STARTTIME.twstats, or PID-STARTTIME-N.twstats after a collision */
#define TW_STATS_SUFFIX		".twstats"
#define TW_STATS_ARM_NAME	64

/* indexes of tw_stats_file.conns: role, policy, arm (0: none), end */
#define TW_STATS_ROLES		2	/* enum tw_role */
#define TW_STATS_POLICIES	3	/* enum tw_close_policy */
#define TW_STATS_ARMS		(TW_ARMS_MAX + 1)
#define TW_STATS_ENDS		4	/* enum tw_end; tw follows from end */

/*
 * Every counter is a native-endian 64-bit integer updated with atomic adds
 * (relaxed): read each with one aligned 64-bit load.
 */
struct tw_stats_file {
	uint64_t magic;			/* TW_STATS_MAGIC */
	uint32_t version;		/* TW_STATS_VERSION */
	uint32_t size;			/* sizeof(struct tw_stats_file) */
	int32_t pid;
	uint32_t narms;			/* arm names given below */
	uint64_t start_ticks;		/* field 22 of /proc/PID/stat: a reused pid differs */
	uint64_t created_us;		/* CLOCK_REALTIME, microseconds */
	char comm[TW_COMM_MAX + 8];	/* NUL-terminated process name */
	char arms[TW_ARMS_MAX][TW_STATS_ARM_NAME];	/* arm i + 1's name */
	int64_t deferred_now;		/* deferred connections in flight (a gauge) */
	uint64_t defer_timeouts;	/* ends chosen by the fallback after defer_ms */
	uint64_t learned_fallbacks;	/* fallbacks applied at once because of `learn` */
	uint64_t connect_waits;		/* connects that waited for a deferred connection */
	uint64_t conns[TW_STATS_ROLES][TW_STATS_POLICIES][TW_STATS_ARMS][TW_STATS_ENDS];
};

/*
 * Makes this process's file, once, at its first tracked connection (the
 * `stats` directory set). A directory that is missing or not writable is
 * said once on stderr; the process then keeps no counters.
 */
void stats_open(void);
/*
 * In a forked child: a file of its own, made now (a fork handler) or at its
 * first connection (the child of a clone(), which calls it with false)
 */
void stats_fork_child(bool now);
/*
 * One connection's end, as recorded: role, policy applied, arm (0: none),
 * end, whether a timeout chose it, and whether it was deferred (handed to the
 * closer). Atomic adds only: no system call, no lock.
 */
void stats_end(unsigned role, unsigned policy, unsigned arm, unsigned end, bool timeout,
	       bool deferred);
/* Does this process keep counters (its file is made)? */
bool stats_on(void);
/* A connection was handed to the closer. */
void stats_defer_begin(void);
/* A fallback applied at once because of `learn`. */
void stats_learned(void);
/* A connect that waited for a deferred connection to end. */
void stats_connect_wait(void);

/*
 * For readers: checks that buf (len bytes read from a stats file) holds a
 * complete file of this version. Returns 0 or -EINVAL.
 */
int stats_file_check(const void *buf, size_t len);
/* Field 22 of /proc/PID/stat (start time in clock ticks since boot); 0 when
 * there is no such process or it has ended (a zombie). */
uint64_t stats_start_ticks(int pid);
/* /proc/PID/stat (pid 0: this process) opened, or -errno. Raw calls. */
int proc_stat_open(int pid);
/*
 * Numeric field `field` (1-based, as proc(5) counts) of the stat file open
 * on fd (read from its start), and its state letter in *st (0 when unread),
 * or 0. Raw calls.
 */
uint64_t proc_stat_read(int fd, int field, char *st);

#endif
