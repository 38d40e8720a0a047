// SPDX-License-Identifier: MIT
/*
 * twshim exporter: Prometheus metrics from the counters each process keeps
 * in the stats directory (core/stats.c) and, with logs, the kernel's live
 * TIME_WAIT attributed through them (tools/tw.c). Served at /metrics with
 * libmicrohttpd, written as a node_exporter textfile, or printed once.
 *
 * Counters never go backwards while it runs: the file of a process that has
 * exited is read once more, added to totals kept in memory, and removed.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <libgen.h>
#include <limits.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <arpa/inet.h>
#include <unistd.h>
#include <sys/stat.h>

#include <microhttpd.h>

#include "config.h"
#include "defaults.h"
#include "record.h"
#include "stats.h"
#include "tool.h"

static const char exporter_usage[] =
	"usage: twshim exporter [--listen ADDR:PORT | --textfile PATH [--interval S]]\n"
	"                       [--stats DIR] [LOG...]\n"
	"\n"
	"Prometheus metrics from the counters the processes under twshim keep in the\n"
	"stats directory (the `stats` setting), and, with LOG files of close records,\n"
	"the kernel's TIME_WAIT sockets in this network namespace attributed to\n"
	"processes through them. Without --listen or --textfile the metrics are\n"
	"printed once on standard output.\n"
	"\n"
	"  -l, --listen ADDR:PORT  serve them over HTTP at /metrics (IPv6 as [::1]:9150)\n"
	"  -t, --textfile PATH     write them to PATH for node_exporter's textfile\n"
	"                          collector (a temporary file, then renamed)\n"
	"  -i, --interval S        with --textfile: write again every S seconds\n"
	"  -s, --stats DIR         the stats directory (default " TW_STATS_DIR_DEFAULT ")\n"
	"  -h, --help              this text\n"
	"\n"
	"While it serves or repeats, the files of processes that have exited are\n"
	"added to totals kept in memory and removed: no counter goes backwards.\n"
	"Run one exporter per stats directory.\n"
	"\n"
	"Exit status: 0, 1 when the address cannot be served or the textfile not\n"
	"written, 2 usage error.\n";

/* One series: "name{labels}" and its value. */
struct series {
	char *key;
	long long v;
};

/* Series added in any order; smap_merge() sorts them and adds up equal keys. */
struct smap {
	struct series *s;
	size_t n, cap;
};

static int smap_add(struct smap *m, const char *key, long long v)
{
	if (m->n == m->cap) {
		size_t cap = m->cap ? m->cap * 2 : 64;
		struct series *s = realloc(m->s, cap * sizeof(*s));

		if (!s)
			return -ENOMEM;
		m->s = s;
		m->cap = cap;
	}
	m->s[m->n].key = strdup(key);
	if (!m->s[m->n].key)
		return -ENOMEM;
	m->s[m->n++].v = v;
	return 0;
}

static int cmp_series(const void *a, const void *b)
{
	return strcmp(((const struct series *)a)->key, ((const struct series *)b)->key);
}

static void smap_merge(struct smap *m)
{
	size_t out = 0;

	if (!m->n)
		return;
	qsort(m->s, m->n, sizeof(*m->s), cmp_series);
	for (size_t i = 0; i < m->n; i++) {
		if (out && !strcmp(m->s[out - 1].key, m->s[i].key)) {
			m->s[out - 1].v += m->s[i].v;
			free(m->s[i].key);
			continue;
		}
		m->s[out++] = m->s[i];
	}
	m->n = out;
}

static void smap_free(struct smap *m)
{
	for (size_t i = 0; i < m->n; i++)
		free(m->s[i].key);
	free(m->s);
	memset(m, 0, sizeof(*m));
}

static int smap_copy(struct smap *dst, const struct smap *src)
{
	for (size_t i = 0; i < src->n; i++)
		if (smap_add(dst, src->s[i].key, src->s[i].v))
			return -ENOMEM;
	return 0;
}

