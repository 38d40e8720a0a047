// SPDX-License-Identifier: MIT
/* close(): the hot path of every program, and the usual end of a connection. */
#include <unistd.h>

#include "runtime.h"
#include "shim.h"

static int op_close(int fd, void *arg)
{
	(void)arg;
	return real.close(fd);
}

/*
 * Anything the table does not know costs a bounds check and one atomic load.
 * One of the library's own fds is kept and the program told it is closed, as
 * it would be had the program owned it: programs that close every fd they
 * did not open must not end deferred connections or lose the log.
 */
static int shim_close(int fd)
{
	uint32_t v = fdtab_get(fd);

	if (__builtin_expect(v == FDT_NONE, 1))
		return real.close(fd);
	if (fdt_is_lib(v))
		return 0;
	return conn_release(fd, TW_VIA_CLOSE, op_close, NULL);
}

SHIM_EXPORT int close(int fd)
{
	return shim_close(fd);
}
