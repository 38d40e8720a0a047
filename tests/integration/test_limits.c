// SPDX-License-Identifier: MIT
/*
 * What defer does when it cannot: no fd left for the library's copy of the
 * socket. The fallback is applied at once, the record says why, and the
 * program notices nothing.
 */
#include <criterion/criterion.h>

#include "lab.h"

/*
 * The client may hold 72 fds (soft limit) and the library 8 more above them
 * (hard limit 80), where the log, the closer and the netlink socket take
 * four, so only a few connections can be deferred at once. The server
 * closes each connection half a second after replying, so the client's
 * deferred copies pile up; the ones that find no fd fall back to a normal
 * close.
 */
Test(limits, defer_without_a_free_fd_falls_back_at_once_and_says_why, .timeout = 60)
{
	const char *log;
	struct lab_proc *s, *c;
	struct lab_tw tw;
	json_t *recs;
	size_t nofd, deferred;
	int port;

	lab_enter(1000);
	log = lab_path("client.jsonl");
	port = lab_port();
	s = lab_start_server("server", NULL, lab_example("tw-server"), "-l", lab_addr4(port),
			     "-n", "20", "--threads", "32", "--close-delay", "500", NULL);
	c = lab_run("client", lab_traced(log, "close=defer,defer_ms=5000"), 20000, "/bin/sh",
		    "-c", "ulimit -Sn 72 && ulimit -Hn 80 && exec \"$0\" \"$@\"", lab_example("tw-client"), "-n",
		    "20", lab_addr4(port), NULL);
	cr_assert_eq(lab_exit_code(c), 0, "the client noticed: %s", lab_stdout(c));
	cr_assert_eq(lab_value_long(lab_stdout(c), "ok"), 20, "%s", lab_stdout(c));
	lab_wait(s, 10000);

	recs = lab_records_wait_expect(log, 20, NULL, 10000);
	nofd = lab_rec_count(recs, "why=no_fd");
	deferred = lab_rec_count(recs, "policy=defer");
	cr_assert_gt(nofd, 0, "every connection found an fd: %s", lab_rec_summary(recs));
	cr_assert_gt(deferred, 0, "no connection was deferred: %s", lab_rec_summary(recs));
	cr_assert_eq(nofd + deferred, 20, "%s", lab_rec_summary(recs));
	/* the fallback (normal) now: the client closed first, TIME_WAIT stays here */
	lab_rec_assert_all(recs, "why=no_fd", "policy=normal,end=active,tw=local,!deferred_ms");
	lab_rec_assert_all(recs, "policy=defer", "end=passive,tw=peer,deferred_ms,!why");
	lab_tw_count(&tw, port);
	cr_assert_eq(tw.client, (long)nofd, "kernel: %ld client-side TIME_WAIT, records: %zu",
		     tw.client, nofd);
	json_decref(recs);
}
