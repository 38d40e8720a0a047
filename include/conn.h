/* SPDX-License-Identifier: MIT */
/*
 * Tracked connections: their slots, their life from connect/accept to the
 * program's last close, and their record.
 */
#ifndef TWSHIM_CONN_H
#define TWSHIM_CONN_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>

#include "addr.h"
#include "config.h"
#include "fdtab.h"
#include "record.h"

/*
 * One tracked TCP connection. Owned by the fd table while the program holds
 * it, by the closer while deferred. 112 bytes: with the closer's heap slot
 * (4 bytes, up to 6 while the heap grows) and the fd table's entry for the
 * library's copy of the fd (4) a deferred connection costs at most 122.
 */
struct tw_conn {
	uint64_t t_open_ns;	/* CLOCK_MONOTONIC at connect/accept */
	uint64_t t_close_ns;	/* at the program's close */
	uint64_t deadline_ns;	/* closer: next time to look at it */
	uint64_t bytes_acked;	/* TCP_INFO at the program's close */
	uint64_t bytes_received;
	struct tw_addr local, remote;
	_Atomic uint16_t nfds;	/* this process's fds that refer to it */
	uint8_t flags;		/* CONN_* */
	/*
	 * TCP state at the program's shutdown or close; before that,
	 * ESTABLISHED when it is known to have come up (conn_open()), else 0
	 */
	uint8_t state;
	uint8_t via;		/* enum tw_via */
	uint8_t why;		/* enum conn_why: why the policy was not applied */
	uint8_t backoff : 4;	/* closer: abort polling step */
	uint8_t mode : 2;	/* closer: enum tw_close_policy it is waiting under */
	uint8_t waited : 1;	/* its connect waited for a deferred connection to end */
	uint8_t unwatched : 1;	/* closer: not in its epoll set (epoll_ctl failed) */
	/*
	 * CONN_W_STDIO: the program opened a stdio stream on it (fdopen()):
	 * glibc may flush it after exit's pass. CONN_W_OWNER: the program set
	 * an owner for SIGIO on one of its fds (fcntl(F_SETOWN)).
	 * Set with an atomic or.
	 */
	uint8_t watch;
	struct tw_policy pol;
	int32_t fd;		/* the program's fd number */
	int32_t libfd;		/* the library's fd while deferred */
	union {			/* never both at once */
		uint32_t next;	/* free list and submission stack: index + 1 */
		uint32_t heap;	/* closer: position in the deadline heap */
	};
	uint32_t gen;		/* fork generation when it was opened */
};

enum conn_watch {
	CONN_W_STDIO	= 1 << 0,
	CONN_W_OWNER	= 1 << 1,
};

enum conn_flags {
	/* the two a socket can carry before it is a connection (FDT_TCP_OPTS) */
	CONN_LINGER0	= FDT_TCP_LINGER0,	/* the program set SO_LINGER {1,0}: its close resets */
	CONN_PEEKOFF	= FDT_TCP_PEEKOFF,	/* the program set SO_PEEK_OFF: a peek may skip data */
	CONN_SERVER	= 1 << 2,	/* accepted, not connected */
	CONN_SHUT_WR	= 1 << 3,	/* the program shut down writing; state is as it was then */
	CONN_SHARED	= 1 << 4,	/* sent away with SCM_RIGHTS: another process holds it */
	/*
	 * another process may hold it unseen by the table: adopted across
	 * exec, or its socket was open across a fork before it connected
	 */
	CONN_INHERITED	= 1 << 5,
	CONN_HELD	= 1 << 6,	/* closer: a copy, while the exiting program keeps its fd */
	/*
	 * taken over at its close, exit or exec: another process connected
	 * it after a fork, and the program here never used it as a connection
	 */
	CONN_TAKEN	= 1 << 7,
};

