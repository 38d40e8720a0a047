/* SPDX-License-Identifier: MIT */
/*
 * Ending a connection the library holds a copy of: what the closer thread
 * and the holder process (hold.h) both do. Async-signal-safe, no allocation.
 */
#ifndef TWSHIM_SETTLE_H
#define TWSHIM_SETTLE_H

#include <stdbool.h>
#include <stdint.h>

#include "conn.h"
#include "decide.h"

/*
 * Looks at c (a peek; at a deadline also SIOCOUTQ) and decides. final: the
 * last deadline has come; err: epoll reported an error or a hang-up, which
 * ends c when the peek shows nothing. Fills o for settle_act().
 */
struct verdict settle_look(struct tw_conn *c, enum obs_who who, bool final, bool err,
			   struct observed *o);
/* settle_look() with what is unread already known (enum obs_unread; -1: peek) */
struct verdict settle_look_as(struct tw_conn *c, enum obs_who who, bool final, bool err,
			      int unread, struct observed *o);
/*
 * Acts on a verdict other than DO_KEEP: a reset or a close of the library's
 * copy, the kernel asked who was first when the close sent the FIN; records,
 * and gives the slot back.
 */
void settle_act(struct tw_conn *c, struct observed *o, struct verdict v);
/* After a deadline that kept c: when to look again (never after fin). */
uint64_t settle_next(struct tw_conn *c, uint64_t now, uint64_t fin);

#endif
