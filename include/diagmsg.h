/* SPDX-License-Identifier: MIT */
/*
 * Diagnostics on stderr: "twshim[pid]: message\n", written with one write().
 * The level comes from TWSHIM_DEBUG (0 errors only, the default; 1 warnings;
 * 2 debug) and is checked before anything is formatted.
 */
#ifndef TWSHIM_DIAGMSG_H
#define TWSHIM_DIAGMSG_H

#include <stdbool.h>
#include <sys/types.h>

enum diag_level { DIAG_ERR = 0, DIAG_WARN = 1, DIAG_DBG = 2 };

extern int diag_level;

/* reads the level, and notes which file fd 2 is now */
void diag_init(const char *env_value);
/* fd 2 is the file it was at diag_init() (true when diag_init() never ran) */
bool diag_stderr_same(void);
/*
 * write() with sig (SIGPIPE, SIGXFSZ) blocked in the calling thread and one
 * the call raised taken back: -1 with errno EPIPE or EFBIG instead of a
 * signal. Retries EINTR. Async-signal-safe.
 */
ssize_t write_nosig(int fd, const void *buf, size_t len, int sig);
void diag_print(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

#define SHIM_LOG(lvl, ...)						\
	do {								\
		if ((lvl) <= diag_level)				\
			diag_print(__VA_ARGS__);			\
	} while (0)
#define SHIM_ERR(...)	SHIM_LOG(DIAG_ERR, __VA_ARGS__)
#define SHIM_WARN(...)	SHIM_LOG(DIAG_WARN, __VA_ARGS__)
#define SHIM_DBG(...)	SHIM_LOG(DIAG_DBG, __VA_ARGS__)

#endif