/* The metric families, in the order they are written. */
static const struct family {
	const char *name, *type, *help;
} families[] = {
	{ "twshim_connections_total", "counter",
	  "TCP connections ended, by role, close policy applied, end and where TIME_WAIT landed" },
	{ "twshim_deferred_connections", "gauge", "Deferred connections in flight" },
	{ "twshim_defer_timeouts_total", "counter",
	  "Deferred connections ended by the fallback when defer_ms ran out" },
	{ "twshim_learned_fallbacks_total", "counter",
	  "Fallbacks applied at once to peers learned not to close in time" },
	{ "twshim_connect_waits_total", "counter",
	  "Connects that waited for a deferred connection to end (EADDRNOTAVAIL)" },
	{ "twshim_time_wait_sockets", "gauge",
	  "TIME_WAIT sockets in this network namespace now, attributed through the close records" },
	{ "twshim_time_wait_unattributed_sockets", "gauge",
	  "TIME_WAIT sockets in this network namespace now that no recent record accounts for" },
};

enum { F_CONNS, F_DEFERRED, F_TIMEOUTS, F_LEARNED, F_WAITS, F_TW, F_TW_UNATTR };

/*
 * A label value as the text format wants it: backslash, double quote and
 * newline escaped; other control bytes and bytes that are not ASCII become
 * '_' so that the value is valid UTF-8 whatever a process calls itself.
 */
static void label_value(char *out, size_t len, const char *in, size_t inlen)
{
	size_t o = 0;

	for (size_t i = 0; i < inlen && in[i] && o + 3 < len; i++) {
		unsigned char ch = (unsigned char)in[i];

		if (ch == '\\' || ch == '"') {
			out[o++] = '\\';
			out[o++] = (char)ch;
		} else if (ch == '\n') {
			out[o++] = '\\';
			out[o++] = 'n';
		} else {
			out[o++] = ch < 0x20 || ch >= 0x7f ? '_' : (char)ch;
		}
	}
	out[o] = 0;
}

/* name{comm="..."} */
static void comm_key(char *key, size_t len, int fam, const char *comm, size_t n)
{
	char c[2 * TW_COMM_MAX + 8];

	label_value(c, sizeof(c), comm, n);
	snprintf(key, len, "%s{comm=\"%s\"}", families[fam].name, c);
}

struct exporter {
	const char *dir;
	char **logs;
	int nlogs;
	bool keep;		/* printed once: dead processes' files stay for the next run */
	struct smap folded;	/* counters of processes that have exited */
	bool warned_dir;
};

/*
 * Adds the counters of one file to m; with gauges (a live process) its
 * deferred connections too. Every process's comm gets its per-comm series,
 * zero included.
 */
static int file_add(struct smap *m, const struct tw_stats_file *f, bool gauges)
{
	static const char *const roles[] = { "client", "server" };
	static const char *const ends[] = { "active", "passive", "abort", "reset" };
	char key[1024], comm[2 * TW_COMM_MAX + 8], arm[2 * TW_STATS_ARM_NAME + 16];
	size_t cl = strnlen(f->comm, sizeof(f->comm));
	int ret = 0;

	label_value(comm, sizeof(comm), f->comm, cl);
	for (unsigned r = 0; r < TW_STATS_ROLES; r++)
	for (unsigned p = 0; p < TW_STATS_POLICIES; p++)
	for (unsigned a = 0; a <= f->narms; a++)
	for (unsigned e = 0; e < TW_STATS_ENDS; e++) {
		uint64_t v = __atomic_load_n(&f->conns[r][p][a][e], __ATOMIC_RELAXED);

		if (!v)
			continue;
		arm[0] = 0;
		if (a) {
			char name[2 * TW_STATS_ARM_NAME + 8];

			label_value(name, sizeof(name), f->arms[a - 1],
				    strnlen(f->arms[a - 1], TW_STATS_ARM_NAME));
			snprintf(arm, sizeof(arm), ",arm=\"%s\"", name);
		}
		snprintf(key, sizeof(key),
			 "%s{comm=\"%s\",role=\"%s\",policy=\"%s\",end=\"%s\",tw=\"%s\"%s}",
			 families[F_CONNS].name, comm, roles[r], record_policy_name((int)p),
			 ends[e], record_where_name(record_where((enum tw_end)e)), arm);
		ret |= smap_add(m, key, (long long)v);
	}
	comm_key(key, sizeof(key), F_DEFERRED, f->comm, cl);
	ret |= smap_add(m, key, gauges ? __atomic_load_n(&f->deferred_now, __ATOMIC_RELAXED) : 0);
	comm_key(key, sizeof(key), F_TIMEOUTS, f->comm, cl);
	ret |= smap_add(m, key, (long long)f->defer_timeouts);
	comm_key(key, sizeof(key), F_LEARNED, f->comm, cl);
	ret |= smap_add(m, key, (long long)f->learned_fallbacks);
	comm_key(key, sizeof(key), F_WAITS, f->comm, cl);
	ret |= smap_add(m, key, (long long)f->connect_waits);
	return ret ? -ENOMEM : 0;
}

