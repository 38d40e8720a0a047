// SPDX-License-Identifier: MIT
/*
 * The rules of the close path, as one pure function (see include/decide.h).
 * What the kernel would do without the library is the model: a close with
 * data unread resets, data arriving at a closed socket resets, a close with
 * nothing unread sends a FIN. The policy only changes when that FIN goes.
 */
#include "config.h"
#include "decide.h"
#include "record.h"

static struct verdict v_of(uint8_t act, uint8_t end, uint8_t why, uint8_t mode, bool record)
{
	struct verdict v = { .act = act, .end = end, .why = why, .mode = mode, .record = record };

	return v;
}

/* A state in which the socket still has a FIN to send or to wait for. */
static bool open_state(int s)
{
	return s == TW_ESTABLISHED || s == TW_CLOSE_WAIT || s == TW_FIN_WAIT1 ||
	       s == TW_FIN_WAIT2 || s == TW_CLOSING || s == TW_LAST_ACK;
}

/*
 * The state as the program let go. After the library's shutdown, what that
 * shutdown showed of it: over already when it failed, CLOSE_WAIT when it
 * produced LAST_ACK, else ESTABLISHED (it is made for no other state);
 * else what TCP_INFO read, or ESTABLISHED where it was not read
 * (first_look() skips it only then).
 */
static uint8_t seen_before(const struct observed *o)
{
	if (o->fin_failed)
		return TW_CLOSE;
	if (o->fin)
		return o->fin == TW_LAST_ACK ? TW_CLOSE_WAIT : TW_ESTABLISHED;
	return o->before == OBS_UNSEEN ? TW_ESTABLISHED : o->before;
}

/*
 * After a close that sent the program's FIN (or found the connection over):
 * what the kernel shows of it. FIN_WAIT, CLOSING or TIME_WAIT: this side was
 * first. LAST_ACK: the peer's FIN came first. Still held: another process
 * keeps it, nothing ended here. Gone: it ended in the instant since, which a
 * FIN of ours sent first cannot do (it would leave TIME_WAIT): passive,
 * unless it was over (CLOSE) or never came up before the close.
 */
static struct verdict after_close(const struct observed *o)
{
	uint8_t end, after = o->after, before = seen_before(o);
	struct verdict v;

	/*
	 * A socket over already (CLOSE) had left the kernel's tables, and
	 * its 4-tuple was free for a new connection (another thread's
	 * connect may take it at once): only a TIME_WAIT entry can be its own.
	 */
	if (before == TW_CLOSE && (after == AFTER_HELD ||
				      (after == AFTER_ORPHAN && o->after_state != TW_TIME_WAIT)))
		after = AFTER_GONE;
	switch (after) {
	case AFTER_HELD:
		return v_of(DO_NOTHING, 0, WHY_NONE, o->mode, false);
	case AFTER_ORPHAN:
		switch (o->after_state) {
		case TW_FIN_WAIT1:
		case TW_FIN_WAIT2:
		case TW_CLOSING:
		case TW_TIME_WAIT:
			end = before == TW_CLOSE_WAIT ? TW_END_PASSIVE : TW_END_ACTIVE;
			break;
		case TW_LAST_ACK:
			end = TW_END_PASSIVE;
			break;
		case TW_ESTABLISHED:
		case TW_CLOSE_WAIT:
			/* no inode but not closed: a holder in the middle of its close */
			return v_of(DO_NOTHING, 0, WHY_NONE, o->mode, false);
		default:
			end = before == TW_CLOSE_WAIT ? TW_END_PASSIVE : TW_END_RESET;
			break;
		}
		break;
	case AFTER_GONE:
		if (o->linger0)
			end = TW_END_ABORT;
		else if (before == TW_ESTABLISHED || before == TW_CLOSE_WAIT ||
			 before == TW_LAST_ACK)
			end = TW_END_PASSIVE;
		else
			end = TW_END_RESET;
		break;
	default:	/* AFTER_FAILED: what the state before says */
		end = o->linger0 ? TW_END_ABORT : (uint8_t)record_classify(before);
		break;
	}
	/* over before this close, by a FIN of this side: another holder's shutdown */
	if (o->shared && before == TW_CLOSE && end == TW_END_ACTIVE)
		return v_of(DO_NOTHING, 0, WHY_NONE, o->mode, false);
	v = v_of(DO_NOTHING, end, WHY_NONE, o->mode, true);
	/* the peer's FIN crossed ours: the close met it as CLOSE_WAIT */
	if (end == TW_END_PASSIVE && before == TW_ESTABLISHED && !o->shut_wr)
		v.state = TW_CLOSE_WAIT;
	return v;
}

