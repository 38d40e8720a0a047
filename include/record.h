/* SPDX-License-Identifier: MIT */
/*
 * The close record: one JSON line per TCP connection (../shared/spec.md,
 * "The close record").
 */
#ifndef TWSHIM_RECORD_H
#define TWSHIM_RECORD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "addr.h"
#include "defaults.h"
#include "fmt.h"

/* TCP_INFO tcpi_state values (include/net/tcp_states.h) */
enum tw_tcp_state {
	TW_ESTABLISHED = 1, TW_SYN_SENT, TW_SYN_RECV, TW_FIN_WAIT1, TW_FIN_WAIT2,
	TW_TIME_WAIT, TW_CLOSE, TW_CLOSE_WAIT, TW_LAST_ACK, TW_LISTEN, TW_CLOSING,
};

enum tw_end { TW_END_ACTIVE, TW_END_PASSIVE, TW_END_ABORT, TW_END_RESET };
enum tw_where { TW_TW_LOCAL, TW_TW_PEER, TW_TW_NONE };
enum tw_via {
	TW_VIA_CLOSE, TW_VIA_SHUTDOWN, TW_VIA_DUP2, TW_VIA_DUP3, TW_VIA_CLOSE_RANGE,
	TW_VIA_CLOSEFROM, TW_VIA_FCLOSE, TW_VIA_EXIT, TW_VIA_EXEC,
};

struct tw_record {
	uint64_t ts_us;		/* CLOCK_REALTIME, microseconds */
	int pid;
	const char *comm;
	uint8_t role;		/* enum tw_role */
	uint8_t policy;		/* enum tw_close_policy */
	uint8_t state;		/* enum tw_tcp_state at the program's close or shutdown */
	uint8_t end;		/* enum tw_end */
	uint8_t via;		/* enum tw_via */
	bool timeout;
	bool deferred;		/* deferred_us is meaningful */
	const char *arm;	/* NULL when there is no split */
	const char *why;	/* NULL, or why the policy could not be applied */
	struct tw_addr local, remote;
	uint64_t dur_us;	/* connect/accept to the program's close */
	uint64_t deferred_us;	/* the program's close to the real end */
	uint64_t bytes_acked, bytes_received;
	int fd;
};

/* longest line record_format() can need: comm is at most TW_COMM_MAX bytes */
#define TW_RECORD_MAX	2048

/*
 * Formats r as one JSON object and a newline. Returns the length, or 0 when
 * len is too short. Async-signal-safe: no stdio, no locale, no allocation.
 */
size_t record_format(char *buf, size_t len, const struct tw_record *r);
/* How a connection ends when the program's close or shutdown meets it in `state`. */
enum tw_end record_classify(int state);
enum tw_where record_where(enum tw_end end);
const char *record_state_name(int state);
const char *record_end_name(enum tw_end end);
const char *record_where_name(enum tw_where w);
const char *record_via_name(enum tw_via via);
const char *record_policy_name(int policy);

#endif