/* Whether the process that made f still runs: its pid, with the same start time. */
static bool alive(const struct tw_stats_file *f)
{
	uint64_t t = stats_start_ticks(f->pid);

	if (!f->start_ticks)
		return kill(f->pid, 0) == 0 || errno == EPERM;
	return t == f->start_ticks;
}

/* Reads one stats file whole; 0, or -errno (-EINVAL: not a complete file). */
static int file_read(int dfd, const char *name, struct tw_stats_file *f)
{
	int fd = openat(dfd, name, O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK);
	struct stat st;
	ssize_t n;

	if (fd < 0)
		return -errno;
	if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
		close(fd);
		return -EINVAL;
	}
	n = pread(fd, f, sizeof(*f), 0);
	close(fd);
	if (n < 0)
		return -errno;
	return stats_file_check(f, (size_t)n);
}

/*
 * The live processes' counters added to m; the files of processes that have
 * exited are added to ex->folded and removed (or, when ex->keep, added to m
 * and kept). Returns 0 or -errno.
 */
static int collect_stats(struct exporter *ex, struct smap *m)
{
	struct tw_stats_file *f = malloc(sizeof(*f));
	struct dirent *de;
	DIR *d;
	int ret = 0;

	if (!f)
		return -ENOMEM;
	d = opendir(ex->dir);
	if (!d) {
		ret = -errno;
		if (!ex->warned_dir)
			fprintf(stderr, "twshim exporter: %s: %s\n", ex->dir, strerror(-ret));
		ex->warned_dir = true;
		free(f);
		return ret == -ENOENT ? 0 : ret;
	}
	ex->warned_dir = false;
	while ((de = readdir(d))) {
		size_t len = strlen(de->d_name), sl = strlen(TW_STATS_SUFFIX);
		bool live;

		if (de->d_name[0] == '.' || len <= sl ||
		    strcmp(de->d_name + len - sl, TW_STATS_SUFFIX))
			continue;
		/* a process that ends after this look is read again at the next scrape */
		if (file_read(dirfd(d), de->d_name, f))
			continue;
		live = alive(f);
		if (live) {
			ret |= file_add(m, f, true);
		} else if (ex->keep) {
			ret |= file_add(m, f, false);
		} else {
			/* read again now that it is over: nothing can be added after this */
			if (file_read(dirfd(d), de->d_name, f) || file_add(&ex->folded, f, false))
				continue;
			if (unlinkat(dirfd(d), de->d_name, 0) < 0 && errno != ENOENT)
				fprintf(stderr, "twshim exporter: %s/%s: cannot remove: %s\n",
					ex->dir, de->d_name, strerror(errno));
		}
	}
	closedir(d);
	free(f);
	return ret ? -ENOMEM : 0;
}

/* TIME_WAIT now, per comm, through the logs. */
static int collect_tw(struct exporter *ex, struct smap *m)
{
	struct tw_attribution a;
	char key[512];
	int err, ret = 0;

	err = tw_attribute("twshim exporter", ex->logs, ex->nlogs, &a);
	if (err && err != -EIO) {
		tw_attribution_free(&a);
		return err;
	}
	for (size_t i = 0; i < a.nrows; i++) {
		comm_key(key, sizeof(key), F_TW, a.rows[i].key, strlen(a.rows[i].key));
		ret |= smap_add(m, key, (long long)a.rows[i].n);
	}
	ret |= smap_add(m, families[F_TW_UNATTR].name, (long long)(a.no_record + a.too_old));
	tw_attribution_free(&a);
	return ret ? -ENOMEM : 0;
}