/*
 * The closer's question about a deferred socket: the peer's FIN (passive),
 * its data (reset at once, as the kernel's closed socket would answer it),
 * its reset, or the deadline (the fallback, or for `abort` the reset once
 * everything is acknowledged; a reset that would lose data is a close).
 */
static struct verdict closer_rules(const struct observed *o)
{
	struct verdict v = v_of(DO_KEEP, 0, WHY_NONE, o->mode, false);

	if (o->unread == UNREAD_EOF)
		return v_of(DO_CLOSE, TW_END_PASSIVE, WHY_NONE, o->mode, true);
	if (o->unread == UNREAD_ERROR)
		return v_of(DO_CLOSE, TW_END_RESET, WHY_NONE, o->mode, true);
	if (o->unread == UNREAD_DATA) {
		/* exiting: the program still holds it, and the kernel's close resets */
		if (o->held)
			return v_of(DO_CLOSE, TW_END_ABORT, WHY_DATA_AFTER_CLOSE, o->mode, true);
		return v_of(DO_RESET, TW_END_ABORT, WHY_DATA_AFTER_CLOSE, o->mode, true);
	}
	if (o->who == WHO_EVENT)
		return v;
	if (o->mode == TW_CLOSE_ABORT && o->outq_empty)
		return v_of(DO_RESET, TW_END_ABORT, WHY_NONE, o->mode, true);
	if (!o->final)
		return v;
	v.timeout = true;
	v.record = true;
	if (o->mode == TW_CLOSE_DEFER && o->fallback == TW_FALLBACK_ABORT && o->outq_empty) {
		v.act = DO_RESET;
		v.end = TW_END_ABORT;
		return v;
	}
	if (o->mode == TW_CLOSE_ABORT || o->fallback == TW_FALLBACK_ABORT)
		v.why = WHY_UNACKED;
	/* held at exit: our copy goes, the kernel's close at the end sends the FIN */
	v.act = o->held ? DO_CLOSE : DO_CLOSE_ASK;
	v.end = TW_END_ACTIVE;
	return v;
}

/*
 * May the program's FIN go by shutdown(SHUT_WR) just before its close, so
 * that the state right after it says who was first, with no question to
 * sock_diag after the close (DO_SHUT)? Only where the peer cannot tell:
 *
 * - With nothing unread, close() of an ESTABLISHED socket sends a FIN after
 *   what is queued (tcp_close(): tcp_close_state(), tcp_send_fin()), and
 *   shutdown(SHUT_WR) sends that very FIN (tcp_shutdown(): the same two
 *   calls); the close right after finds it sent (FIN_WAIT1 stays FIN_WAIT1)
 *   and sends nothing more. A peer's FIN arriving in between meets ours as
 *   it would have met the close a moment later: a simultaneous close.
 *   Data arriving in between is reset by the close (data unread), as the
 *   orphan left by a plain close resets data that arrives after it
 *   (TCPAbortOnData); the kernel may acknowledge that data first. A close
 *   that lingers (SO_LINGER with a time) waits for the same states. Only a
 *   connection known to be ESTABLISHED (connect() returned 0 without
 *   TCP_FASTOPEN_CONNECT in the process, accept(), or
 *   TCP_INFO said so): in SYN_SENT the shutdown gives the connect up through
 *   tcp_disconnect(), which reports an error to the socket and so signals an
 *   O_ASYNC owner (SIGIO), where the close does not.
 * - An urgent byte left unread (SO_OOBINLINE off) is skipped by the peek
 *   but counted by tcp_close(), which resets: the close goes alone then
 *   (conn.c checks SIOCATMARK before the shutdown).
 * - Nothing else may use the socket between the two calls: one thread, no
 *   child sharing this memory (single; only a signal handler that writes
 *   to the very fd its program is closing could still tell), no other
 *   holder the library knows of (shared: forked or spawned children, sent
 *   away), and a call that lets the fd go whatever happens (plain:
 *   close(), close_range(), closefrom(), the close before an exec). Not
 *   fclose(), which flushes its buffer first, nor dup2()/dup3(), which may
 *   fail and leave the program its fd. No reset asked for (linger0), no
 *   shutdown of the program's own (shut_wr), nothing unread (peeked: kept).
 *
 * A holder the library cannot see (an io_uring request in flight or a
 * registered file, a copy taken with pidfd_getfd(), one sent with
 * SCM_RIGHTS through a call the library does not wrap) would see the
 * difference: the close alone leaves the connection open while that holder
 * has it, the shutdown ends the stream at once. README, Limits.
 */
