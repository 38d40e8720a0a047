// SPDX-License-Identifier: MIT
/*
 * The close path's rules, one row each: what was observed, and what must be
 * done and recorded. The model is the kernel without the library: a close
 * with data unread resets, data arriving after the close resets, a close
 * with nothing unread sends a FIN; the policy changes only when that FIN goes.
 */
#include <criterion/criterion.h>

#include "config.h"
#include "decide.h"
#include "record.h"

#define N	TW_CLOSE_NORMAL
#define D	TW_CLOSE_DEFER
#define A	TW_CLOSE_ABORT
#define FB_A	TW_FALLBACK_ABORT
#define EST	TW_ESTABLISHED
#define CW	TW_CLOSE_WAIT

struct row {
	const char *name;
	struct observed o;
	struct verdict want;
};

/* a verdict that records the end now */
#define REC(act, end, why, mode)	{ act, end, why, mode, true, false, 0 }
/* the same, the record naming a state other than the one observed */
#define REC_AS(act, end, mode, st)	{ act, end, WHY_NONE, mode, true, false, st }
/* a verdict that records nothing now */
#define NOREC(act, why, mode)		{ act, 0, why, mode, false, false, 0 }
/* a verdict at the closer's last deadline */
#define LATE(act, end, why, mode)	{ act, end, why, mode, true, true, 0 }
/* after the close: only the end and whether to record count */
#define AFTER(end)			{ DO_NOTHING, end, WHY_NONE, N, true, false, 0 }
/* the same, the peer's FIN having crossed ours: the record says CLOSE_WAIT */
#define AFTER_CROSSED			{ DO_NOTHING, TW_END_PASSIVE, WHY_NONE, N, true, false, CW }
#define SILENT				{ DO_NOTHING, 0, WHY_NONE, N, false, false, 0 }

/*
 * The program's close in a process where nothing else can touch the socket
 * between two calls: one thread, a plain close(), nobody else holding it, a
 * connection, its end counted. Rows below change one thing.
 */
#pragma GCC diagnostic ignored "-Woverride-init"	/* a row overrides what LEAN set */
#define LEAN	.who = WHO_CLOSE, .mode = N, .before = OBS_UNSEEN, .kept = KEPT_COUNT, \
		.up = true, .single = true, .plain = true

