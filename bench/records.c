// SPDX-License-Identifier: MIT
/*
 * records: how fast close records reach one log file from many threads, and
 * what one costs. Links the runtime archive and calls its record writer
 * (conn_record: format one JSON line, one write() with O_APPEND) directly.
 *
 *   records record THREADS DURATION_MS FILE   conn_record() in a loop
 *   records raw THREADS DURATION_MS FILE      write() of the same line, formatted once
 *   records record|raw 0 COUNT FILE           COUNT records on the main thread,
 *                                             each inside bench_record_one() (callgrind)
 *   records format 0 COUNT FILE               record_format() alone, COUNT times
 *                                             (callgrind; FILE is left empty)
 *
 * Afterwards reads FILE back and checks that it holds exactly the records
 * written, each one whole line. Prints
 * "records=N threads=T elapsed_ms=T rate=R line_bytes=B bad_lines=N".
 */
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "bench.h"

#include "config.h"
#include "record.h"
#include "runtime.h"

static struct tw_conn tmpl;
static struct tw_record rec;
static char line[TW_RECORD_MAX];
static size_t line_len;
static int raw_fd = -1;
static enum { RECORD, RAW, FORMAT } mode;
static atomic_bool stop;
static atomic_long total;

/* one record; the function callgrind collects in (see the Makefile) */
__attribute__((noinline)) void bench_record_one(struct tw_conn *c);

void bench_record_one(struct tw_conn *c)
{
	char buf[TW_RECORD_MAX];

	switch (mode) {
	case RAW:
		if (write(raw_fd, line, line_len) != (ssize_t)line_len)
			abort();
		break;
	case FORMAT:
		if (record_format(buf, sizeof(buf), &rec) != line_len)
			abort();
		break;
	case RECORD:
		conn_record(c, TW_END_ACTIVE, false, 0);
		break;
	}
}

static void *worker(void *arg)
{
	struct tw_conn c = tmpl;
	long n = 0;

	(void)arg;
	while (!atomic_load_explicit(&stop, memory_order_relaxed)) {
		bench_record_one(&c);
		n++;
	}
	atomic_fetch_add(&total, n);
	return NULL;
}

/* a client connection 127.0.0.1:40123 -> 127.0.0.1:9000, as a close would leave it */
static int setup(const char *file)
{
	struct sockaddr_in local = { .sin_family = AF_INET, .sin_port = htons(40123),
				     .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	struct sockaddr_in remote = { .sin_family = AF_INET, .sin_port = htons(9000),
				      .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	char opts[4200], err[512];
	struct conf_source src = { .comm = "records", .options = opts };
	struct tw_record r;
	int ret;

	if (mode == FORMAT)
		file = "none";

	snprintf(opts, sizeof(opts), "log=%s", file);
	ret = conf_load(&rt.conf, &src, err, sizeof(err));
	if (ret < 0) {
		fprintf(stderr, "records: %s\n", err);
		return ret;
	}
	rt.pid = getpid();
	strcpy(rt.comm, "records");
	sink_open_all(rt.conf);
	addr_from_sockaddr(&tmpl.local, (struct sockaddr *)&local, sizeof(local));
	addr_from_sockaddr(&tmpl.remote, (struct sockaddr *)&remote, sizeof(remote));
	conf_resolve(rt.conf, TW_ROLE_CLIENT, (struct sockaddr *)&remote, sizeof(remote), 9000, 0,
		     &tmpl.pol);
	tmpl.t_close_ns = clock_mono_ns();
	tmpl.t_open_ns = tmpl.t_close_ns - 1234567;
	tmpl.state = TW_ESTABLISHED;
	tmpl.mode = TW_CLOSE_NORMAL;
	tmpl.via = TW_VIA_CLOSE;
	tmpl.bytes_acked = 17;
	tmpl.bytes_received = 65;
	tmpl.fd = 7;
	tmpl.libfd = -1;

	/* the same line, formatted once, for the raw writes */
	memset(&r, 0, sizeof(r));
	r.ts_us = clock_real_us();
	r.pid = rt.pid;
	r.comm = rt.comm;
	r.role = TW_ROLE_CLIENT;
	r.state = TW_ESTABLISHED;
	r.end = TW_END_ACTIVE;
	r.via = TW_VIA_CLOSE;
	r.local = tmpl.local;
	r.remote = tmpl.remote;
	r.dur_us = 1234;
	r.bytes_acked = 17;
	r.bytes_received = 65;
	r.fd = 7;
	line_len = record_format(line, sizeof(line), &r);
	rec = r;
	if (mode == RAW) {
		raw_fd = open(file, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
		if (raw_fd < 0) {
			perror("records: open");
			return -errno;
		}
	}
	return 0;
}

/* lines in file that are not one whole record; -1 if it cannot be read */
static long check_file(const char *file, long expect)
{
	FILE *f = fopen(file, "re");
	char buf[TW_RECORD_MAX + 2];
	long n = 0, bad = 0;

	if (!f)
		return -1;
	while (fgets(buf, sizeof(buf), f)) {
		size_t l = strlen(buf);

		n++;
		if (strncmp(buf, "{\"ts\":", 6) || l < 2 || buf[l - 1] != '\n' || buf[l - 2] != '}')
			bad++;
	}
	fclose(f);
	return bad + (n > expect ? n - expect : expect - n);
}

int main(int argc, char **argv)
{
	pthread_t tids[64];
	int threads;
	long arg;
	uint64_t t0, t1;

	if (argc != 5 || (strcmp(argv[1], "record") && strcmp(argv[1], "raw") &&
			  strcmp(argv[1], "format")) ||
	    (threads = atoi(argv[2])) < 0 || threads > 64 || (arg = atol(argv[3])) <= 0) {
		fprintf(stderr, "usage: records record|raw|format THREADS DURATION_MS|COUNT FILE\n");
		return 2;
	}
	mode = !strcmp(argv[1], "raw") ? RAW : !strcmp(argv[1], "format") ? FORMAT : RECORD;
	unlink(argv[4]);
	if (setup(argv[4]) < 0)
		return 1;
	t0 = now_ns();
	if (!threads) {
		struct tw_conn c = tmpl;

		for (long i = 0; i < arg; i++)
			bench_record_one(&c);
		total = arg;
	} else {
		for (int i = 0; i < threads; i++)
			if (pthread_create(&tids[i], NULL, worker, NULL)) {
				perror("records: pthread_create");
				return 1;
			}
		usleep((useconds_t)arg * 1000);
		atomic_store(&stop, true);
		for (int i = 0; i < threads; i++)
			pthread_join(tids[i], NULL);
	}
	t1 = now_ns();
	printf("records=%ld threads=%d elapsed_ms=%.1f rate=%.0f line_bytes=%zu bad_lines=%ld\n",
	       (long)total, threads, (double)(t1 - t0) / 1e6,
	       (double)total * 1e9 / (double)(t1 - t0), line_len,
	       mode == FORMAT ? 0 : check_file(argv[4], total));
	unlink(argv[4]);
	return 0;
}
