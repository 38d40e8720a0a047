// SPDX-License-Identifier: MIT
/* shutdown(): passed through; a FIN it sends decides the connection's end. */
#include <unistd.h>

#include "runtime.h"
#include "shim.h"

static int shim_shutdown(int fd, int how)
{
	if (rt.tracking)
		conn_note_shutdown(fd, how);
	return REAL(shutdown)(fd, how);
}

SHIM_EXPORT int shutdown(int fd, int how)
{
	return shim_shutdown(fd, how);
}