int conn_slots_init(void);
struct tw_conn *conn_at(uint32_t idx);
uint32_t conn_index(const struct tw_conn *c);
struct tw_conn *conn_alloc(void);
void conn_free(struct tw_conn *c);
/*
 * Starts tracking fd as a connection (after connect or accept succeeded);
 * mark is the FDT_TCP value of the socket it came from (itself, or the
 * listener), with the options it inherits; up: it is known to be
 * established (connect() returned 0, or accept()), not still connecting.
 */
void conn_open(int fd, uint32_t mark, enum tw_role role, const struct sockaddr *remote,
	       socklen_t len, bool up);
/*
 * socket() is called between these, and conn_socket_end() marks the new fd
 * (tcp: it is a TCP socket), so that no fork copies it unmarked.
 */
void conn_socket_begin(void);
void conn_socket_end(int fd, bool tcp);
/* FDT_TCP with the options of a TCP socket the library did not see made. */
uint32_t conn_probe_mark(int fd);
/*
 * c's local address, read from fd once, when something needs it (a
 * connected socket never has port 0): 0 or -errno.
 */
int conn_local(struct tw_conn *c, int fd);
/* Takes over an fd the process inherited (across exec) at start-up. */
void conn_adopt(int fd);

/*
 * How the program lets go of its fd: after `prep` has run the caller does
 * `op` itself (dup2/fclose), or conn_release closes fd.
 */
typedef int (*conn_close_fn)(int fd, void *arg);
/*
 * The program lets go of fd, which the table says is a connection. Applies
 * the policy when it was the last reference and returns what the program's
 * call returns (with errno set as libc set it).
 */
int conn_release(int fd, enum tw_via via, conn_close_fn op, void *arg);
/* The program shut down writing (the call succeeded): remember the state the FIN met. */
void conn_note_shutdown(int fd, int how);
/* The program set SO_LINGER or SO_PEEK_OFF on fd. */
void conn_note_sockopt(int fd, int name, const void *optval, socklen_t optlen);
/* The program sent fd to another process (SCM_RIGHTS). */
void conn_note_sent(int fd);
/* newfd now refers to what oldfd refers to (dup, dup2, dup3, F_DUPFD). */
/* the program made an epoll instance: a socket it closes leaves it before a deferral */
void conn_note_epoll(int epfd);
/* fdopen() gave fd a stdio stream, which glibc flushes only after the exit pass */
void conn_note_stream(int fd);
/* fcntl(F_SETOWN) or F_SETOWN_EX on fd succeeded: its socket may signal SIGIO */
void conn_note_owner(int fd);
void conn_note_dup(int oldfd, int newfd);
/* fork() waits for changes of the table under way, and holds new ones off */
void conn_fork_prepare(void);
void conn_fork_parent(void);
void conn_fork_child(void);
/* Before a spawn: its child holds the sockets that are no connection yet, and the connections. */
void conn_spawn_prepare(void);
/*
 * Before exec: the connections marked close-on-exec, as at exit, for the
 * exec's close; left open, should the exec fail.
 */
void conn_exec_all(void);
/*
 * At exit: connections the program still holds are left open for the
 * kernel to close when the process ends; each is recorded with the end that
 * close makes, or given to the holder for what is left of its policy (hold.h).
 */
void conn_exit_all(enum tw_via via);
/*
 * Is c's end written anywhere (a log, or the counters)? If not, the close
 * path skips what only a record needs.
 */
bool conn_recorded(const struct tw_conn *c);
/*
 * observe_after()'s ours() after the close of look->c: no other socket of
 * this process has its 4-tuple, so a socket the kernel shows with it may be
 * c's. Sets look->taken to what it found.
 */
struct conn_tuple_look {
	const struct tw_conn *c;
	bool taken;
};
bool conn_tuple_free_here(void *look);
/*
 * Writes c's record: its end, whether a timeout chose it, and the time of
 * the real end (0: now is the program's close).
 */
void conn_record(struct tw_conn *c, enum tw_end end, bool timeout, uint64_t end_ns);

#endif