static const struct row rows[] = {
	/* the program's close, before it happens */
	{ "not a TCP socket any more", { .who = WHO_CLOSE, .mode = N, .before = 0 },
	  NOREC(DO_NOTHING, WHY_NONE, N) },
	{ "normal, nothing unread: close, then ask the kernel",
	  { .who = WHO_CLOSE, .mode = N, .before = EST }, NOREC(DO_CLOSE_ASK, WHY_NONE, N) },
	{ "normal, the peer's FIN in: passive at once",
	  { .who = WHO_CLOSE, .mode = N, .before = CW, .unread = UNREAD_EOF },
	  REC(DO_CLOSE, TW_END_PASSIVE, WHY_NONE, N) },
	{ "normal, data unread: the kernel's reset, no why",
	  { .who = WHO_CLOSE, .mode = N, .before = EST, .unread = UNREAD_DATA },
	  REC(DO_CLOSE, TW_END_ABORT, WHY_NONE, N) },
	{ "defer, data unread: reset at once, why unread",
	  { .who = WHO_CLOSE, .mode = D, .before = EST, .unread = UNREAD_DATA },
	  REC(DO_CLOSE, TW_END_ABORT, WHY_UNREAD, N) },
	{ "abort, data unread after the peer's FIN: reset at once, why unread",
	  { .who = WHO_CLOSE, .mode = A, .before = CW, .unread = UNREAD_DATA },
	  REC(DO_CLOSE, TW_END_ABORT, WHY_UNREAD, N) },
	{ "defer, nothing unread: hand to the closer",
	  { .who = WHO_CLOSE, .mode = D, .before = EST }, NOREC(DO_DEFER, WHY_NONE, D) },
	{ "defer, the peer closed already: nothing to defer",
	  { .who = WHO_CLOSE, .mode = D, .before = CW, .unread = UNREAD_EOF },
	  REC(DO_CLOSE, TW_END_PASSIVE, WHY_NONE, D) },
	{ "defer, no closer: a normal close, why no_closer",
	  { .who = WHO_CLOSE, .mode = D, .before = EST, .closer_why = WHY_NO_CLOSER },
	  NOREC(DO_CLOSE_ASK, WHY_NO_CLOSER, N) },
	{ "defer, over the cap, fallback abort, all acknowledged: reset",
	  { .who = WHO_CLOSE, .mode = D, .fallback = FB_A, .before = EST, .outq_empty = true,
	    .closer_why = WHY_CAP }, REC(DO_RESET, TW_END_ABORT, WHY_CAP, A) },
	{ "defer, over the cap, fallback abort, data unacknowledged: a normal close",
	  { .who = WHO_CLOSE, .mode = D, .fallback = FB_A, .before = EST, .closer_why = WHY_CAP },
	  NOREC(DO_CLOSE_ASK, WHY_CAP, N) },
	{ "defer, a peer learned not to close, fallback abort, all acknowledged: reset now",
	  { .who = WHO_CLOSE, .mode = D, .fallback = FB_A, .before = EST, .outq_empty = true,
	    .learned = true }, REC(DO_RESET, TW_END_ABORT, WHY_LEARNED, A) },
	{ "defer, a peer learned not to close, fallback normal: close now, why learned",
	  { .who = WHO_CLOSE, .mode = D, .before = EST, .learned = true },
	  NOREC(DO_CLOSE_ASK, WHY_LEARNED, N) },
	{ "defer, a peer learned not to close, its FIN in after all: passive",
	  { .who = WHO_CLOSE, .mode = D, .before = CW, .unread = UNREAD_EOF, .learned = true },
	  REC(DO_CLOSE, TW_END_PASSIVE, WHY_NONE, D) },
	{ "defer, over the cap and learned: the cap is the why",
	  { .who = WHO_CLOSE, .mode = D, .before = EST, .learned = true,
	    .closer_why = WHY_CAP }, NOREC(DO_CLOSE_ASK, WHY_CAP, N) },
	{ "abort, all acknowledged: reset now",
	  { .who = WHO_CLOSE, .mode = A, .before = EST, .outq_empty = true },
	  REC(DO_RESET, TW_END_ABORT, WHY_NONE, A) },
	{ "abort, data unacknowledged: the closer waits for the acks",
	  { .who = WHO_CLOSE, .mode = A, .before = EST }, NOREC(DO_WAIT_ACKED, WHY_NONE, A) },
	{ "abort, data unacknowledged, no fd for the closer: a normal close",
	  { .who = WHO_CLOSE, .mode = A, .before = EST, .closer_why = WHY_NO_FD },
	  NOREC(DO_CLOSE_ASK, WHY_NO_FD, N) },
	{ "abort, the peer closed already: a normal, passive close",
	  { .who = WHO_CLOSE, .mode = A, .before = CW, .unread = UNREAD_EOF },
	  REC(DO_CLOSE, TW_END_PASSIVE, WHY_NONE, A) },
	{ "the program's SO_LINGER {1,0} under defer: its reset, why linger",
	  { .who = WHO_CLOSE, .mode = D, .before = EST, .linger0 = true },
	  REC(DO_CLOSE, TW_END_ABORT, WHY_LINGER, N) },
	{ "the program's SO_LINGER {1,0} under normal: its reset",
	  { .who = WHO_CLOSE, .mode = N, .before = EST, .linger0 = true },
	  REC(DO_CLOSE, TW_END_ABORT, WHY_NONE, N) },
	{ "shared under defer: nothing changed, why shared; ask after",
	  { .who = WHO_CLOSE, .mode = D, .before = EST, .shared = true },
	  NOREC(DO_CLOSE_ASK, WHY_SHARED, N) },
	{ "shared, data unread: the close may not be the last, ask after",
	  { .who = WHO_CLOSE, .mode = N, .before = EST, .unread = UNREAD_DATA, .shared = true },
	  NOREC(DO_CLOSE_ASK, WHY_NONE, N) },
	{ "the program shut down first: active, whoever else holds it",
	  { .who = WHO_CLOSE, .mode = D, .before = TW_FIN_WAIT2, .shut_wr = true,
	    .at_shutdown = EST, .shared = true }, REC(DO_CLOSE, TW_END_ACTIVE, WHY_SHARED, N) },
	{ "the program shut down after the peer's FIN: passive",
	  { .who = WHO_CLOSE, .mode = N, .before = TW_LAST_ACK, .shut_wr = true,
	    .at_shutdown = CW }, REC(DO_CLOSE, TW_END_PASSIVE, WHY_NONE, N) },
	{ "a shutdown that gave up a connect: reset",
	  { .who = WHO_CLOSE, .mode = N, .before = TW_CLOSE, .shut_wr = true,
	    .at_shutdown = TW_SYN_SENT }, REC(DO_CLOSE, TW_END_RESET, WHY_NONE, N) },
	{ "a FIN another holder sent: that holder records",
	  { .who = WHO_CLOSE, .mode = N, .before = TW_FIN_WAIT2, .shared = true },
	  NOREC(DO_CLOSE, WHY_NONE, N) },
	{ "a FIN sent by a shutdown the library did not see: active",
	  { .who = WHO_CLOSE, .mode = N, .before = TW_FIN_WAIT1 },
	  REC(DO_CLOSE, TW_END_ACTIVE, WHY_NONE, N) },
	{ "over already (CLOSE): ask the kernel for a TIME_WAIT",
	  { .who = WHO_CLOSE, .mode = D, .before = TW_CLOSE, .unread = UNREAD_ERROR },
	  NOREC(DO_CLOSE_ASK, WHY_NONE, D) },
	{ "a connect given up in SYN_SENT: reset",
	  { .who = WHO_CLOSE, .mode = D, .before = TW_SYN_SENT },
	  REC(DO_CLOSE, TW_END_RESET, WHY_NONE, D) },
	{ "the program's SHUT_RD under defer: nothing to wait for, close and ask after",
	  { .who = WHO_CLOSE, .mode = D, .before = EST, .unread = UNREAD_EOF },
	  NOREC(DO_CLOSE_ASK, WHY_NONE, D) },

	/* after the close, what the kernel shows */
	{ "after: FIN_WAIT1, this side was first",
	  { .who = WHO_CLOSE, .before = EST, .after = AFTER_ORPHAN,
	    .after_state = TW_FIN_WAIT1 }, AFTER(TW_END_ACTIVE) },
	{ "after: FIN_WAIT2", { .who = WHO_CLOSE, .before = EST, .after = AFTER_ORPHAN,
				.after_state = TW_FIN_WAIT2 }, AFTER(TW_END_ACTIVE) },
	{ "after: CLOSING, a simultaneous close", { .who = WHO_CLOSE, .before = EST,
						     .after = AFTER_ORPHAN,
						     .after_state = TW_CLOSING },
	  AFTER(TW_END_ACTIVE) },
	{ "after: TIME_WAIT already", { .who = WHO_CLOSE, .before = EST, .after = AFTER_ORPHAN,
					.after_state = TW_TIME_WAIT }, AFTER(TW_END_ACTIVE) },
	{ "after: LAST_ACK, the peer's FIN crossed ours",
	  { .who = WHO_CLOSE, .before = EST, .after = AFTER_ORPHAN, .after_state = TW_LAST_ACK },
	  AFTER_CROSSED },
	{ "after: gone, the crossing FINs done already",
	  { .who = WHO_CLOSE, .before = EST, .after = AFTER_GONE }, AFTER_CROSSED },
	{ "after: gone, it was over before (CLOSE): reset",
	  { .who = WHO_CLOSE, .before = TW_CLOSE, .after = AFTER_GONE }, AFTER(TW_END_RESET) },
	{ "after: over before (CLOSE), its 4-tuple held by a new connection: reset",
	  { .who = WHO_CLOSE, .before = TW_CLOSE, .after = AFTER_HELD }, AFTER(TW_END_RESET) },
	{ "after: over before (CLOSE), its 4-tuple a new connection's, orphaned: reset",
	  { .who = WHO_CLOSE, .before = TW_CLOSE, .after = AFTER_ORPHAN,
	    .after_state = TW_FIN_WAIT1 }, AFTER(TW_END_RESET) },
	{ "after: still held with an inode: another holder, no record",
	  { .who = WHO_CLOSE, .before = EST, .shared = true, .after = AFTER_HELD }, SILENT },
	{ "after: shared and over by another holder's FIN: no record",
	  { .who = WHO_CLOSE, .before = TW_CLOSE, .shared = true, .after = AFTER_ORPHAN,
	    .after_state = TW_TIME_WAIT }, SILENT },
	{ "after: the question failed: the state before decides",
	  { .who = WHO_CLOSE, .before = EST, .after = AFTER_FAILED }, AFTER(TW_END_ACTIVE) },
	{ "after: the program's reset, shared, released",
	  { .who = WHO_CLOSE, .before = EST, .linger0 = true, .shared = true,
	    .after = AFTER_GONE }, AFTER(TW_END_ABORT) },

	/* before TCP_INFO: the peek and what is known of the connection */
	{ "one thread, plain close, up, nothing unread: the FIN by shutdown first",
	  { LEAN }, NOREC(DO_SHUT, WHY_NONE, N) },
	{ "the same, logged: by shutdown first too",
	  { LEAN, .kept = KEPT_LINE }, NOREC(DO_SHUT, WHY_NONE, N) },
	{ "the same, several threads: TCP_INFO first, then a question after the close",
	  { LEAN, .single = false }, NOREC(DO_LOOK, WHY_NONE, N) },
	{ "the same, by fclose (it flushes first): look",
	  { LEAN, .plain = false }, NOREC(DO_LOOK, WHY_NONE, N) },
	{ "the same, another process may hold it: look",
	  { LEAN, .shared = true }, NOREC(DO_LOOK, WHY_NONE, N) },
	{ "the same, a connect that may still be under way: look (no shutdown in SYN_SENT)",
	  { LEAN, .up = false }, NOREC(DO_LOOK, WHY_NONE, N) },
	{ "the same, TCP_INFO read ESTABLISHED: by shutdown",
	  { LEAN, .up = false, .before = EST }, NOREC(DO_SHUT, WHY_NONE, N) },
	{ "the same, TCP_INFO read SYN_SENT: given up by the close alone, reset",
	  { LEAN, .up = false, .before = TW_SYN_SENT }, REC(DO_CLOSE, TW_END_RESET, WHY_NONE, N) },
	{ "the same, the program's SO_LINGER {1,0}: look (its reset)",
	  { LEAN, .linger0 = true }, NOREC(DO_LOOK, WHY_NONE, N) },
	{ "the same, the program shut down already: look",
	  { LEAN, .shut_wr = true, .at_shutdown = EST }, NOREC(DO_LOOK, WHY_NONE, N) },
	{ "the same, data unread: look (the kernel's reset)",
	  { LEAN, .unread = UNREAD_DATA }, NOREC(DO_LOOK, WHY_NONE, N) },
	{ "the same under defer: look (SYN_SENT, learned peers, the closer)",
	  { LEAN, .mode = D }, NOREC(DO_LOOK, WHY_NONE, D) },
	{ "nothing keeps its end under normal: the kernel's close, unseen",
	  { LEAN, .kept = KEPT_NONE, .single = false }, NOREC(DO_CLOSE, WHY_NONE, N) },
	{ "nothing keeps its end under defer: look (the policy needs the state)",
	  { LEAN, .kept = KEPT_NONE, .mode = D }, NOREC(DO_LOOK, WHY_NONE, D) },
	{ "counted only, the end of the stream: look (a reset already read shows it too)",
	  { LEAN, .unread = UNREAD_EOF, .single = false }, NOREC(DO_LOOK, WHY_NONE, N) },
	{ "logged, the end of the stream: look (the line needs the state and counts)",
	  { LEAN, .unread = UNREAD_EOF, .kept = KEPT_LINE }, NOREC(DO_LOOK, WHY_NONE, N) },
	{ "TCP_INFO read ESTABLISHED (several threads before): shutdown first",
	  { LEAN, .before = EST }, NOREC(DO_SHUT, WHY_NONE, N) },
	{ "TCP_INFO read SYN_SENT: given up, reset",
	  { LEAN, .before = TW_SYN_SENT }, REC(DO_CLOSE, TW_END_RESET, WHY_NONE, N) },
	{ "defer without a closer, one thread: the normal close by shutdown, why no_closer",
	  { LEAN, .before = EST, .mode = D, .closer_why = WHY_NO_CLOSER },
	  NOREC(DO_SHUT, WHY_NO_CLOSER, N) },
	{ "at exit, one thread: nothing shut down, the kernel's close sends the FIN",
	  { LEAN, .who = WHO_EXIT, .before = EST }, REC(DO_CLOSE, TW_END_ACTIVE, WHY_NONE, N) },

	/* after the library's shutdown sent the program's FIN */
	{ "fin: FIN_WAIT1, this side first", { LEAN, .fin = TW_FIN_WAIT1 },
	  REC_AS(DO_CLOSE, TW_END_ACTIVE, N, EST) },
	{ "fin: FIN_WAIT2, acknowledged already", { LEAN, .fin = TW_FIN_WAIT2 },
	  REC_AS(DO_CLOSE, TW_END_ACTIVE, N, EST) },
	{ "fin: CLOSING, the peer's FIN crossed it: both hold TIME_WAIT",
	  { LEAN, .fin = TW_CLOSING }, REC_AS(DO_CLOSE, TW_END_ACTIVE, N, EST) },
	{ "fin: LAST_ACK, the peer's FIN was in first: passive",
	  { LEAN, .fin = TW_LAST_ACK }, REC_AS(DO_CLOSE, TW_END_PASSIVE, N, CW) },
	{ "fin: CLOSE, nothing ever received: a connect given up, reset",
	  { LEAN, .fin = TW_CLOSE, .nothing_in = true },
	  REC_AS(DO_CLOSE, TW_END_RESET, N, TW_SYN_SENT) },
	{ "fin: CLOSE, both FINs done in the instant: close, then ask",
	  { LEAN, .fin = TW_CLOSE }, { DO_CLOSE_ASK, 0, WHY_NONE, N, false, false, EST } },
	{ "fin: no state read: close, then ask",
	  { LEAN, .fin = OBS_UNSEEN }, { DO_CLOSE_ASK, 0, WHY_NONE, N, false, false, EST } },
	{ "fin: the shutdown failed, over already: close, then ask, as CLOSE",
	  { LEAN, .fin_failed = true },
	  { DO_CLOSE_ASK, 0, WHY_NONE, N, false, false, TW_CLOSE } },
	{ "fin: why no_closer kept", { LEAN, .before = EST, .mode = D,
				       .closer_why = WHY_NO_CLOSER, .fin = TW_FIN_WAIT2 },
	  { DO_CLOSE, TW_END_ACTIVE, WHY_NO_CLOSER, N, true, false, EST } },
	{ "fin CLOSE, asked after: its TIME_WAIT, this side first",
	  { LEAN, .fin = TW_CLOSE, .after = AFTER_ORPHAN, .after_state = TW_TIME_WAIT },
	  AFTER(TW_END_ACTIVE) },
	{ "fin CLOSE, asked after: gone, the peer's FIN first (LAST_ACK, acknowledged)",
	  { LEAN, .fin = TW_CLOSE, .after = AFTER_GONE }, AFTER_CROSSED },
	{ "fin failed, asked after: gone, reset",
	  { LEAN, .fin_failed = true, .after = AFTER_GONE }, AFTER(TW_END_RESET) },

	/* the closer */
	{ "closer: the peer's FIN", { .who = WHO_EVENT, .mode = D, .unread = UNREAD_EOF },
	  REC(DO_CLOSE, TW_END_PASSIVE, WHY_NONE, D) },
	{ "closer: data after the close: reset at once",
	  { .who = WHO_EVENT, .mode = D, .unread = UNREAD_DATA },
	  REC(DO_RESET, TW_END_ABORT, WHY_DATA_AFTER_CLOSE, D) },
	{ "closer: data while waiting for the acks: reset at once",
	  { .who = WHO_EVENT, .mode = A, .unread = UNREAD_DATA },
	  REC(DO_RESET, TW_END_ABORT, WHY_DATA_AFTER_CLOSE, A) },
	{ "closer: the peer's reset", { .who = WHO_EVENT, .mode = D, .unread = UNREAD_ERROR },
	  REC(DO_CLOSE, TW_END_RESET, WHY_NONE, D) },
	{ "closer: woken for nothing", { .who = WHO_EVENT, .mode = D, .unread = UNREAD_NONE },
	  NOREC(DO_KEEP, WHY_NONE, D) },
	{ "closer: defer, before its deadline", { .who = WHO_DEADLINE, .mode = D },
	  NOREC(DO_KEEP, WHY_NONE, D) },
	{ "closer: defer_ms passed, fallback normal: close, ask after",
	  { .who = WHO_DEADLINE, .mode = D, .final = true },
	  LATE(DO_CLOSE_ASK, TW_END_ACTIVE, WHY_NONE, D) },
	{ "closer: defer_ms passed, fallback abort, all acknowledged: reset",
	  { .who = WHO_DEADLINE, .mode = D, .fallback = FB_A, .final = true, .outq_empty = true },
	  LATE(DO_RESET, TW_END_ABORT, WHY_NONE, D) },
	{ "closer: defer_ms passed, fallback abort, data unacknowledged: close, why unacked",
	  { .who = WHO_DEADLINE, .mode = D, .fallback = FB_A, .final = true },
	  LATE(DO_CLOSE_ASK, TW_END_ACTIVE, WHY_UNACKED, D) },
	{ "closer: abort, all acknowledged: reset",
	  { .who = WHO_DEADLINE, .mode = A, .outq_empty = true },
	  REC(DO_RESET, TW_END_ABORT, WHY_NONE, A) },
	{ "closer: abort, not yet acknowledged: wait on",
	  { .who = WHO_DEADLINE, .mode = A }, NOREC(DO_KEEP, WHY_NONE, A) },
	{ "closer: abort, never acknowledged within defer_ms: close, why unacked",
	  { .who = WHO_DEADLINE, .mode = A, .final = true },
	  LATE(DO_CLOSE_ASK, TW_END_ACTIVE, WHY_UNACKED, A) },
	{ "holder: the peer's FIN", { .who = WHO_EVENT, .mode = D, .held = true,
					      .unread = UNREAD_EOF },
	  REC(DO_CLOSE, TW_END_PASSIVE, WHY_NONE, D) },
	{ "holder: data: the last close (the program's or its own) resets it",
	  { .who = WHO_EVENT, .mode = D, .held = true, .unread = UNREAD_DATA },
	  REC(DO_CLOSE, TW_END_ABORT, WHY_DATA_AFTER_CLOSE, D) },
	{ "holder: defer_ms or exit_wait_ms passed: the last close sends the FIN",
	  { .who = WHO_DEADLINE, .mode = D, .held = true, .final = true },
	  LATE(DO_CLOSE, TW_END_ACTIVE, WHY_NONE, D) },

	/* a connect that found no local port free */
	{ "connect, EADDRNOTAVAIL, deferred connections held: wait for one, connect again",
	  { .who = WHO_CONNECT, .mode = D, .waiting = true }, NOREC(DO_RETRY, WHY_NONE, D) },
	{ "connect, EADDRNOTAVAIL, nothing held: the program's error",
	  { .who = WHO_CONNECT, .mode = D }, NOREC(DO_NOTHING, WHY_NONE, D) },

	/* at exit, the program still holding its fds */
	{ "exit, normal: the kernel's close sends the FIN first",
	  { .who = WHO_EXIT, .mode = N, .before = EST },
	  REC(DO_CLOSE, TW_END_ACTIVE, WHY_NONE, N) },
	{ "exit, the peer's FIN in: passive", { .who = WHO_EXIT, .mode = D, .before = CW,
						.unread = UNREAD_EOF },
	  REC(DO_CLOSE, TW_END_PASSIVE, WHY_NONE, D) },
	{ "exit, data unread: the kernel's close resets",
	  { .who = WHO_EXIT, .mode = D, .before = EST, .unread = UNREAD_DATA },
	  REC(DO_CLOSE, TW_END_ABORT, WHY_UNREAD, N) },
	{ "exit, defer: the holder takes a copy, the process does not wait",
	  { .who = WHO_EXIT, .mode = D, .before = EST }, NOREC(DO_HOLD, WHY_NONE, D) },
	{ "exit, abort, data unacknowledged: the holder waits for the acks",
	  { .who = WHO_EXIT, .mode = A, .before = EST }, NOREC(DO_HOLD, WHY_NONE, A) },
	{ "exit, defer, a peer learned not to close: the kernel's FIN, why learned",
	  { .who = WHO_EXIT, .mode = D, .before = EST, .learned = true },
	  REC(DO_CLOSE, TW_END_ACTIVE, WHY_LEARNED, N) },
	{ "exit, defer, no fd for the holder: the kernel's FIN, why no_fd",
	  { .who = WHO_EXIT, .mode = D, .before = EST, .closer_why = WHY_NO_FD },
	  REC(DO_CLOSE, TW_END_ACTIVE, WHY_NO_FD, N) },
	{ "exit, abort, all acknowledged: SO_LINGER {1,0} for the kernel's close",
	  { .who = WHO_EXIT, .mode = A, .before = EST, .outq_empty = true },
	  REC(DO_RESET, TW_END_ABORT, WHY_NONE, A) },
	{ "exit, over already: nothing to ask any more",
	  { .who = WHO_EXIT, .mode = N, .before = TW_CLOSE },
	  REC(DO_CLOSE, TW_END_RESET, WHY_NONE, N) },
};

