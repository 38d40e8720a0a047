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
/* opens the destinations not open yet (before the hand-off to the holder) */
void sink_open_pending(void);
/* is fd one of the log destinations' fds? (the holder keeps those) */
bool sink_owns(int fd);
/* at most TW_SINK_FDS of them: puts them in out (max entries); returns how many */
#define TW_SINK_FDS	(2 * TW_SINKS_MAX)
int sink_fds_all(int *out, int max);
/* sink_evict: like closer_evict, for the log fds; false if fd is not a sink */
bool sink_evict(int fd);

#endif
