/* SPDX-License-Identifier: MIT */
/*
 * Looking at a connection without touching it: what its receive queue holds
 * (a peek), what is not yet acknowledged (SIOCOUTQ), and what the kernel
 * shows of it after a close (sock_diag). Async-signal-safe, raw syscalls, no
 * cancellation point, nothing sent on the connection.
 */
#ifndef TWSHIM_OBSERVE_H
#define TWSHIM_OBSERVE_H

#include <stdbool.h>
#include <stdint.h>

#include "addr.h"

/*
 * enum obs_unread: nothing, the end of the stream, data, or an error (a
 * reset). quiet: by SIOCINQ, which sees data only (UNREAD_DATA or
 * UNREAD_NONE) and takes nothing from the socket, where the peek would take
 * a pending error (another holder's to read) or skip what SO_PEEK_OFF passed.
 */
uint8_t observe_unread(int fd, bool quiet);
/* SIOCATMARK: an urgent byte is next to read (a peek skips it unless SO_OOBINLINE) */
bool observe_urgent(int fd);
/* SIOCOUTQ: bytes written and not yet acknowledged, or -1 */
int observe_outq(int fd);
/*
 * May the socket the kernel shows with this 4-tuple after a close be the
 * one closed? (arg: the caller's)
 */
typedef bool (*obs_ours_fn)(void *arg);
/*
 * After a close: enum obs_after for the socket with this 4-tuple (and
 * cookie, DIAG_ANY_COOKIE for any), with its state in *state and its cookie
 * in *found when it is there (a TIME_WAIT socket keeps the cookie). ours:
 * NULL when another holder may have the socket; else the caller's close was
 * its last reference this process knows of, and a close seen under way is
 * asked about again for up to a millisecond when ours(arg), asked once,
 * says the socket found may be the one closed.
 */
uint8_t observe_after(const struct tw_addr *local, const struct tw_addr *remote,
		      uint64_t cookie, obs_ours_fn ours, void *arg, uint8_t *state,
		      uint64_t *found);
/* the fork child must not share the parent's netlink socket */
void observe_fork_child(void);
/* the program dup2s onto fd: if it is the netlink socket, move it; false if it is not */
bool observe_evict(int fd);

#endif
