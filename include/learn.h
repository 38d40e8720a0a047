/* SPDX-License-Identifier: MIT */
/*
 * `learn`: which peers do not close within defer_ms, per remote endpoint,
 * shared by the processes of one user. Lock-free, no system call after
 * learn_init(), async-signal-safe.
 */
#ifndef TWSHIM_LEARN_H
#define TWSHIM_LEARN_H

#include <stdbool.h>
#include <stdint.h>

#include "addr.h"

/* Maps the table of this user (or a private one when it cannot); at start-up. */
int learn_init(void);
/*
 * Should a deferred close to remote take its fallback at once? True when
 * its recent deferred connections all let defer_ms pass; false for one
 * close every TW_LEARN_RETRY_S, which waits again so that a changed peer
 * is noticed.
 */
bool learn_skip(const struct tw_addr *remote, uint64_t now_ns);
/* A deferred connection to remote ended: by the peer's FIN (closed) or at defer_ms. */
void learn_note(const struct tw_addr *remote, bool closed, uint64_t now_ns);

#endif
