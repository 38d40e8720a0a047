// SPDX-License-Identifier: MIT
/*
 * Where records go: a file (O_APPEND, one write() a record, so processes
 * sharing it never interleave), stderr, or syslog. Opened at start-up; written
 * from the close path, so writing is one syscall and nothing else.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdatomic.h>
#include <string.h>
#include <unistd.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/un.h>

#include "diagmsg.h"
#include "runtime.h"

enum sink_kind { SINK_FILE, SINK_STDERR, SINK_SYSLOG };

struct sink {
	enum sink_kind kind;
	_Atomic int fd;
	_Atomic bool warned;
	const char *name;	/* as configured, %p and %n unexpanded */
};

static struct sink sinks[TW_SINKS_MAX];
static unsigned nsinks;

static char *put_num(char *p, char *end, unsigned v)
{
	char tmp[20];
	size_t n = fmt_u64(tmp, v);

	if (n > (size_t)(end - p))
		n = (size_t)(end - p);
	memcpy(p, tmp, n);
	return p + n;
}

/*
 * Expands %p (pid) and %n (process name) and %% in a log path. Returns 0, or
 * -ENAMETOOLONG. Async-signal-safe: a forked child calls it to reopen.
 */
static int expand_path(char *out, size_t len, const char *in)
{
	char *p = out, *end = out + len - 1;

	for (; *in; in++) {
		if (*in == '%' && in[1] == 'p') {
			p = put_num(p, end, (unsigned)rt.pid);
			in++;
		} else if (*in == '%' && in[1] == 'n') {
			for (const char *n = rt.comm; *n && p < end; n++)
				*p++ = *n == '/' ? '_' : *n;
			in++;
		} else if (*in == '%' && in[1] == '%') {
			if (p < end)
				*p++ = '%';
			in++;
		} else if (p < end) {
			*p++ = *in;
		}
		if (p >= end)
			return -ENAMETOOLONG;
	}
	*p = 0;
	return 0;
}

static int open_file(const char *name)
{
	char path[TW_PATH_MAX];
	long fd;
	int err;

	err = expand_path(path, sizeof(path), name);
	if (err < 0)
		return err;
	fd = syscall(SYS_openat, AT_FDCWD, path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
	if (fd < 0)
		return -errno;
	return libfd_move((int)fd, FDT_LIB);
}

/* a datagram socket connected to the local syslog daemon */
static int open_syslog(void)
{
	struct sockaddr_un sun = { .sun_family = AF_UNIX, .sun_path = "/dev/log" };
	long fd = syscall(SYS_socket, AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);

	if (fd < 0)
		return -errno;
	if (syscall(SYS_connect, fd, &sun, sizeof(sun)) < 0) {
		int err = -errno;

		syscall(SYS_close, fd);
		return err;
	}
	return libfd_move((int)fd, FDT_LIB);
}

static int sink_open(struct sink *s)
{
	if (s->kind == SINK_STDERR)
		return STDERR_FILENO;
	if (s->kind == SINK_SYSLOG)
		return open_syslog();
	return open_file(s->name);
}

/*
 * Opens every log destination the settings name. One that cannot be opened
 * is reported once and its records are dropped; the program goes on.
 */
int sink_open_all(const struct conf *c)
{
	nsinks = (unsigned)conf_nsinks(c);
	if (nsinks > TW_SINKS_MAX)
		nsinks = TW_SINKS_MAX;
	for (unsigned i = 0; i < nsinks; i++) {
		struct sink *s = &sinks[i];
		int fd;

		s->name = conf_sink(c, i);
		s->kind = !strcmp(s->name, "stderr") ? SINK_STDERR :
			  !strcmp(s->name, "syslog") ? SINK_SYSLOG : SINK_FILE;
		fd = sink_open(s);
		if (fd < 0)
			SHIM_ERR("log: cannot open %s: %s; its records are dropped", s->name,
				 strerror(-fd));
		atomic_store(&s->fd, fd);
	}
	return 0;
}

/*
 * One record, one write(): O_APPEND makes each land whole after the others.
 * A failure is reported once per destination, never to the program.
 */
void sink_write(unsigned i, const char *buf, size_t len)
{
	struct sink *s = &sinks[i];
	char msg[TW_RECORD_MAX + 64];
	ssize_t n;
	int fd, saved = errno;

	if (i >= nsinks || (fd = atomic_load(&s->fd)) < 0)
		return;
	if (s->kind == SINK_SYSLOG) {
		/* "<14>" is facility user, level info (RFC 3164); the newline is dropped */
		char *p = msg, *end = msg + sizeof(msg);

		memcpy(p, "<14>twshim[", 11);
		p = put_num(p + 11, end, (unsigned)rt.pid);
		memcpy(p, "]: ", 3);
		p += 3;
		if (len - 1 > (size_t)(end - p))
			len = (size_t)(end - p) + 1;
		memcpy(p, buf, len - 1);
		buf = msg;
		len = (size_t)(p - msg) + len - 1;
	}
	do {
		n = write(fd, buf, len);
	} while (n < 0 && errno == EINTR);
	if (n > 0 && (size_t)n < len && s->kind == SINK_FILE) {
		/*
		 * The disk filled up in the middle of the record: take the part
		 * back so that the file never holds half a line. With O_APPEND
		 * the offset after the write is the end of our part.
		 */
		off_t end = lseek(fd, 0, SEEK_CUR);

		if (end >= n && ftruncate(fd, end - n) == 0)
			errno = ENOSPC;
	}
	if (n == (ssize_t)len) {
		atomic_store(&s->warned, false);
	} else if (!atomic_exchange(&s->warned, true)) {
		SHIM_ERR("log: cannot write to %s: %s; records are lost until it can", s->name,
			 n < 0 ? strerrordesc_np(errno) : "short write");
	}
	errno = saved;
}

/* A forked child writes to its own file when the path names the pid. */
void sink_fork_child(void)
{
	for (unsigned i = 0; i < nsinks; i++) {
		struct sink *s = &sinks[i];
		int fd;

		if (s->kind != SINK_FILE || !strstr(s->name, "%p"))
			continue;
		fd = atomic_exchange(&s->fd, -1);
		if (fd >= 0)
			libfd_close(fd);
		atomic_store(&s->fd, open_file(s->name));
	}
}

bool sink_evict(int fd)
{
	for (unsigned i = 0; i < nsinks; i++) {
		struct sink *s = &sinks[i];
		long nfd;

		if (s->kind == SINK_STDERR || atomic_load(&s->fd) != fd)
			continue;
		nfd = libfd_dup(fd);
		if (nfd >= 0)
			fdtab_set((int)nfd, FDT_LIB);
		atomic_store(&s->fd, (int)nfd);
		fdtab_set(fd, FDT_NONE);
		return true;
	}
	return false;
}
