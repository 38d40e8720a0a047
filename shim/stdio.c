// SPDX-License-Identifier: MIT
/*
 * fclose() of a stream opened on a socket with fdopen(): glibc closes the fd
 * inside libc, where close() is not interposed, so the stream's close is
 * caught here. fdopen() marks the connection: at exit, glibc flushes its
 * stream only after the library's pass.
 */
#include <errno.h>
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
 * close never overtakes data still in the stream's buffer. A flush that
 * failed empties the buffer (glibc), and fclose() would then find nothing
 * to write: its EOF and errno are the result, as they would have been.
 */
static int shim_fclose(FILE *fp)
{
	int fd, r, err;

	if (!rt.tracking || !fp)
		return REAL(fclose)(fp);
	fd = fileno(fp);
	if (fd < 0 || !fdt_may_be_conn(fdtab_get(fd)))
		return REAL(fclose)(fp);
	if (fflush(fp) == 0)
		return conn_release(fd, TW_VIA_FCLOSE, op_fclose, fp);
	err = errno;
	r = conn_release(fd, TW_VIA_FCLOSE, op_fclose, fp);
	if (r == 0)
		errno = err;
	return EOF;
}

SHIM_EXPORT int fclose(FILE *fp)
{
	return shim_fclose(fp);
}

SHIM_EXPORT FILE *fdopen(int fd, const char *mode)
{
	FILE *fp = REAL(fdopen)(fd, mode);

	if (fp && rt.tracking)
		conn_note_stream(fd);
	return fp;
}
