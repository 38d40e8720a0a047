// SPDX-License-Identifier: MIT
/*
 * log=syslog: one datagram a record to /dev/log, the JSON line after the
 * "<14>twshim[pid]: " header. /dev/log is faked inside a private mount
 * namespace (a tmpfs over /dev holding the socket and /dev/null), so the
 * machine's /dev is never touched.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <sched.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <criterion/criterion.h>

#include "lab.h"

/* a tmpfs over /dev with only null and log in it; returns the log socket */
static int fake_dev_log(void)
{
	const char *keep = lab_path("dev-null");
	struct sockaddr_un sun = { .sun_family = AF_UNIX, .sun_path = "/dev/log" };
	int fd;

	if (unshare(CLONE_NEWNS) < 0)
		cr_skip_test("no mount namespace here: %s", strerror(errno));
	cr_assert_eq(mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL), 0, "%s", strerror(errno));
	close(open(keep, O_CREAT | O_WRONLY, 0666));
	cr_assert_eq(mount("/dev/null", keep, NULL, MS_BIND, NULL), 0, "%s", strerror(errno));
	cr_assert_eq(mount("tmpfs", "/dev", "tmpfs", 0, "mode=755"), 0, "%s", strerror(errno));
	close(open("/dev/null", O_CREAT | O_WRONLY, 0666));
	cr_assert_eq(mount(keep, "/dev/null", NULL, MS_BIND, NULL), 0, "%s", strerror(errno));
	fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	cr_assert_geq(fd, 0);
	cr_assert_eq(bind(fd, (struct sockaddr *)&sun, sizeof(sun)), 0, "%s", strerror(errno));
	chmod("/dev/log", 0666);
	return fd;
}

Test(syslog, each_record_is_one_datagram_to_dev_log, .timeout = 30)
{
	struct lab_proc *s, *c;
	char msg[4096], want[64];
	json_t *recs = json_array();
	int log, port, n = 0;

	lab_enter(100);
	log = fake_dev_log();
	port = lab_port();
	s = lab_start_server("server", NULL, lab_example("tw-server"), "-l", lab_addr4(port),
			     "-n", "5", "--close", "last", NULL);
	c = lab_run("client", lab_traced("syslog", NULL), 10000, lab_example("tw-client"), "-n",
		    "5", lab_addr4(port), NULL);
	cr_assert_eq(lab_exit_code(c), 0, "%s%s", lab_stdout(c), lab_stderr(c));
	lab_wait(s, 5000);
	snprintf(want, sizeof(want), "<14>twshim[%d]: ", c->pid);
	while (n < 10) {
		struct pollfd p = { .fd = log, .events = POLLIN };
		ssize_t len;
		json_error_t err;
		json_t *r;

		if (poll(&p, 1, 500) <= 0)
			break;
		len = recv(log, msg, sizeof(msg) - 1, 0);
		cr_assert_gt(len, 0);
		msg[len] = 0;
		n++;
		cr_assert_eq(strncmp(msg, want, strlen(want)), 0, "header: %s", msg);
		cr_assert_neq(msg[len - 1], '\n', "a datagram carries no newline: %s", msg);
		r = json_loads(msg + strlen(want), 0, &err);
		cr_assert_not_null(r, "not one JSON record (%s): %s", err.text, msg);
		json_array_append_new(recs, r);
	}
	cr_assert_eq(n, 5, "datagrams: %d", n);
	lab_records_check(recs);
	lab_rec_assert_all(recs, "", lab_fmt("pid=%d,role=client,end=active,tw=local", c->pid));
	json_decref(recs);
}
