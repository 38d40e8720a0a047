// SPDX-License-Identifier: MIT
/* Diagnostics on stderr, one write() a line. */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "diagmsg.h"

int diag_level = DIAG_ERR;

void diag_init(const char *env_value)
{
	if (env_value && *env_value)
		diag_level = atoi(env_value);
}

/*
 * Formats "twshim[pid]: message\n" and writes it with one write(), so lines
 * from several processes on one stderr never interleave. errno is kept.
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
	buf[n++] = '\n';
	if (write(STDERR_FILENO, buf, (size_t)n) < 0) {
		/* nowhere left to report it */
	}
	errno = saved;
}
