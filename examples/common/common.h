/* SPDX-License-Identifier: MIT */
/*
 * What the example programs share: messages and option parsing, bounded
 * socket I/O, and the ways a connection is ended and its fd released. Each
 * program is its own file plus this; none of it knows the library.
 */
#ifndef TW_EXAMPLES_COMMON_H
#define TW_EXAMPLES_COMMON_H

#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <sys/socket.h>
#include <sys/types.h>

#define ARRAY_SIZE(a)	(sizeof(a) / sizeof((a)[0]))

/* An error code beyond errno: the peer closed before the exchange was complete. */
#define ERR_EOF		(-1)

/* Longest wait between two looks at the stop flag (IO_STOPPABLE). */
#define SLICE_MS	50

/* Who a program is in its messages; each program defines `prog`. */
struct prog {
	const char *name;
	bool hint_bad_value;	/* "Try 'NAME --help'." also after a bad option value */
};
extern const struct prog prog;

/* How a connection is ended (--close), and how its fd is released (--end). */
enum close_mode { CLOSE_FIRST, CLOSE_LAST, CLOSE_SHUTDOWN, CLOSE_RESET, CLOSE_NEVER };
enum end_mode { END_CLOSE, END_DUP2, END_CLOSE_RANGE, END_FCLOSE, END_EXIT };
extern const char *const close_names[CLOSE_NEVER + 1];
extern const char *const end_names[END_EXIT + 1];

/* How the waiting helpers below behave. */
enum io_flags {
	IO_BLOCKING = 1 << 0,	/* a blocking socket: EAGAIN means its SO_*TIMEO ran out */
	IO_STOPPABLE = 1 << 1,	/* give up (-ECANCELED, or a short sleep) once stop is set */
};

/* Set by SIGTERM and SIGINT once stop_on_signals() ran. */
extern _Atomic int stop;
/* SIGTERM and SIGINT set stop; SIGPIPE is ignored. */
void stop_on_signals(void);

/* "NAME: MESSAGE", "Try 'NAME --help'." on stderr, and exit status 2. */
void die_usage(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));
/* The errno name of err ("EADDRNOTAVAIL"), "EOF" for ERR_EOF, "" for 0. */
const char *err_name(int err);
/* An option's number from min to max, or a usage error naming what. */
long parse_num(const char *s, long min, long max, const char *what);
/* The index of s in names[0..n-1], or a usage error naming what. */
int parse_enum(const char *s, const char *const *names, int n, const char *what);
/*
 * "1.2.3.4:80" or "[::1]:80", with a port from min_port to 65535, into a
 * sockaddr. Returns 0, or -1 when the text is not such an address.
 */
int parse_addr(const char *text, int min_port, struct sockaddr_storage *ss, socklen_t *len);

/* CLOCK_MONOTONIC in milliseconds */
long now_ms(void);
/* Sleeps ms; with IO_STOPPABLE, in slices, returning early once stop is set. */
void sleep_ms(int ms, unsigned flags);
/*
 * Waits until fd is ready for events or timeout_ms passes. Returns 0 when
 * ready, -ETIMEDOUT, -ECANCELED when stop is set (IO_STOPPABLE), or -errno.
 */
int wait_fd(int fd, short events, int timeout_ms, unsigned flags);
/* One read with a timeout: bytes read, 0 at EOF, or -errno. */
ssize_t read_some(int fd, char *buf, size_t len, int timeout_ms, unsigned flags);
/* Writes all of buf within timeout_ms per step; 0 or -errno. */
int write_all(int fd, const char *buf, size_t len, int timeout_ms, unsigned flags);
/* Writes n bytes of c, the last one a newline when line is set; 0 or an error code. */
int write_fill(int fd, long n, char c, bool line, int timeout_ms, unsigned flags);
/*
 * Reads and discards until the peer's EOF. With idle_ms >= 0, giving up after
 * that long is not an error. Returns 0 or an error code.
 */
int wait_eof(int fd, int idle_ms, int timeout_ms, unsigned flags);
/*
 * Ends the exchange the way how says, short of releasing the fd: first and
 * never do nothing here, last waits for the peer's EOF, shutdown sends the
 * FIN and then waits, reset arms SO_LINGER {1,0}. Returns 0 or an error code.
 */
int end_conn(int fd, enum close_mode how, int idle_ms, int timeout_ms, unsigned flags);
/*
 * Releases fd the way end says (null_fd: the /dev/null that END_DUP2 copies
 * over it). END_EXIT leaves it open: it goes when the process exits.
 * Returns 0 or an error code.
 */
int release_fd(int fd, enum end_mode end, int null_fd);

/* The failed connections of a run and the first of them, for the summary line. */
struct failures {
	long count;
	long first_conn;	/* 0: none yet */
	int first_err;
	char first_op[32];
};
/*
 * Counts a failed connection; threads and (through shared memory) processes
 * may call it at once. The first failure is kept and told on stderr, where
 * eof_what says what ERR_EOF means.
 */
void note_failure(struct failures *f, long conn, const char *op, int err,
		  const char *eof_what);

/*
 * Runs fn in n threads and waits for them all; with n == 1, in this thread.
 * Returns 0, or -1 when a thread could not be started (told on stderr).
 */
int run_threads(int n, void *(*fn)(void *));

#endif
