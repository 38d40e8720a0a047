// SPDX-License-Identifier: MIT
/* shutdown(): passed through; a FIN it sends decides the connection's end. */
#include <errno.h>
#include <unistd.h>

#include "runtime.h"
#include "shim.h"

static int shim_shutdown(int fd, int how)
{
	int r = REAL(shutdown)(fd, how), saved = errno;

	if (r == 0 && rt.tracking) {
		conn_note_shutdown(fd, how);
		errno = saved;
	}
	return r;
}

SHIM_EXPORT int shutdown(int fd, int how)
{
	return shim_shutdown(fd, how);
}
