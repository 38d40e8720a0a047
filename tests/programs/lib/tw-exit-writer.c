// SPDX-License-Identifier: MIT
/*
 * tw-exit-writer: a shared library with an exit handler that writes its last
 * words on a connection and closes it, as a client library's destructor
 * does, or (armed to read) reads from it first, as one that drains it does
 * (armed to read late: after 300 ms). tw-scenario's exit_handler_in_library
 * loads it with dlopen(), so
 * its destructor runs after those of the libraries loaded before it (the
 * preload library among them). Built by the differential test:
 *   cc -shared -fPIC -o tw-exit-writer.so tw-exit-writer.c
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

static int fd = -1;
static int reads;

__attribute__((visibility("default"))) void tw_exit_writer_arm(int conn);
__attribute__((visibility("default"))) void tw_exit_reader_arm(int conn);
__attribute__((visibility("default"))) void tw_exit_late_reader_arm(int conn);

void tw_exit_writer_arm(int conn)
{
	fd = conn;
}

void tw_exit_reader_arm(int conn)
{
	fd = conn;
	reads = 1;
}

/* reads only 300 ms into the handler: what arrives meanwhile waits for it */
void tw_exit_late_reader_arm(int conn)
{
	fd = conn;
	reads = 2;
}

/* one transcript line, as tw-scenario prints them: "= N" or "= -1 ENAME" */
static void say(const char *what, long ret, int err)
{
	char buf[128];
	int n;

	if (ret < 0)
		n = snprintf(buf, sizeof(buf), "%s = -1 %s\n", what, strerrorname_np(err));
	else
		n = snprintf(buf, sizeof(buf), "%s = %ld\n", what, ret);
	if (n > 0 && write(1, buf, (size_t)n) < 0)
		return;
}

__attribute__((destructor)) static void last_words(void)
{
	long r;

	char c;

	if (fd < 0)
		return;
	if (reads == 2)
		usleep(300000);
	if (reads) {
		r = recv(fd, &c, 1, 0);
		say("exit handler in a library: recv", r, errno);
	}
	r = send(fd, "bye\n", 4, MSG_NOSIGNAL);
	say("exit handler in a library: send bye", r, errno);
	r = close(fd);
	say("exit handler in a library: close", r, errno);
}