static bool fin_by_shutdown(const struct observed *o)
{
	return o->who == WHO_CLOSE && o->single && o->plain && !o->shared && !o->linger0 &&
	       !o->shut_wr && o->unread == UNREAD_NONE && o->kept != KEPT_NONE &&
	       (o->before == TW_ESTABLISHED || (o->before == OBS_UNSEEN && o->up));
}

/*
 * The program's close, before TCP_INFO is read: where the peek and what is
 * known of the connection are enough, no TCP_INFO before the close. Nothing
 * kept under `normal`: the kernel's close, as it comes. Nothing unread and
 * the end of the stream not reached on a connection known to have come up:
 * ESTABLISHED, and under `normal` the FIN may go by shutdown. Otherwise:
 * look. The end of the stream is looked at even when only counted: a reset
 * the program has read already shows it too, as does a connect that failed.
 */
static struct verdict first_look(const struct observed *o)
{
	struct verdict v = v_of(DO_LOOK, 0, WHY_NONE, o->mode, false);

	if (o->kept == KEPT_NONE && o->mode == TW_CLOSE_NORMAL)
		return v_of(DO_CLOSE, 0, WHY_NONE, o->mode, false);
	if (o->mode == TW_CLOSE_NORMAL && fin_by_shutdown(o))
		return v_of(DO_SHUT, 0, WHY_NONE, o->mode, false);
	return v;
}

/*
 * After the library's shutdown sent the program's FIN (v: the verdict that
 * asked for it): FIN_WAIT1, FIN_WAIT2 or CLOSING, this side's FIN was first
 * (a simultaneous close holds TIME_WAIT on both sides); LAST_ACK, the
 * peer's was already in. CLOSE with nothing ever received: the connect
 * was still in SYN_SENT, and the shutdown gave it up. CLOSE otherwise
 * (both FINs done in the instant, which loopback allows, or a reset) or
 * anything else: close, and ask sock_diag as before. A shutdown that failed
 * found it over already: a close that meets CLOSE.
 */
static struct verdict after_shut(const struct observed *o, struct verdict v)
{
	if (o->fin_failed) {
		v.state = TW_CLOSE;
		return v;
	}
	v.act = DO_CLOSE;
	v.record = true;
	switch (o->fin) {
	case TW_FIN_WAIT1:
	case TW_FIN_WAIT2:
	case TW_CLOSING:
		v.end = TW_END_ACTIVE;
		v.state = TW_ESTABLISHED;
		return v;
	case TW_LAST_ACK:
		v.end = TW_END_PASSIVE;
		v.state = TW_CLOSE_WAIT;
		return v;
	case TW_CLOSE:
		if (o->nothing_in) {
			v.end = TW_END_RESET;
			v.state = TW_SYN_SENT;
			return v;
		}
		break;
	default:
		break;
	}
	v.act = DO_CLOSE_ASK;
	v.end = TW_END_ACTIVE;
	v.record = false;
	v.state = TW_ESTABLISHED;
	return v;
}

/* The program's close or the end of the process, with the state before known. */
static struct verdict close_rules(const struct observed *o, uint8_t before)
{
	uint8_t mode = o->mode, why = WHY_NONE, end;
	bool exiting = o->who == WHO_EXIT;
	struct verdict v;

