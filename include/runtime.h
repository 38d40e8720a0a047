/* SPDX-License-Identifier: MIT */
/*
 * The library's runtime state: the fd table, connection slots, the deferred
 * closer and the record writer. Everything here is reachable from the close
 * path, so everything here is lock-free, allocation-free and
 * async-signal-safe unless its comment says otherwise.
 */
#ifndef TWSHIM_RUNTIME_H
#define TWSHIM_RUNTIME_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "addr.h"
#include "config.h"
#include "defaults.h"
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
	uint8_t state;		/* TCP state at the program's shutdown or close */
	uint8_t via;		/* enum tw_via */
	uint8_t why;		/* enum conn_why: why the policy was not applied */
	uint8_t backoff;	/* closer: abort polling step */
	uint8_t mode;		/* closer: enum tw_close_policy it is waiting under */
	struct tw_policy pol;
	int32_t fd;		/* the program's fd number */
	int32_t libfd;		/* the library's fd while deferred */
	union {			/* never both at once */
		uint32_t next;	/* free list and submission stack: index + 1 */
		uint32_t heap;	/* closer: position in the deadline heap */
	};
	uint32_t gen;		/* fork generation when it was opened */
};

enum conn_flags {
	/* the two a socket can carry before it is a connection (FDT_TCP_OPTS) */
	CONN_LINGER0	= 1 << 0,	/* the program set SO_LINGER {1,0}: its close resets */
	CONN_PEEKOFF	= 1 << 1,	/* the program set SO_PEEK_OFF: a peek may skip data */
	CONN_SERVER	= 1 << 2,	/* accepted, not connected */
	CONN_SHUT_WR	= 1 << 3,	/* the program shut down writing; state is as it was then */
	CONN_SHARED	= 1 << 4,	/* sent away with SCM_RIGHTS: another process holds it */
	CONN_INHERITED	= 1 << 5,	/* adopted across exec: the parent may hold it */
};

enum conn_why { WHY_NONE, WHY_SHARED, WHY_NO_FD, WHY_CAP, WHY_NO_CLOSER, WHY_LINGER };

/*
 * fd table values: 0 nothing known; 1 .. FDT_LIBCONN-1 a connection slot
 * index + 1; FDT_LIBCONN | (index + 1) the library's fd of a deferred
 * connection; and the markers below.
 */
#define FDT_NONE	0u
#define FDT_LIBCONN	0x80000000u
#define FDT_LIB		0xfffffff6u	/* another library fd: closer, log */
#define FDT_OTHER	0xfffffff7u	/* a socket probed and found not TCP */
/*
 * A TCP socket that is no connection (yet): FDT_TCP, or'ed with the
 * connection flags of the options its connections start with (accepted ones
 * inherit the listener's), and with FDT_TCP_DUPED.
 */
#define FDT_TCP		0xfffffff8u
#define FDT_TCP_OPTS	(CONN_LINGER0 | CONN_PEEKOFF)
#define FDT_TCP_DUPED	0x4u		/* dup'ed: other fds may share the socket */

static inline bool fdt_is_tcp(uint32_t v)
{
	return v >= FDT_TCP;
}

static inline bool fdt_is_conn(uint32_t v)
{
	return v != FDT_NONE && v < FDT_LIBCONN;
}

static inline bool fdt_is_lib(uint32_t v)
{
	return v >= FDT_LIBCONN && v <= FDT_LIB;
}

extern _Atomic uint32_t fdtab[TW_FD_MAX];

/* the hot path: a bounds check and one atomic load */
static inline uint32_t fdtab_get(int fd)
{
	if (__builtin_expect((unsigned)fd >= TW_FD_MAX, 0))
		return FDT_NONE;
	return atomic_load_explicit(&fdtab[fd], memory_order_acquire);
}

static inline void fdtab_set(int fd, uint32_t v)
{
	if ((unsigned)fd < TW_FD_MAX)
		atomic_store_explicit(&fdtab[fd], v, memory_order_release);
}

