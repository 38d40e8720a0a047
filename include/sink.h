/* SPDX-License-Identifier: MIT */
/* Where records go. */
#ifndef TWSHIM_SINK_H
#define TWSHIM_SINK_H

#include <stdbool.h>
#include <stddef.h>

struct conf;

int sink_open_all(const struct conf *c);
void sink_write(unsigned sink, const char *buf, size_t len);
void sink_fork_child(void);
/* reads RLIMIT_FSIZE again (the program set it): its writes then take no SIGXFSZ */
void sink_fsize_refresh(void);
/* opens the destinations not open yet (closer start, hand-off to the holder) */
void sink_open_pending(void);
/*
 * The log destinations' fds (each sink's current one and the one a rotation
 * replaced, at most TW_SINK_FDS): into out (max entries); returns how many.
 */
#define TW_SINK_FDS	(2 * TW_SINKS_MAX)
int sink_fds_all(int *out, int max);
/* sink_evict: like closer_evict, for the log fds; false if fd is not a sink */
bool sink_evict(int fd);

#endif
