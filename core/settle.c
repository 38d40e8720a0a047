// SPDX-License-Identifier: MIT
/*
 * Ending a connection the library holds a copy of (include/settle.h): the
 * closer thread while the program runs, the holder process after it exited
 * or exec'd. It never reads the peer's data: a peek tells the peer's FIN
 * from its data, and data is answered with a reset at once, as the kernel's
 * closed socket would answer it.
 */
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "diag.h"
#include "learn.h"
#include "observe.h"
#include "record.h"
#include "settle.h"

#define ABORT_POLL_MAX	6	/* abort polls SIOCOUTQ after 1, 2, 4 ... 64 ms */

struct verdict settle_look(struct tw_conn *c, enum obs_who who, bool final, bool err,
			   struct observed *o)
{
	return settle_look_as(c, who, final, err, -1, o);
}

struct verdict settle_look_as(struct tw_conn *c, enum obs_who who, bool final, bool err,
			      int unread, struct observed *o)
{
	struct verdict v;

	*o = (struct observed){
		.who = (uint8_t)who,
		.mode = c->mode,
		.fallback = c->pol.fallback,
		.before = TW_ESTABLISHED,
		.held = (c->flags & CONN_HELD) != 0,
	};
	o->unread = unread >= 0 ? (uint8_t)unread : observe_unread(c->libfd, c->flags & CONN_PEEKOFF);
	/*
	 * Readable, and the peek found nothing: an urgent byte alone at the
	 * head, which the peek skips (SO_OOBINLINE off). Data all the same:
	 * the kernel's close resets for it, and level-triggered epoll would
	 * report it again at once for as long as it is kept. (A caller that
	 * knew what is unread looked for it already.)
	 */
	if (unread < 0 && o->unread == UNREAD_NONE && who == WHO_EVENT &&
	    observe_urgent(c->libfd))
		o->unread = UNREAD_DATA;
	if (who == WHO_DEADLINE && o->unread == UNREAD_NONE) {
		o->final = final;
		o->outq_empty = observe_outq(c->libfd) == 0;
	}
	v = decide(o);
	if (v.act == DO_KEEP && err) {
		o->unread = UNREAD_ERROR;
		v = decide(o);
	}
	return v;
}

void settle_act(struct tw_conn *c, struct observed *o, struct verdict v)
{
	if (v.act == DO_RESET) {
		struct linger l = { .l_onoff = 1, .l_linger = 0 };

		syscall(SYS_setsockopt, c->libfd, SOL_SOCKET, SO_LINGER, &l, sizeof(l));
	}
	if (v.act == DO_CLOSE_ASK)
		conn_local(c, c->libfd);
	libfd_close(c->libfd);	/* its last reference: epoll forgets it too */
	if (v.act == DO_CLOSE_ASK) {
		struct conn_tuple_look look = { .c = c };
		struct verdict a;
		uint64_t found;

		/* the library's copy was the last: held by no one else */
		o->after = observe_after(&c->local, &c->remote, DIAG_ANY_COOKIE,
					 conn_tuple_free_here, &look, &o->after_state, &found);
		a = decide(o);
		v.end = a.end;
	}
	if (v.why)
		c->why = v.why;
	/* what `learn` keeps: the peer's FIN in time, or defer_ms passed without it */
	if (c->mode == TW_CLOSE_DEFER && c->pol.learn && (v.timeout || o->unread == UNREAD_EOF))
		learn_note(&c->remote, !v.timeout, c->t_close_ns);
	if (v.record)
		conn_record(c, (enum tw_end)v.end, v.timeout, clock_mono_ns());
	conn_free(c);
}

/*
 * `abort` resets once the peer has acknowledged all the program wrote
 * (SIOCOUTQ = 0), backing off while it waits; `defer` waits for fin.
 */
uint64_t settle_next(struct tw_conn *c, uint64_t now, uint64_t fin)
{
	uint64_t t = fin;

	if (c->mode == TW_CLOSE_ABORT) {
		t = now + (1000000ull << c->backoff);
		if (c->backoff < ABORT_POLL_MAX)
			c->backoff++;
		if (t > fin)
			t = fin;
	}
	return t;
}