/* The Prometheus text format (version 0.0.4) of m (merged), in a malloc'ed string. */
static char *render(const struct smap *m, size_t *len)
{
	char *buf = NULL;
	FILE *out = open_memstream(&buf, len);

	if (!out)
		return NULL;
	for (size_t fi = 0; fi < sizeof(families) / sizeof(families[0]); fi++) {
		const struct family *fam = &families[fi];
		size_t nl = strlen(fam->name);
		bool head = false;

		for (size_t i = 0; i < m->n; i++) {
			const char *key = m->s[i].key;

			if (strncmp(key, fam->name, nl) || (key[nl] && key[nl] != '{'))
				continue;
			if (!head)
				fprintf(out, "# HELP %s %s.\n# TYPE %s %s\n", fam->name, fam->help,
					fam->name, fam->type);
			head = true;
			fprintf(out, "%s %lld\n", key, m->s[i].v);
		}
	}
	if (fclose(out)) {
		free(buf);
		return NULL;
	}
	return buf;
}

/* One scrape: the metrics as text, or NULL (said on stderr). */
static char *scrape(struct exporter *ex, size_t *len)
{
	struct smap m = { 0 };
	char *text = NULL;

	/* the files of processes that exited since the last scrape are folded first */
	if (collect_stats(ex, &m) || smap_copy(&m, &ex->folded) ||
	    (ex->nlogs && collect_tw(ex, &m))) {
		fprintf(stderr, "twshim exporter: some metrics could not be gathered\n");
	} else {
		smap_merge(&ex->folded);
		smap_merge(&m);
		text = render(&m, len);
	}
	smap_free(&m);
	return text;
}

static enum MHD_Result serve(void *cls, struct MHD_Connection *conn, const char *url,
			     const char *method, const char *version, const char *data,
			     size_t *data_len, void **state)
{
	static const char notfound[] = "twshim exporter: the metrics are at /metrics\n";
	struct exporter *ex = cls;
	struct MHD_Response *resp;
	enum MHD_Result ret;
	unsigned status = MHD_HTTP_OK;
	size_t len = 0;
	char *text;

	(void)version;
	(void)data;
	(void)data_len;
	(void)state;
	if (strcmp(method, "GET") && strcmp(method, "HEAD")) {
		resp = MHD_create_response_from_buffer(0, (void *)"", MHD_RESPMEM_PERSISTENT);
		status = MHD_HTTP_METHOD_NOT_ALLOWED;
	} else if (strcmp(url, "/metrics")) {
		resp = MHD_create_response_from_buffer(sizeof(notfound) - 1, (void *)notfound,
						       MHD_RESPMEM_PERSISTENT);
		status = MHD_HTTP_NOT_FOUND;
	} else if ((text = scrape(ex, &len))) {
		resp = MHD_create_response_from_buffer(len, text, MHD_RESPMEM_MUST_FREE);
		MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE,
					"text/plain; version=0.0.4; charset=utf-8");
	} else {
		resp = MHD_create_response_from_buffer(0, (void *)"", MHD_RESPMEM_PERSISTENT);
		status = MHD_HTTP_INTERNAL_SERVER_ERROR;
	}
	if (!resp)
		return MHD_NO;
	ret = MHD_queue_response(conn, status, resp);
	MHD_destroy_response(resp);
	return ret;
}

/* Writes text to path through a temporary file in the same directory. */
static int write_textfile(const char *path, const char *text, size_t len)
{
	char tmp[PATH_MAX], dir[PATH_MAX], base[PATH_MAX];
	int fd, err = 0;
	ssize_t n;

	snprintf(dir, sizeof(dir), "%s", path);
	snprintf(base, sizeof(base), "%s", path);
	if ((size_t)snprintf(tmp, sizeof(tmp), "%s/.%s.%d.tmp", dirname(dir), basename(base),
			     (int)getpid()) >= sizeof(tmp))
		return -ENAMETOOLONG;
	fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC, 0644);
	if (fd < 0)
		return -errno;
	for (size_t off = 0; off < len; off += (size_t)n) {
		n = write(fd, text + off, len - off);
		if (n < 0 && errno == EINTR) {
			n = 0;
			continue;
		}
		if (n <= 0) {
			err = n < 0 ? -errno : -EIO;
			break;
		}
	}
	if (close(fd) < 0 && !err)
		err = -errno;
	if (!err && rename(tmp, path) < 0)
		err = -errno;
	if (err)
		unlink(tmp);
	return err;
}

static volatile sig_atomic_t stopping;

static void on_stop(int sig)
{
	(void)sig;
	stopping = 1;
}