	/* another holder may still use it: change nothing under its feet */
	if (o->shared && mode != TW_CLOSE_NORMAL) {
		mode = TW_CLOSE_NORMAL;
		why = WHY_SHARED;
	}
	if (o->linger0) {
		/* the program asked for a reset itself */
		if (mode != TW_CLOSE_NORMAL)
			why = WHY_LINGER;
		if (o->shared && !exiting)
			return v_of(DO_CLOSE_ASK, TW_END_ABORT, why, TW_CLOSE_NORMAL, false);
		return v_of(DO_CLOSE, TW_END_ABORT, why, TW_CLOSE_NORMAL, true);
	}
	if (o->unread == UNREAD_DATA && open_state(before) && !o->shared) {
		/* the kernel resets at once; so does every policy (tcp_close()) */
		if (mode != TW_CLOSE_NORMAL)
			why = WHY_UNREAD;
		return v_of(DO_CLOSE, TW_END_ABORT, why, TW_CLOSE_NORMAL, true);
	}
	if (o->shut_wr) {
		/*
		 * The program's own FIN decided the end, whoever else holds
		 * the socket: the process that shut down records it.
		 */
		end = (uint8_t)record_classify(o->at_shutdown);
		return v_of(DO_CLOSE, end, why, mode, true);
	}
	switch (before) {
	case TW_ESTABLISHED:
		break;
	case TW_CLOSE_WAIT:
		/* the peer was first: nothing left to defer or to reset for */
		if (o->shared && !exiting)
			return v_of(DO_CLOSE_ASK, TW_END_PASSIVE, why, mode, false);
		return v_of(DO_CLOSE, TW_END_PASSIVE, why, mode, true);
	case TW_FIN_WAIT1:
	case TW_FIN_WAIT2:
	case TW_CLOSING:
	case TW_LAST_ACK:
		/* a FIN went out though this process did not shut down: another holder's */
		if (o->shared)
			return v_of(exiting ? DO_NOTHING : DO_CLOSE, 0, why, mode, false);
		return v_of(DO_CLOSE, (uint8_t)record_classify(before), why, mode, true);
	case TW_CLOSE:
		/* over already: only the kernel's table shows whether a TIME_WAIT is ours */
		if (exiting)
			return v_of(DO_CLOSE, TW_END_RESET, why, mode, true);
		return v_of(DO_CLOSE_ASK, TW_END_RESET, why, mode, false);
	default:
		/* SYN_SENT, SYN_RECV: it never came up; a close gives it up */
		if (o->shared && !exiting)
			return v_of(DO_CLOSE_ASK, TW_END_RESET, why, mode, false);
		return v_of(DO_CLOSE, TW_END_RESET, why, mode, true);
	}
	/* ESTABLISHED, nothing unread, no reset asked for */
	if (mode == TW_CLOSE_DEFER && o->unread == UNREAD_NONE) {
		/* at the end of the process the holder waits, not the program */
		if (!o->closer_why && !o->learned)
			return v_of(exiting ? DO_HOLD : DO_DEFER, 0, WHY_NONE, mode, false);
		/* a peer that lately let defer_ms pass: its fallback at once */
		why = o->closer_why ? o->closer_why : WHY_LEARNED;
		if (o->fallback == TW_FALLBACK_ABORT && o->outq_empty)
			return v_of(DO_RESET, TW_END_ABORT, why, TW_CLOSE_ABORT, true);
		mode = TW_CLOSE_NORMAL;
	} else if (mode == TW_CLOSE_ABORT && o->unread == UNREAD_NONE) {
		if (o->outq_empty)
			return v_of(DO_RESET, TW_END_ABORT, WHY_NONE, mode, true);
		if (!o->closer_why)
			return v_of(exiting ? DO_HOLD : DO_WAIT_ACKED, 0, WHY_NONE, mode, false);
		why = o->closer_why;
		mode = TW_CLOSE_NORMAL;
	}
	/* at exit the kernel's close sends the FIN, first unless the peer's crosses it */
	if (exiting)
		return v_of(DO_CLOSE, TW_END_ACTIVE, why, mode, true);
	/* a normal close sends the FIN: by shutdown first where that is invisible */
	v = v_of(DO_CLOSE_ASK, TW_END_ACTIVE, why, mode, false);
	if (mode == TW_CLOSE_NORMAL && fin_by_shutdown(o))
		v.act = DO_SHUT;
	return v;
}

struct verdict decide(const struct observed *o)
{
	bool shut = o->fin || o->fin_failed;

	if (o->who == WHO_CONNECT) {
		/* a port the library holds may come free: the program never fails for it */
		return v_of(o->waiting ? DO_RETRY : DO_NOTHING, 0, WHY_NONE, o->mode, false);
	}
	if (o->who == WHO_EVENT || o->who == WHO_DEADLINE) {
		if (o->after != AFTER_NOT_ASKED)
			return after_close(o);
		return closer_rules(o);
	}
	if (!o->before)
		return v_of(DO_NOTHING, 0, WHY_NONE, o->mode, false);
	if (o->after != AFTER_NOT_ASKED)
		return after_close(o);
	if (o->before == OBS_UNSEEN && !shut)
		return first_look(o);
	if (shut)
		return after_shut(o, close_rules(o, seen_before(o)));
	return close_rules(o, o->before);
}

const char *decide_why_name(uint8_t why)
{
	static const char *const names[] = {
		NULL, "shared", "no_fd", "cap", "no_closer", "linger", "unread",
		"data_after_close", "learned", "unacked",
	};

	return why < sizeof(names) / sizeof(names[0]) ? names[why] : NULL;
}
