/* SPDX-License-Identifier: MIT */
/* The deferred closer: one thread that holds what the program closed until it may end. */
#ifndef TWSHIM_CLOSER_H
#define TWSHIM_CLOSER_H

#include <stdbool.h>
#include <stdint.h>

#include "conn.h"

/* Starts the thread and opens its fds, at the first connection that may defer. */
int closer_start(void);
bool closer_running(void);
/*
 * For a call that needs a single-threaded process: closer_pause() stops the
 * thread (true when it was running), closer_resume() starts it again.
 */
bool closer_pause(void);
void closer_resume(void);
/* hands c (c->libfd open, c->mode set) to the closer; false when it is not running */
bool closer_submit(struct tw_conn *c);
/* the program dup2'd or dup3'd onto one of the library's fds: move it away */
void closer_evict(int fd);
/* at exit or exec: every deferred connection out of the closer, to fn (hold.h) */
void closer_take_all(void (*fn)(struct tw_conn *c));
void closer_fork_prepare(void);
void closer_fork_parent(void);
void closer_fork_child(void);
unsigned closer_count(void);
/* Waits until the closer ends a deferred connection, or until (CLOCK_MONOTONIC ns). */
void closer_wait_end(uint64_t until_ns);

#endif
