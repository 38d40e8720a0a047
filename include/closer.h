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
/* at exit: give every deferred connection at most its exit_wait_ms, then wait */
void closer_drain(uint64_t now_ns);
void closer_fork_prepare(void);
void closer_fork_parent(void);
void closer_fork_child(void);
unsigned closer_count(void);

#endif