static inline uint32_t fdtab_take(int fd)
{
	if ((unsigned)fd >= TW_FD_MAX)
		return FDT_NONE;
	return atomic_exchange_explicit(&fdtab[fd], FDT_NONE, memory_order_acq_rel);
}

/* Process-wide state, written at start-up and in the fork child only. */
struct rt {
	bool tracking;		/* connections are tracked */
	bool reuseaddr;		/* SO_REUSEADDR on new TCP sockets */
	int pid;
	int libfd_base;		/* the library's fds are moved at or above this */
	_Atomic uint32_t forkgen;	/* bumped by every fork, in parent and child */
	struct conf *conf;
	char comm[TW_COMM_MAX + 1];
};

extern struct rt rt;

/*
 * A child made by vfork() (or clone with CLONE_VM) runs in this process's
 * memory with an fd table of its own: what it does to its fds must leave the
 * table alone. Its pid tells it apart (the fork handlers keep rt.pid). One
 * syscall, paid only on paths that change the table for a tracked fd.
 */
static inline bool rt_foreign(void)
{
	return syscall(SYS_getpid) != rt.pid;
}

/* core/conn.c: connection slots and their life */
int conn_slots_init(void);
struct tw_conn *conn_at(uint32_t idx);
uint32_t conn_index(const struct tw_conn *c);
struct tw_conn *conn_alloc(void);
void conn_free(struct tw_conn *c);
/*
 * Starts tracking fd as a connection (after connect or accept succeeded);
 * mark is the FDT_TCP value of the socket it came from (itself, or the
 * listener), with the options it inherits.
 */
void conn_open(int fd, uint32_t mark, enum tw_role role, const struct sockaddr *remote,
	       socklen_t len);
/* FDT_TCP with the options of a TCP socket the library did not see made. */
uint32_t conn_probe_mark(int fd);
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
void conn_note_dup(int oldfd, int newfd);
/* fork() waits for changes of the table under way, and holds new ones off */
void conn_fork_prepare(void);
void conn_fork_parent(void);
void conn_fork_child(void);
/* At exit (or exec: only those marked close-on-exec) connections still open end now. */
void conn_exit_all(enum tw_via via, bool only_cloexec);
/*
 * Writes c's record: its end, whether a timeout chose it, and the time of
 * the real end (0: now is the program's close).
 */
void conn_record(struct tw_conn *c, enum tw_end end, bool timeout, uint64_t end_ns);

/* core/shared.c: connections more than one process holds */
bool holders_elsewhere(int fd);
int shared_init(void);
/* true for the first process to claim the cookie: it writes the record */
bool shared_claim(uint64_t cookie);

/* core/closer.c: the deferred closer */
int closer_init(void);
int closer_start(void);
bool closer_running(void);
/* hands c (c->libfd open, c->mode set) to the closer; false when over the cap */
bool closer_submit(struct tw_conn *c);
/* the program dup2'd or dup3'd onto one of the library's fds: move it away */
void closer_evict(int fd);
/* at exit: give every deferred connection at most its exit_wait_ms, then wait */
void closer_drain(uint64_t now_ns);
void closer_fork_prepare(void);
void closer_fork_parent(void);
void closer_fork_child(void);
unsigned closer_count(void);

/* core/sink.c: where records go */
int sink_open_all(const struct conf *c);
void sink_write(unsigned sink, const char *buf, size_t len);
void sink_fork_child(void);
/* sink_evict: like closer_evict, for the log fds; false if fd is not a sink */
bool sink_evict(int fd);

/* core/fdtab.c: the library's own fds, moved out of the program's way; clocks */
int libfd_move(int fd, uint32_t mark);
void libfd_close(int fd);
uint64_t clock_mono_ns(void);
uint64_t clock_real_us(void);
uint64_t rnd_next(void);
void rnd_fork_child(void);

#endif