static int run_http(struct exporter *ex, const char *listen)
{
	struct sockaddr_storage ss;
	struct tw_addr a;
	struct MHD_Daemon *d;
	struct sigaction sa = { .sa_handler = on_stop };
	unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_ERROR_LOG;

	if (endpoint_parse(listen, strlen(listen), &a) || !a.port)
		return usage_error("exporter", "--listen %s: expected ADDR:PORT", listen);
	addr_to_sockaddr6(&a, &ss);
	if (addr_is_v4(&a)) {
		struct sockaddr_in *in = (struct sockaddr_in *)&ss;

		memset(&ss, 0, sizeof(ss));
		in->sin_family = AF_INET;
		in->sin_port = htons(a.port);
		memcpy(&in->sin_addr, a.a + 12, 4);
	} else {
		flags |= MHD_USE_IPv6;
	}
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGINT, &sa, NULL);
	d = MHD_start_daemon(flags, a.port, NULL, NULL, serve, ex, MHD_OPTION_SOCK_ADDR, &ss,
			     MHD_OPTION_CONNECTION_TIMEOUT, 30u, MHD_OPTION_END);
	if (!d) {
		fprintf(stderr, "twshim exporter: cannot serve %s: %s\n", listen,
			strerror(errno ? errno : EADDRINUSE));
		return EXIT_FAIL;
	}
	fprintf(stderr, "twshim exporter: serving http://%s/metrics\n", listen);
	while (!stopping)
		pause();
	MHD_stop_daemon(d);
	return EXIT_OK;
}

static int run_textfile(struct exporter *ex, const char *path, long interval)
{
	struct sigaction sa = { .sa_handler = on_stop };
	int ret = EXIT_OK, err;

	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGINT, &sa, NULL);
	do {
		size_t len = 0;
		char *text = scrape(ex, &len);

		err = text ? write_textfile(path, text, len) : -EIO;
		free(text);
		if (err) {
			fprintf(stderr, "twshim exporter: %s: %s\n", path, strerror(-err));
			ret = EXIT_FAIL;
		}
		for (long s = 0; interval && s < interval && !stopping; s++)
			sleep(1);
	} while (interval && !stopping);
	return ret;
}

int cmd_exporter(int argc, char **argv)
{
	static const struct option longopts[] = {
		{ "listen", required_argument, NULL, 'l' },
		{ "textfile", required_argument, NULL, 't' },
		{ "interval", required_argument, NULL, 'i' },
		{ "stats", required_argument, NULL, 's' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	struct exporter ex = { .dir = TW_STATS_DIR_DEFAULT };
	const char *listen = NULL, *textfile = NULL;
	long interval = 0;
	char *end;
	int opt, ret;

	opterr = 0;
	optind = 1;
	while ((opt = getopt_long(argc, argv, "+l:t:i:s:h", longopts, NULL)) != -1) {
		switch (opt) {
		case 'l':
			listen = optarg;
			break;
		case 't':
			textfile = optarg;
			break;
		case 'i':
			errno = 0;
			interval = strtol(optarg, &end, 10);
			if (errno || *end || interval < 1 || interval > 86400)
				return usage_error("exporter", "--interval %s: expected seconds, "
						   "1 to 86400", optarg);
			break;
		case 's':
			ex.dir = optarg;
			break;
		case 'h':
			fputs(exporter_usage, stdout);
			return EXIT_OK;
		default:
			return usage_error("exporter", "%s: unknown option or missing argument",
					   argv[optind - 1]);
		}
	}
	if (listen && textfile)
		return usage_error("exporter", "--listen and --textfile exclude each other");
	if (interval && !textfile)
		return usage_error("exporter", "--interval goes with --textfile");
	if (!*ex.dir)
		return usage_error("exporter", "--stats: expected a directory");
	ex.logs = argv + optind;
	ex.nlogs = argc - optind;
	ex.keep = !listen && !interval;

	if (listen) {
		ret = run_http(&ex, listen);
	} else if (textfile) {
		ret = run_textfile(&ex, textfile, interval);
	} else {
		size_t len = 0;
		char *text = scrape(&ex, &len);

		ret = text && fwrite(text, 1, len, stdout) == len && !fflush(stdout) ?
		      EXIT_OK : EXIT_FAIL;
		free(text);
	}
	smap_free(&ex.folded);
	return ret;
}
