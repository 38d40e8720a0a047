/* SPDX-License-Identifier: MIT */
/*
 * The fd table (one atomic word per fd number), the process-wide state, the
 * library's own fds, clocks and randomness: what every path of the library
 * reads first. Lock-free, allocation-free, async-signal-safe.
 */
#ifndef TWSHIM_FDTAB_H
#define TWSHIM_FDTAB_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "defaults.h"

struct conf;

/*
 * fd table values: 0 nothing known; 1 .. FDT_LIBCONN-1 a connection slot
 * index + 1 (fdt_conn()); FDT_LIBCONN | (index + 1) the library's fd of a
 * deferred connection (fdt_libconn()); and the markers below. Use the
 * helpers, not the numbers.
 */
#define FDT_NONE	0u
#define FDT_LIBCONN	0x80000000u
#define FDT_LIB		0xffffffeeu	/* another library fd: closer, log, netlink */
#define FDT_OTHER	0xffffffefu	/* a socket probed and found not TCP */
/*
 * A TCP socket that is no connection (yet): FDT_TCP, or'ed with the options
 * its connections start with (accepted ones inherit the listener's), with
 * FDT_TCP_DUPED and with FDT_TCP_FORKED.
 */
#define FDT_TCP		0xfffffff0u
#define FDT_TCP_LINGER0	0x1u		/* SO_LINGER {1,0}: its close resets */
#define FDT_TCP_PEEKOFF	0x2u		/* SO_PEEK_OFF: a peek may skip data */
#define FDT_TCP_OPTS	(FDT_TCP_LINGER0 | FDT_TCP_PEEKOFF)
#define FDT_TCP_DUPED	0x4u		/* dup'ed: other fds may share the socket */
/*
 * Open across a fork: the other process holds it too, and may connect it
 * while this one's table still says it is no connection.
 */
#define FDT_TCP_FORKED	0x8u
#define FDT_TCP_BITS	(FDT_TCP_OPTS | FDT_TCP_DUPED | FDT_TCP_FORKED)

_Static_assert(TW_CONN_MAX < FDT_LIBCONN - 1, "a slot index + 1 must stay below FDT_LIBCONN");
_Static_assert((FDT_LIBCONN | TW_CONN_MAX) < FDT_LIB, "library copies must stay below FDT_LIB");
_Static_assert((FDT_TCP & FDT_TCP_BITS) == 0 && (FDT_TCP | FDT_TCP_BITS) == 0xffffffffu,
	       "the TCP marker's low bits are its options");
_Static_assert(FDT_LIB < FDT_OTHER && FDT_OTHER < FDT_TCP, "markers in this order");

/* the program's fd of connection slot idx */
static inline uint32_t fdt_conn(uint32_t idx)
{
	return idx + 1;
}

/* the library's own copy of connection slot idx (deferred) */
static inline uint32_t fdt_libconn(uint32_t idx)
{
	return FDT_LIBCONN | (idx + 1);
}

static inline bool fdt_is_tcp(uint32_t v)
{
	return v >= FDT_TCP;
}

/* a TCP socket the table knows as no connection, which another process may have connected */
static inline bool fdt_is_forked_tcp(uint32_t v)
{
	return fdt_is_tcp(v) && (v & FDT_TCP_FORKED);
}

static inline bool fdt_is_conn(uint32_t v)
{
	return v != FDT_NONE && v < FDT_LIBCONN;
}

/* a connection, or a socket another process may have made one (whose end may be ours) */
static inline bool fdt_may_be_conn(uint32_t v)
{
	return fdt_is_conn(v) || fdt_is_forked_tcp(v);
}

static inline bool fdt_is_libconn(uint32_t v)
{
	return v > FDT_LIBCONN && v < FDT_LIB;
}

static inline bool fdt_is_lib(uint32_t v)
{
	return v >= FDT_LIBCONN && v <= FDT_LIB;
}

/* the slot index of a value for which fdt_is_conn() or fdt_is_libconn() holds */
static inline uint32_t fdt_index(uint32_t v)
{
	return (v & ~FDT_LIBCONN) - 1;
}

extern _Atomic uint32_t fdtab[TW_FD_MAX];
/* the highest fd ever given a value: walks of the table stop there */
extern _Atomic int fdtab_hi;

/* the hot path: a bounds check and one atomic load */
static inline uint32_t fdtab_get(int fd)
{
	if (__builtin_expect((unsigned)fd >= TW_FD_MAX, 0))
		return FDT_NONE;
	return atomic_load_explicit(&fdtab[fd], memory_order_acquire);
}

static inline void fdtab_set(int fd, uint32_t v)
{
	int hi;

	if ((unsigned)fd >= TW_FD_MAX)
		return;
	atomic_store_explicit(&fdtab[fd], v, memory_order_release);
	hi = atomic_load_explicit(&fdtab_hi, memory_order_relaxed);
	while (v != FDT_NONE && fd > hi &&
	       !atomic_compare_exchange_weak_explicit(&fdtab_hi, &hi, fd, memory_order_relaxed,
						      memory_order_relaxed))
		;
}

