// SPDX-License-Identifier: MIT
/*
 * Diagnostics on stderr, one write() a line; and the write() that the
 * library's own output goes through, which raises no signal in the host
 * program.
 */
#include <errno.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>
#include <sys/stat.h>

#include "diagmsg.h"

int diag_level = DIAG_ERR;

/* what fd 2 was at start-up: the only stderr the library writes to */
static struct {
	bool known;	/* diag_init() looked */
	bool open;	/* fd 2 was open then */
	dev_t dev;
	ino_t ino;
} err_fd;

void diag_init(const char *env_value)
{
	struct stat st;

	if (env_value && *env_value)
		diag_level = atoi(env_value);
	err_fd.known = true;
	err_fd.open = fstat(STDERR_FILENO, &st) == 0;
	if (err_fd.open) {
		err_fd.dev = st.st_dev;
		err_fd.ino = st.st_ino;
	}
}

/*
 * Is fd 2 still the file it was at start-up? A daemon that closed it may
 * have been handed another file, or a client's connection, under the same
 * number: nothing of the library's must go there. One fstat().
 */
bool diag_stderr_same(void)
{
	struct stat st;

	if (!err_fd.known)
		return true;
	return err_fd.open && fstat(STDERR_FILENO, &st) == 0 && st.st_dev == err_fd.dev &&
	       st.st_ino == err_fd.ino;
}

/*
 * One write() that raises no signal of the library's making: sig (SIGPIPE
 * for a pipe whose reader is gone, SIGXFSZ for a file at RLIMIT_FSIZE) is
 * blocked in this thread for the call, and one the call raised is taken
 * back. Both are sent to the writing thread (send_sig(..., current)), so
 * sigtimedwait() here finds it. One that was already pending before the
 * call is the program's and is left alone. Async-signal-safe: system calls
 * only. errno is the write's.
 */
ssize_t write_nosig(int fd, const void *buf, size_t len, int sig)
{
	static const struct timespec zero = { 0, 0 };
	sigset_t set, old, pend;
	bool was_pending;
	ssize_t n;
	int err;

	sigemptyset(&set);
	sigaddset(&set, sig);
	if (pthread_sigmask(SIG_BLOCK, &set, &old) != 0)
		return -1;
	was_pending = sigpending(&pend) == 0 && sigismember(&pend, sig);
	do {
		n = write(fd, buf, len);
	} while (n < 0 && errno == EINTR);
	err = errno;
	if (n < 0 && !was_pending && (err == EPIPE || err == EFBIG)) {
		while (sigtimedwait(&set, NULL, &zero) < 0 && errno == EINTR)
			;
	}
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	errno = err;
	return n;
}

/*
 * Formats "twshim[pid]: message\n" and writes it with one write(), so lines
 * from several processes on one stderr never interleave. Control characters
 * in the message (a newline in a path taken from the settings) become '?':
 * one diagnostic is one line. errno is kept.
 */
void diag_print(const char *fmt, ...)
{
	char buf[1024];
	int saved = errno;
	int n = snprintf(buf, sizeof(buf), "twshim[%d]: ", (int)getpid());
	va_list ap;

	va_start(ap, fmt);
	n += vsnprintf(buf + n, sizeof(buf) - (size_t)n - 1, fmt, ap);
	va_end(ap);
	if (n > (int)sizeof(buf) - 2)
		n = (int)sizeof(buf) - 2;
	for (int i = 0; i < n; i++)
		if ((unsigned char)buf[i] < 0x20 || buf[i] == 0x7f)
			buf[i] = '?';
	buf[n++] = '\n';
	if (diag_stderr_same())
		write_nosig(STDERR_FILENO, buf, (size_t)n, SIGPIPE);
	errno = saved;
}
