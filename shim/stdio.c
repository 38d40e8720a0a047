// SPDX-License-Identifier: MIT
/*
 * fclose() of a stream opened on a socket with fdopen(): glibc closes the fd
 * inside libc, where close() is not interposed, so the stream's close is
 * caught here.
 */
#include <stdio.h>

#include "runtime.h"
#include "shim.h"

static int op_fclose(int fd, void *arg)
{
	(void)fd;
	return REAL(fclose)(arg);
}

/*
 * The stream is flushed before anything is decided, so that an abortive
 * close never overtakes data still in the stream's buffer.
 */
static int shim_fclose(FILE *fp)
{
	int fd;

	if (!rt.tracking || !fp)
		return REAL(fclose)(fp);
	fd = fileno(fp);
	if (fd < 0 || !fdt_may_be_conn(fdtab_get(fd)))
		return REAL(fclose)(fp);
	fflush(fp);
	return conn_release(fd, TW_VIA_FCLOSE, op_fclose, fp);
}

SHIM_EXPORT int fclose(FILE *fp)
{
	return shim_fclose(fp);
}