static inline uint32_t fdtab_take(int fd)
{
	if ((unsigned)fd >= TW_FD_MAX)
		return FDT_NONE;
	return atomic_exchange_explicit(&fdtab[fd], FDT_NONE, memory_order_acq_rel);
}

/* Replaces fd's value only if it is still `old` (a concurrent change wins). */
static inline bool fdtab_replace(int fd, uint32_t old, uint32_t v)
{
	if ((unsigned)fd >= TW_FD_MAX)
		return false;
	return atomic_compare_exchange_strong(&fdtab[fd], &old, v);
}

/* Process-wide state, written at start-up and in the fork child only. */
struct rt {
	bool tracking;		/* connections are tracked */
	bool reuseaddr;		/* SO_REUSEADDR on new TCP sockets */
	int pid;
	_Atomic uint32_t forkgen;	/* bumped by every fork, in parent and child */
	bool forked;		/* a child made by fork(): its exit pass starts no thread */
	struct conf *conf;
	char comm[TW_COMM_MAX + 1];
};

extern struct rt rt;

/*
 * Children that share this process's memory but not its fds (vfork(), clone
 * with CLONE_VM) and may be running now: counted by the library's vfork and
 * clone wrappers (shim/vfork.c). Where no vfork wrapper is built, it starts
 * at 1 and stays there.
 */
extern _Atomic int rt_vforks;
#if defined(__x86_64__)
#define RT_VFORKS_BASE	0
#else
#define RT_VFORKS_BASE	1
#endif

/*
 * clone() made a child that shares this process's fds (CLONE_FILES: a
 * thread glibc may not know of). Set for good, by the clone wrapper.
 */
extern _Atomic bool rt_cloned;
/* the main thread left with pthread_exit(): the others may end the process */
extern _Atomic bool rt_main_gone;
/*
 * The program set the owner (fcntl F_SETOWN, F_SETOWN_EX) of a TCP socket
 * that is no connection the library knows: SIGIO may come from any
 * connection's socket (conn_note_owner())
 */
extern _Atomic bool rt_owner_set;
/*
 * A child made by clone() without CLONE_VM: glibc did not set it up as
 * fork() does (its thread list and ids are its parent's), so the library
 * starts no thread in it: no closer (why: no_closer).
 */
extern _Atomic bool rt_threadless;
/*
 * Children that got a copy of this process's fds without a fork handler
 * (vfork, posix_spawn, system, popen, clone without CLONE_FILES): counted,
 * as fork() counts in rt.forkgen, for rt_gen().
 */
extern _Atomic uint32_t rt_spawns;

/*
 * Such a child runs in this memory with an fd table of its own: what it does
 * to its fds must leave the table alone. Its pid tells it apart (the fork
 * handlers keep rt.pid); the getpid() is paid only while one may exist.
 */
static inline bool rt_foreign(void)
{
	return atomic_load_explicit(&rt_vforks, memory_order_relaxed) &&
	       syscall(SYS_getpid) != rt.pid;
}

/*
 * Changes whenever a child may have got copies of the fds open now: a fork
 * (either side), or a spawn that no fork handler sees. A child that execs
 * may keep any of them (its own copy need not be close-on-exec).
 */
static inline uint32_t rt_gen(void)
{
	return atomic_load(&rt.forkgen) + atomic_load(&rt_spawns);
}

/* the library's own fds, where the program cannot have them (or -errno) */
int libfd_dup(int fd);
/* around fork(): no copy of the library's is under way in it */
void libfd_fork_prepare(void);
void libfd_fork_parent(void);
void libfd_fork_child(void);
int libfd_move(int fd, uint32_t mark);
void libfd_close(int fd);
/* the program set its RLIMIT_NOFILE: the next copy reads it again */
void libfd_limit_changed(void);
/*
 * The process's threads as /proc/self/stat counts them (a zombie leader,
 * whose thread left with pthread_exit(), included; *leader_gone then), or
 * 0. Raw calls.
 */
long rt_threads(bool *leader_gone);
/*
 * Is this process's fd table the calling thread's alone, but for the
 * library's closer: no other thread of the program (counted again for up
 * to a millisecond: a thread just joined is counted a moment longer), no
 * child made with CLONE_FILES? Without /proc to count, taken for yes.
 */
bool rt_table_alone(void);
uint64_t clock_mono_ns(void);
/* whole seconds of CLOCK_MONOTONIC_COARSE: for once-a-second looks */
uint64_t clock_mono_s(void);
uint64_t clock_real_us(void);
uint64_t rnd_next(void);
void rnd_fork_child(void);

#endif
