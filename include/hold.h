/* SPDX-License-Identifier: MIT */
/*
 * The holder: at exit or exec the connections still deferred go to a
 * detached process (`twshim-hold`), so that the program never waits for them.
 */
#ifndef TWSHIM_HOLD_H
#define TWSHIM_HOLD_H

#include <stdbool.h>

#include "conn.h"

/* c (c->libfd open, c->mode set) goes to the holder at the next hold_all() */
void hold_add(struct tw_conn *c);
/*
 * Takes every deferred connection from the closer, and those hold_add()
 * gave, and hands them to a new holder process; returns once it runs. When
 * none can be started, each gets its fallback now. The process goes on
 * (a failed exec) with no deferred connection and its closer running.
 */
void hold_all(void);
/* true in the holder process: its records say `held` */
bool hold_here(void);

#endif
