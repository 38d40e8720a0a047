/* SPDX-License-Identifier: MIT */
/*
 * How a tracked connection ends: a pure function from what was observed to
 * what is done and what the record says. The callers observe (a peek, TCP_INFO,
 * SIOCOUTQ, sock_diag after the close), call decide(), and act on the verdict;
 * nothing here makes a system call, so every rule is one row of a table test.
 */
#ifndef TWSHIM_DECIDE_H
#define TWSHIM_DECIDE_H

#include <stdbool.h>
#include <stdint.h>

/* Who asks. */
enum obs_who {
	WHO_CLOSE,	/* the program let go of its last fd in this process */
	WHO_EXIT,	/* the process is ending and still holds the fd: the kernel closes it */
	WHO_EVENT,	/* the closer saw the deferred socket readable */
	WHO_DEADLINE,	/* the closer's deadline for a deferred socket passed */
	WHO_CONNECT,	/* a connect failed with EADDRNOTAVAIL (unread: unused) */
};

/* What the receive queue held, from a one-byte MSG_PEEK. */
enum obs_unread { UNREAD_NONE, UNREAD_EOF, UNREAD_DATA, UNREAD_ERROR };

/*
 * `before` when TCP_INFO was not read: the peek, and what the library knows
 * of the connection (`up`), stand for the state where that is enough.
 */
#define OBS_UNSEEN	0xff

/* What keeps the end of this connection. */
enum obs_kept {
	KEPT_NONE,	/* nothing: no log, no counters (and no peek was made) */
	KEPT_COUNT,	/* the counters only: the end, not the state or the byte counts */
	KEPT_LINE,	/* a log line: its state and byte counts too */
};

/* What sock_diag said after the close, looked up by cookie and 4-tuple. */
enum obs_after {
	AFTER_NOT_ASKED,	/* before the close: the first question */
	AFTER_HELD,		/* still there with an inode: another holder keeps it */
	AFTER_ORPHAN,		/* there, no inode: after_state says how far it got */
	AFTER_GONE,		/* not found: over already */
	AFTER_FAILED,		/* the question could not be asked */
};

/* Why the configured policy was not applied (the record's `why`). */
enum conn_why {
	WHY_NONE, WHY_SHARED, WHY_NO_FD, WHY_CAP, WHY_NO_CLOSER, WHY_LINGER, WHY_UNREAD,
	WHY_DATA_AFTER_CLOSE, WHY_LEARNED, WHY_UNACKED,
};

struct observed {
	uint8_t who;		/* enum obs_who */
	uint8_t mode;		/* enum tw_close_policy in force */
	uint8_t fallback;	/* enum tw_fallback */
	uint8_t before;		/* TCP state as the program let go (0: not a TCP socket) */
	uint8_t at_shutdown;	/* with shut_wr: the state the program's own FIN met */
	uint8_t unread;		/* enum obs_unread */
	uint8_t after;		/* enum obs_after */
	uint8_t after_state;	/* with AFTER_ORPHAN: the kernel's state */
	uint8_t closer_why;	/* WHY_NONE when the closer can take it, else why not */
	uint8_t kept;		/* enum obs_kept */
	/*
	 * After DO_SHUT: the state TCP_INFO showed right after the library's
	 * shutdown(SHUT_WR) sent the program's FIN (0: no such shutdown made).
	 */
	uint8_t fin;
	bool shut_wr;		/* the program shut down writing */
	bool linger0;		/* the program set SO_LINGER {1,0} */
	bool shared;		/* another process may hold it */
	bool outq_empty;	/* SIOCOUTQ = 0: the peer acknowledged all that was written */
	bool final;		/* WHO_DEADLINE: the last deadline (defer_ms or exit_wait_ms) */
	bool held;		/* a copy held while the exiting program keeps its fd */
	bool learned;		/* defer: the peer did not close within defer_ms lately (learn.h) */
	bool waiting;		/* WHO_CONNECT: deferred connections that may end are held */
	bool up;		/* known to have come up: connect() returned 0, or accept() */
	/*
	 * Nothing can act on the socket between two calls of this close: one
	 * thread in the process and no child sharing its memory.
	 */
	bool single;
	/* the program's call lets go of the fd whatever happens: close(), not fclose or dup2 */
	bool plain;
	bool fin_failed;	/* with fin: that shutdown failed (ENOTCONN: it was over already) */
	bool nothing_in;	/* with fin: TCP_INFO counted no segment ever received */
	/*
	 * with fin: TCP_INFO's counters include the acknowledgement of this
	 * side's FIN (nothing in flight or unsent after it)
	 */
	bool fin_acked;
};

enum verdict_act {
	DO_NOTHING,	/* nothing of ours to do or record (not TCP, or another holder keeps it) */
	DO_CLOSE,	/* close (WHO_EXIT: leave it to the kernel); end is known */
	DO_CLOSE_ASK,	/* close, then ask sock_diag and decide again with `after` */
	DO_RESET,	/* SO_LINGER {1,0}, then close */
	DO_DEFER,	/* hand to the closer: it waits for the peer's FIN */
	DO_WAIT_ACKED,	/* hand to the closer: it resets once SIOCOUTQ = 0 */
	DO_KEEP,	/* the closer goes on waiting */
	DO_HOLD,	/* at exit or exec: to the holder process, the program does not wait */
	DO_RETRY,	/* WHO_CONNECT: wait for a deferred connection to end, connect again */
	DO_LOOK,	/* read TCP_INFO (`before`), then decide again */
	/*
	 * send the program's FIN now with shutdown(SHUT_WR), read TCP_INFO
	 * (`fin`), decide again, then close: who was first is read off the
	 * state that FIN produced, not asked of sock_diag after the close
	 */
	DO_SHUT,
};

struct verdict {
	uint8_t act;		/* enum verdict_act */
	uint8_t end;		/* enum tw_end; meaningful when record */
	uint8_t why;		/* enum conn_why */
	uint8_t mode;		/* the policy the record names */
	bool record;		/* write the record now */
	bool timeout;		/* defer_ms ran out */
	uint8_t state;		/* the state the record names, when not the one observed (0) */
};

struct verdict decide(const struct observed *o);
/* The record's name of a why, NULL for WHY_NONE. */
const char *decide_why_name(uint8_t why);

#endif