Test(decide, every_row_of_the_table)
{
	for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
		const struct row *r = &rows[i];
		struct verdict v = decide(&r->o);

		cr_expect_eq(v.act, r->want.act, "%s: act %d, want %d", r->name, v.act,
			     r->want.act);
		cr_expect_eq(v.record, r->want.record, "%s: record %d, want %d", r->name,
			     v.record, r->want.record);
		if (r->want.record)
			cr_expect_eq(v.end, r->want.end, "%s: end %s, want %s", r->name,
				     record_end_name((enum tw_end)v.end),
				     record_end_name((enum tw_end)r->want.end));
		if (r->o.after == AFTER_NOT_ASKED) {
			cr_expect_eq(v.why, r->want.why, "%s: why %s, want %s", r->name,
				     decide_why_name(v.why) ? decide_why_name(v.why) : "-",
				     decide_why_name(r->want.why) ?
				     decide_why_name(r->want.why) : "-");
			if (r->want.act != DO_NOTHING)
				cr_expect_eq(v.mode, r->want.mode, "%s: mode %d, want %d",
					     r->name, v.mode, r->want.mode);
			cr_expect_eq(v.timeout, r->want.timeout, "%s: timeout", r->name);
		}
		cr_expect_eq(v.state, r->want.state, "%s: state %d, want %d", r->name, v.state,
			     r->want.state);
	}
}

Test(decide, why_names_are_the_spec_s)
{
	cr_expect_null(decide_why_name(WHY_NONE));
	cr_expect_str_eq(decide_why_name(WHY_UNREAD), "unread");
	cr_expect_str_eq(decide_why_name(WHY_DATA_AFTER_CLOSE), "data_after_close");
	cr_expect_str_eq(decide_why_name(WHY_UNACKED), "unacked");
	cr_expect_str_eq(decide_why_name(WHY_LEARNED), "learned");
	cr_expect_null(decide_why_name(200));
}
