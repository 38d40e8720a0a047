// SPDX-License-Identifier: MIT
/*
 * twshim enable, disable, status: the library preloaded into one systemd
 * service through a drop-in, /etc/systemd/system/UNIT.d/twshim.conf.
 *
 * The drop-in holds Environment= lines only: LD_PRELOAD (the library first,
 * then what the unit's own files already put there), and TWSHIM_CONFIG and
 * TWSHIM_OPTIONS when given. The unit's files are read the way systemd reads
 * them (systemd.unit(5): the unit path, then the drop-ins of the unit and of
 * its template, in the order of their file names), so that nothing depends
 * on a running systemd and --root works as with systemctl.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "config.h"
#include "defaults.h"
#include "tool.h"

#define DROPIN_NAME	"twshim.conf"
/* the first line of every drop-in twshim writes; disable removes no other file */
#define DROPIN_MARK	"# Written by twshim enable"
#define UNIT_CONF_DIR	"/etc/systemd/system"
/* systemd's UNIT_NAME_MAX, with the terminating NUL */
#define UNIT_NAME_LEN	256
#define ENV_LINE_MAX	8192

static const char enable_usage[] =
	"usage: twshim enable UNIT [-c FILE] [-o KEY=VAL[,KEY=VAL...]] [--now] [--root DIR]\n"
	"\n"
	"Preloads libtwshim.so into the systemd service UNIT (\".service\" is added\n"
	"when UNIT has no suffix) with a drop-in, " UNIT_CONF_DIR "/UNIT.d/" DROPIN_NAME ":\n"
	"LD_PRELOAD (keeping what the unit already preloads) and the settings given,\n"
	"which are checked first. The unit must be restarted for it to take effect.\n"
	"\n"
	"  -c, --config FILE     libconfig file for TWSHIM_CONFIG ('' reads no file,\n"
	"                        not even /etc/twshim.conf)\n"
	"  -o, --options LIST    comma-separated KEY=VAL policy settings for\n"
	"                        TWSHIM_OPTIONS; may be given more than once\n"
	"      --now             then systemctl daemon-reload and restart UNIT\n"
	"      --root DIR        work on the unit files under DIR, as systemctl --root\n"
	"  -h, --help            this text\n"
	"\n"
	"Example: twshim enable nginx -o close=defer,log=/var/log/twshim/%n.jsonl\n";

static const char disable_usage[] =
	"usage: twshim disable UNIT [--now] [--root DIR]\n"
	"\n"
	"Removes the drop-in that 'twshim enable' wrote for UNIT, and nothing else.\n"
	"The unit must be restarted for it to take effect.\n"
	"\n"
	"      --now             then systemctl daemon-reload and try-restart UNIT\n"
	"      --root DIR        work on the unit files under DIR, as systemctl --root\n"
	"  -h, --help            this text\n";

static const char status_usage[] =
	"usage: twshim status [UNIT] [--root DIR]\n"
	"\n"
	"Lists the units that have a drop-in from 'twshim enable' (or says whether\n"
	"UNIT has one): the library, the settings, and whether the running service\n"
	"has the library loaded (when systemd runs). Exit status 1 when UNIT has none.\n"
	"\n"
	"      --root DIR        look at the unit files under DIR, as systemctl --root\n"
	"  -h, --help            this text\n";

/* The system unit search path, highest priority first (systemd.unit(5)). */
static const char *const unit_path[] = {
	"/etc/systemd/system", "/run/systemd/transient", "/run/systemd/generator.early",
	"/run/systemd/system", "/run/systemd/generator", "/usr/local/lib/systemd/system",
	"/usr/lib/systemd/system", "/lib/systemd/system", "/run/systemd/generator.late",
};

static const char *const other_suffixes[] = {
	".socket", ".device", ".mount", ".automount", ".swap", ".target", ".path", ".timer",
	".slice", ".scope",
};

/* What the unit's files and our drop-in say about the environment. */
struct unit_env {
	char *preload;		/* LD_PRELOAD as written, or NULL */
	char *config;		/* TWSHIM_CONFIG, or NULL */
	char *options;		/* TWSHIM_OPTIONS, or NULL */
	bool env_file;		/* an EnvironmentFile= line was seen */
};

static void unit_env_free(struct unit_env *e)
{
	free(e->preload);
	free(e->config);
	free(e->options);
	memset(e, 0, sizeof(*e));
}

static bool ends_with(const char *s, const char *suffix)
{
	size_t n = strlen(s), m = strlen(suffix);

	return n >= m && !strcmp(s + n - m, suffix);
}

/*
 * A systemd unit name from what the user typed: the characters systemd
 * allows (systemd.unit(5): ASCII letters, digits, ":", "-", "_", ".", "\",
 * one "@" for an instance), no "..", and a .service suffix, added when there
 * is none. 0, or -EINVAL after a message.
 */
static int unit_name_normalize(const char *cmd, const char *in, char *out, size_t len)
{
	const char *at = strchr(in, '@');
	size_t n = strlen(in);

	if (!n || in[0] == '.' || in[0] == '@' || strstr(in, "..") ||
	    (at && strchr(at + 1, '@')) ||
	    strspn(in, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789:-_.\\@") != n)
		return usage_error(cmd, "'%s' is not a unit name", in), -EINVAL;
	for (size_t i = 0; i < sizeof(other_suffixes) / sizeof(other_suffixes[0]); i++)
		if (ends_with(in, other_suffixes[i]))
			return usage_error(cmd, "%s: not a service: the library is preloaded into "
					   ".service units", in), -EINVAL;
	if (snprintf(out, len, "%s%s", in, ends_with(in, ".service") ? "" : ".service") >=
	    (int)len)
		return usage_error(cmd, "%s: unit name too long", in), -EINVAL;
	if (!strcmp(out, ".service") || (at && at == in))
		return usage_error(cmd, "'%s' is not a unit name", in), -EINVAL;
	return 0;
}

/* "foo@bar.service" -> "foo@.service" in out; false when name is no instance */
static bool unit_template(const char *name, char *out, size_t len)
{
	const char *at = strchr(name, '@'), *dot = strrchr(name, '.');

	if (!at || !dot || dot == at + 1)
		return false;
	snprintf(out, len, "%.*s%s", (int)(at - name + 1), name, dot);
	return true;
}

static int set_str(char **dst, const char *val)
{
	char *n = val ? strdup(val) : NULL;

	if (val && !n)
		return -ENOMEM;
	free(*dst);
	*dst = n;
	return 0;
}

/*
 * One word of an Environment= value, as systemd splits it: blanks separate
 * words, "..." and '...' quote, a backslash escapes the next character
 * (\n and \t as in C). Advances *p; false at the end.
 */
static bool env_word(const char **p, char *out, size_t len)
{
	const char *s = *p;
	size_t n = 0;
	char q = 0;

	while (*s == ' ' || *s == '\t')
		s++;
	if (!*s)
		return false;
	for (; *s && (q || (*s != ' ' && *s != '\t')); s++) {
		char ch = *s;

		if (q && ch == q) {
			q = 0;
			continue;
		}
		if (!q && (ch == '"' || ch == '\'')) {
			q = ch;
			continue;
		}
		if (ch == '\\' && s[1]) {
			ch = *++s;
			ch = ch == 'n' ? '\n' : ch == 't' ? '\t' : ch;
		}
		if (n + 1 < len)
			out[n++] = ch;
	}
	out[n] = '\0';
	*p = s;
	return true;
}

/* The Environment= assignments of a [Service] section value. */
static int env_assignments(struct unit_env *e, const char *value)
{
	static const struct {
		const char *name;
		size_t off;
	} names[] = {
		{ "LD_PRELOAD=", offsetof(struct unit_env, preload) },
		{ TW_ENV_CONFIG "=", offsetof(struct unit_env, config) },
		{ TW_ENV_OPTIONS "=", offsetof(struct unit_env, options) },
	};
	char word[ENV_LINE_MAX];
	const char *p = value;
	int ret;

	/* an empty Environment= drops every assignment made before it */
	if (!*value) {
		bool env_file = e->env_file;

		unit_env_free(e);
		e->env_file = env_file;
		return 0;
	}
	while (env_word(&p, word, sizeof(word)))
		for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
			if (!strncmp(word, names[i].name, strlen(names[i].name))) {
				ret = set_str((char **)((char *)e + names[i].off),
					      word + strlen(names[i].name));
				if (ret)
					return ret;
			}
	return 0;
}

/*
 * Reads one unit file or drop-in into e: the Environment= and
 * EnvironmentFile= lines of its [Service] section, with systemd's comments
 * (# and ;) and line continuations (a backslash at the end). A file that
 * cannot be opened adds nothing. 0 or -ENOMEM.
 */
static int unit_file_read(const char *path, struct unit_env *e)
{
	char line[ENV_LINE_MAX], logical[ENV_LINE_MAX];
	bool service = false, cont = false;
	size_t n = 0;
	FILE *f;
	int ret = 0;

	f = fopen(path, "re");
	if (!f)
		return 0;
	while (!ret && fgets(line, sizeof(line), f)) {
		size_t len = strcspn(line, "\r\n");
		const char *s = line;

		line[len] = '\0';
		if (!cont) {
			while (*s == ' ' || *s == '\t')
				s++;
			if (*s == '#' || *s == ';')
				continue;
			n = 0;
		}
		cont = len && line[len - 1] == '\\';
		if (cont)
			line[--len] = ' ';
		n += (size_t)snprintf(logical + n, sizeof(logical) - n, "%s", s);
		if (n >= sizeof(logical))
			n = sizeof(logical) - 1;
		if (cont)
			continue;
		if (logical[0] == '[') {
			service = !strncmp(logical, "[Service]", 9);
			continue;
		}
		if (!service)
			continue;
		if (!strncmp(logical, "EnvironmentFile", 15))
			e->env_file = true;
		else if (!strncmp(logical, "Environment", 11)) {
			const char *v = logical + 11;

			while (*v == ' ' || *v == '\t')
				v++;
			if (*v++ != '=')
				continue;
			while (*v == ' ' || *v == '\t')
				v++;
			ret = env_assignments(e, v);
		}
	}
	fclose(f);
	return ret;
}

static const char *rooted(const char *root, const char *path, char *buf, size_t len)
{
	snprintf(buf, len, "%s%s", root, path);
	return buf;
}

struct dropin {
	char name[NAME_MAX + 1];
	char path[PATH_MAX];
};

static int dropin_cmp(const void *a, const void *b)
{
	return strcmp(((const struct dropin *)a)->name, ((const struct dropin *)b)->name);
}

/* Adds the *.conf files of dir to list, unless a file of that name is there already. */
static int dropins_add(const char *dir, const char *skip, struct dropin **list, size_t *n)
{
	struct dirent *de;
	DIR *d = opendir(dir);
	int ret = 0;

	if (!d)
		return 0;
	while (!ret && (de = readdir(d))) {
		struct dropin *grown;
		char path[PATH_MAX];
		size_t i;

		if (de->d_name[0] == '.' || !ends_with(de->d_name, ".conf"))
			continue;
		if (snprintf(path, sizeof(path), "%s/%s", dir, de->d_name) >= (int)sizeof(path) ||
		    (skip && !strcmp(path, skip)))
			continue;
		for (i = 0; i < *n && strcmp((*list)[i].name, de->d_name); i++)
			;
		if (i < *n)
			continue;
		grown = realloc(*list, (*n + 1) * sizeof(**list));
		if (!grown) {
			ret = -ENOMEM;
			break;
		}
		*list = grown;
		snprintf(grown[*n].name, sizeof(grown[*n].name), "%s", de->d_name);
		snprintf(grown[*n].path, sizeof(grown[*n].path), "%s", path);
		(*n)++;
	}
	closedir(d);
	return ret;
}

/*
 * The environment the unit's files give it, our own drop-in left out: the
 * first unit file found on the path (for an instance, its template's), then
 * every drop-in of the unit and its template, sorted by file name, the
 * higher-priority directory winning for one name. 0; -ENOENT when no unit
 * file was found; -ENOMEM.
 */
static int unit_env_read(const char *root, const char *unit, struct unit_env *e)
{
	char tmpl[UNIT_NAME_LEN], path[PATH_MAX], own[PATH_MAX];
	const char *names[2] = { unit, NULL };
	struct dropin *list = NULL;
	bool found = false;
	size_t n = 0;
	int ret = 0;

	if (unit_template(unit, tmpl, sizeof(tmpl)))
		names[1] = tmpl;
	for (size_t k = 0; k < 2 && names[k] && !found; k++)
		for (size_t i = 0; i < sizeof(unit_path) / sizeof(unit_path[0]) && !found; i++) {
			snprintf(path, sizeof(path), "%s%s/%s", root, unit_path[i], names[k]);
			if (access(path, F_OK) == 0) {
				found = true;
				ret = unit_file_read(path, e);
			}
		}
	if (!found)
		return -ENOENT;
	snprintf(own, sizeof(own), "%s" UNIT_CONF_DIR "/%s.d/" DROPIN_NAME, root, unit);
	for (size_t i = 0; !ret && i < sizeof(unit_path) / sizeof(unit_path[0]); i++)
		for (size_t k = 0; !ret && k < 2 && names[k]; k++) {
			snprintf(path, sizeof(path), "%s%s/%s.d", root, unit_path[i], names[k]);
			ret = dropins_add(path, own, &list, &n);
		}
	if (n)
		qsort(list, n, sizeof(*list), dropin_cmp);
	for (size_t i = 0; !ret && i < n; i++)
		ret = unit_file_read(list[i].path, e);
	free(list);
	return ret;
}

/*
 * v as one quoted word of an Environment= line: backslash and double quote
 * escaped, and "%" doubled unless it is a specifier the unit wrote itself.
 */
static void env_quote(FILE *f, const char *v, bool specifiers)
{
	for (; *v; v++) {
		if (*v == '\\' || *v == '"')
			fputc('\\', f);
		else if (*v == '%' && !specifiers)
			fputc('%', f);
		fputc(*v, f);
	}
}

static bool has_control(const char *s)
{
	for (; s && *s; s++)
		if ((unsigned char)*s < 0x20 || *s == 0x7f)
			return true;
	return false;
}

/* ld.so splits LD_PRELOAD at spaces and colons */
static bool preload_sep(char ch)
{
	return ch == ':' || ch == ' ';
}

/*
 * The drop-in's text in buf: the library first, then the entries of the
 * unit's own LD_PRELOAD that are not a libtwshim.so. NULL config or options:
 * not set. 0, or -ENOMEM.
 */
static int dropin_text(const char *unit, const char *lib, const char *old, const char *config,
		       const char *options, char **buf)
{
	size_t len = 0;
	FILE *f = open_memstream(buf, &len);

	if (!f)
		return -ENOMEM;
	fprintf(f, DROPIN_MARK "; 'twshim disable %s' removes it.\n"
		   "# Restart the unit for a change to take effect.\n"
		   "[Service]\n"
		   "Environment=\"LD_PRELOAD=", unit);
	env_quote(f, lib, false);
	for (const char *p = old; p && *p;) {
		size_t n = 0;
		const char *base;

		while (preload_sep(*p))
			p++;
		while (p[n] && !preload_sep(p[n]))
			n++;
		if (!n)
			break;
		base = memrchr(p, '/', n);
		base = base ? base + 1 : p;
		if ((size_t)(p + n - base) != strlen(TW_LIB_NAME) ||
		    strncmp(base, TW_LIB_NAME, strlen(TW_LIB_NAME))) {
			char entry[PATH_MAX];

			snprintf(entry, sizeof(entry), ":%.*s", (int)n, p);
			env_quote(f, entry, true);
		}
		p += n;
	}
	fputs("\"\n", f);
	if (config) {
		fputs("Environment=\"" TW_ENV_CONFIG "=", f);
		env_quote(f, config, false);
		fputs("\"\n", f);
	}
	if (options) {
		fputs("Environment=\"" TW_ENV_OPTIONS "=", f);
		env_quote(f, options, false);
		fputs("\"\n", f);
	}
	return fclose(f) ? -ENOMEM : 0;
}

/* true when the drop-in at dirfd/DROPIN_NAME is a regular file that twshim wrote */
static bool dropin_ours(int dirfd)
{
	char head[sizeof(DROPIN_MARK)];
	int fd = openat(dirfd, DROPIN_NAME, O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK);
	struct stat st;
	bool ours;

	if (fd < 0)
		return false;
	ours = fstat(fd, &st) == 0 && S_ISREG(st.st_mode) &&
	       read(fd, head, sizeof(head) - 1) == (ssize_t)sizeof(head) - 1 &&
	       !memcmp(head, DROPIN_MARK, sizeof(head) - 1);
	close(fd);
	return ours;
}

/*
 * Opens ROOT/etc/systemd/system/UNIT.d without following a symbolic link
 * at its last step (creating it, with create). The fd, or -errno after a
 * message.
 */
static int dropin_dir_open(const char *cmd, const char *root, const char *unit, bool create)
{
	char path[PATH_MAX], sub[UNIT_NAME_LEN + 2];
	int base, fd;

	rooted(root, UNIT_CONF_DIR, path, sizeof(path));
	snprintf(sub, sizeof(sub), "%s.d", unit);
	base = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (base < 0 && create && errno == ENOENT && *root) {
		fprintf(stderr, "twshim %s: %s: no such directory under --root\n", cmd, path);
		return -ENOENT;
	}
	if (base < 0) {
		fd = -errno;
		if (fd != -ENOENT || create)
			fprintf(stderr, "twshim %s: %s: %s\n", cmd, path, strerror(errno));
		return fd;
	}
	if (create && mkdirat(base, sub, 0755) && errno != EEXIST) {
		fd = -errno;
		fprintf(stderr, "twshim %s: %s/%s: %s\n", cmd, path, sub, strerror(errno));
		close(base);
		return fd;
	}
	fd = openat(base, sub, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0) {
		int err = errno;

		/* O_NOFOLLOW on a symbolic link: ELOOP, or ENOTDIR with O_DIRECTORY */
		if (err == ELOOP || err == ENOTDIR)
			fprintf(stderr, "twshim %s: %s/%s is not a directory (a symbolic link?): "
				"left alone\n", cmd, path, sub);
		else if (err != ENOENT || create)
			fprintf(stderr, "twshim %s: %s/%s: %s\n", cmd, path, sub, strerror(err));
		fd = -err;
	}
	close(base);
	return fd;
}

/* Writes text to dirfd/DROPIN_NAME through a temporary file and a rename. 0 or -errno. */
static int dropin_write(int dirfd, const char *text)
{
	char tmp[64];
	size_t len = strlen(text), off = 0;
	int fd, ret = 0;

	for (int tries = 0;; tries++) {
		snprintf(tmp, sizeof(tmp), "." DROPIN_NAME ".%ld.%d", (long)getpid(), tries);
		fd = openat(dirfd, tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0644);
		if (fd >= 0 || errno != EEXIST || tries >= 100)
			break;
	}
	if (fd < 0)
		return -errno;
	while (off < len) {
		ssize_t n = write(fd, text + off, len - off);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			ret = n < 0 ? -errno : -EIO;
			break;
		}
		off += (size_t)n;
	}
	/* the umask does not narrow what systemd must be able to read */
	if (!ret && (fchmod(fd, 0644) || fsync(fd)))
		ret = -errno;
	if (close(fd) && !ret)
		ret = -errno;
	/* rename replaces a symbolic link named twshim.conf; it never writes through one */
	if (!ret && renameat(dirfd, tmp, dirfd, DROPIN_NAME))
		ret = -errno;
	if (ret)
		unlinkat(dirfd, tmp, 0);
	else
		fsync(dirfd);
	return ret;
}

/* systemd runs as the init system (sd_booted(3)) */
static bool systemd_running(void)
{
	struct stat st;

	return lstat("/run/systemd/system", &st) == 0 && S_ISDIR(st.st_mode);
}

/* Runs argv (no shell); its stdout into out when out is not NULL. Exit status, or -errno. */
static int run_cmd(const char *const argv[], char *out, size_t len)
{
	int pfd[2], status;
	size_t n = 0;
	pid_t pid;

	if (out && pipe2(pfd, O_CLOEXEC))
		return -errno;
	fflush(NULL);
	pid = fork();
	if (pid < 0) {
		int err = errno;

		if (out) {
			close(pfd[0]);
			close(pfd[1]);
		}
		return -err;
	}
	if (pid == 0) {
		if (out && dup2(pfd[1], STDOUT_FILENO) < 0)
			_exit(127);
		execvp(argv[0], (char *const *)argv);
		_exit(127);
	}
	if (out) {
		ssize_t r;

		close(pfd[1]);
		while ((r = read(pfd[0], out + n, len - 1 - n)) > 0 || (r < 0 && errno == EINTR))
			if (r > 0 && (n += (size_t)r) >= len - 1)
				break;
		out[n] = '\0';
		close(pfd[0]);
	}
	while (waitpid(pid, &status, 0) < 0)
		if (errno != EINTR)
			return -errno;
	return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

/* systemctl daemon-reload, then systemctl VERB UNIT; EXIT_OK or EXIT_FAIL */
static int systemctl_apply(const char *cmd, const char *verb, const char *unit)
{
	const char *const reload[] = { "systemctl", "daemon-reload", NULL };
	const char *const apply[] = { "systemctl", verb, "--", unit, NULL };
	int ret;

	ret = run_cmd(reload, NULL, 0);
	if (ret == 0)
		ret = run_cmd(apply, NULL, 0);
	if (ret) {
		fprintf(stderr, "twshim %s: systemctl %s %s failed (%d)\n", cmd,
			ret > 0 ? verb : "daemon-reload", unit, ret);
		return EXIT_FAIL;
	}
	printf("%s: %s done\n", unit, verb);
	return EXIT_OK;
}

/* Options the three commands share; NULL members were not given. */
struct unit_args {
	const char *root;	/* "" for / */
	const char *unit_arg;
	const char *config;
	char *options;
	bool now;
	char unit[UNIT_NAME_LEN];
	char rootbuf[PATH_MAX];
};

enum { OPT_NOW = 0x100, OPT_ROOT };
/* unit_args_parse: --help was printed, the command exits 0 */
#define ARGS_HELP	(-1)

/*
 * Parses argv for cmd ("enable", "disable", "status"). EXIT_OK to go on,
 * ARGS_HELP after --help, else the exit status after a message.
 */
static int unit_args_parse(const char *cmd, const char *usage, int argc, char **argv,
			   struct unit_args *a)
{
	static const struct option longopts[] = {
		{ "config", required_argument, NULL, 'c' },
		{ "options", required_argument, NULL, 'o' },
		{ "now", no_argument, NULL, OPT_NOW },
		{ "root", required_argument, NULL, OPT_ROOT },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	bool enable = !strcmp(cmd, "enable"), status = !strcmp(cmd, "status");
	int opt;

	memset(a, 0, sizeof(*a));
	a->root = "";
	opterr = 0;
	optind = 1;
	while ((opt = getopt_long(argc, argv, enable ? "c:o:h" : "h", longopts, NULL)) != -1) {
		switch (opt) {
		case 'c':
			a->config = optarg;
			break;
		case 'o':
			if (!enable)
				goto bad;
			if (opt_list_append(&a->options, optarg)) {
				fprintf(stderr, "twshim %s: out of memory\n", cmd);
				return EXIT_FAIL;
			}
			break;
		case OPT_NOW:
			if (status)
				goto bad;
			a->now = true;
			break;
		case OPT_ROOT:
			/* without its trailing slashes, so that "/" is the real root */
			if (snprintf(a->rootbuf, sizeof(a->rootbuf), "%s", optarg) >=
			    (int)sizeof(a->rootbuf))
				return usage_error(cmd, "--root: path too long");
			for (size_t n = strlen(a->rootbuf); n && a->rootbuf[n - 1] == '/'; n--)
				a->rootbuf[n - 1] = '\0';
			if (optarg[0] != '/')
				return usage_error(cmd, "--root %s: give an absolute directory",
						   optarg);
			a->root = a->rootbuf;
			break;
		case 'h':
			fputs(usage, stdout);
			return ARGS_HELP;
		default:
			goto bad;
		}
	}
	if (a->now && a->root[0])
		return usage_error(cmd, "--now works on the running system, not with --root");
	if (optind < argc)
		a->unit_arg = argv[optind++];
	if (optind < argc)
		return usage_error(cmd, "%s: one unit at a time", argv[optind]);
	if (!a->unit_arg && !status)
		return usage_error(cmd, "no unit given");
	if (a->unit_arg && unit_name_normalize(cmd, a->unit_arg, a->unit, sizeof(a->unit)))
		return EXIT_USAGE;
	return EXIT_OK;
bad:
	return usage_error(cmd, "%s: unknown option or missing argument", argv[optind - 1]);
}

/*
 * The settings the service will read, checked as the library will: the file
 * given (under root), else ROOT/etc/twshim.conf when it exists, then the
 * options. EXIT_OK or EXIT_USAGE after a message.
 */
static int settings_check(const struct unit_args *a)
{
	char file[PATH_MAX + 64], err[512];
	struct conf_source src = { .options = a->options };
	struct conf *conf;

	if (a->config && *a->config)
		src.file = rooted(a->root, a->config, file, sizeof(file));
	else if (!a->config &&
		 access(rooted(a->root, TW_SYSTEM_CONFIG, file, sizeof(file)), F_OK) == 0)
		src.file = file;
	if (a->config && *a->config && access(file, R_OK)) {
		fprintf(stderr, "twshim enable: %s: %s\n", file, strerror(errno));
		return EXIT_USAGE;
	}
	if (conf_load(&conf, &src, err, sizeof(err))) {
		fprintf(stderr, "twshim enable: bad settings: %s\n", err);
		return EXIT_USAGE;
	}
	conf_free(conf);
	return EXIT_OK;
}

static void restart_hint(const char *unit)
{
	printf("Restart %s for this to take effect: systemctl daemon-reload && "
	       "systemctl restart %s\n", unit, unit);
}

int cmd_enable(int argc, char **argv)
{
	struct unit_env env = { 0 };
	char abs[PATH_MAX], *text = NULL;
	struct unit_args a;
	const char *lib;
	int ret, dirfd = -1;

	ret = unit_args_parse("enable", enable_usage, argc, argv, &a);
	if (ret) {
		ret = ret == ARGS_HELP ? EXIT_OK : ret;
		goto out;
	}
	ret = EXIT_USAGE;
	if (a.config && *a.config && a.config[0] != '/') {
		/* the service does not run in this directory: made absolute */
		if (a.root[0]) {
			usage_error("enable", "-c %s: give the path the service sees, absolute",
				    a.config);
			goto out;
		}
		if (!realpath(a.config, abs)) {
			fprintf(stderr, "twshim enable: %s: %s\n", a.config, strerror(errno));
			goto out;
		}
		a.config = abs;
	}
	if (has_control(a.config) || has_control(a.options)) {
		usage_error("enable", "a setting holds a control character");
		goto out;
	}
	ret = settings_check(&a);
	if (ret)
		goto out;
	ret = EXIT_FAIL;
	if (a.now && !systemd_running()) {
		fprintf(stderr, "twshim enable: systemd is not running here (not booted with "
			"systemd): nothing written; --now needs it\n");
		goto out;
	}
	lib = preload_lib_path("enable");
	if (!lib)
		goto out;
	if (strchr(lib, ' ') || strchr(lib, ':')) {
		fprintf(stderr, "twshim enable: %s: ld.so cannot preload a path with a space "
			"or a colon\n", lib);
		goto out;
	}
	switch (unit_env_read(a.root, a.unit, &env)) {
	case 0:
		break;
	case -ENOENT:
		fprintf(stderr, "twshim enable: %s: no unit file found in %s%s or the rest of "
			"the unit path\n", a.unit, a.root, UNIT_CONF_DIR);
		goto out;
	default:
		fprintf(stderr, "twshim enable: out of memory\n");
		goto out;
	}
	if (dropin_text(a.unit, lib, env.preload, a.config, a.options, &text)) {
		fprintf(stderr, "twshim enable: out of memory\n");
		goto out;
	}
	dirfd = dropin_dir_open("enable", a.root, a.unit, true);
	if (dirfd < 0)
		goto out;
	if (faccessat(dirfd, DROPIN_NAME, F_OK, AT_SYMLINK_NOFOLLOW) == 0 && !dropin_ours(dirfd)) {
		fprintf(stderr, "twshim enable: %s%s/%s.d/" DROPIN_NAME " was not written by "
			"twshim enable: left alone\n", a.root, UNIT_CONF_DIR, a.unit);
		goto out;
	}
	if ((ret = dropin_write(dirfd, text))) {
		fprintf(stderr, "twshim enable: %s%s/%s.d/" DROPIN_NAME ": %s\n", a.root,
			UNIT_CONF_DIR, a.unit, strerror(-ret));
		ret = EXIT_FAIL;
		goto out;
	}
	printf("%s: wrote %s%s/%s.d/" DROPIN_NAME " (LD_PRELOAD=%s)\n", a.unit, a.root,
	       UNIT_CONF_DIR, a.unit, lib);
	if (env.env_file)
		printf("%s: note: the unit reads an EnvironmentFile=; an LD_PRELOAD or "
		       "TWSHIM_* set there overrides the drop-in\n", a.unit);
	ret = a.now ? systemctl_apply("enable", "restart", a.unit) : (restart_hint(a.unit), 0);
out:
	if (dirfd >= 0)
		close(dirfd);
	free(text);
	free(a.options);
	unit_env_free(&env);
	return ret;
}

int cmd_disable(int argc, char **argv)
{
	struct unit_args a;
	int ret, dirfd;

	ret = unit_args_parse("disable", disable_usage, argc, argv, &a);
	if (ret)
		return ret == ARGS_HELP ? EXIT_OK : ret;
	if (a.now && !systemd_running()) {
		fprintf(stderr, "twshim disable: systemd is not running here (not booted with "
			"systemd): nothing removed; --now needs it\n");
		return EXIT_FAIL;
	}
	dirfd = dropin_dir_open("disable", a.root, a.unit, false);
	if (dirfd == -ENOENT || (dirfd >= 0 && faccessat(dirfd, DROPIN_NAME, F_OK,
							 AT_SYMLINK_NOFOLLOW))) {
		printf("%s: no drop-in from twshim enable: nothing to do\n", a.unit);
		if (dirfd >= 0)
			close(dirfd);
		return EXIT_OK;
	}
	if (dirfd < 0)
		return EXIT_FAIL;
	if (!dropin_ours(dirfd)) {
		fprintf(stderr, "twshim disable: %s%s/%s.d/" DROPIN_NAME " was not written by "
			"twshim enable: left alone\n", a.root, UNIT_CONF_DIR, a.unit);
		close(dirfd);
		return EXIT_FAIL;
	}
	if (unlinkat(dirfd, DROPIN_NAME, 0)) {
		fprintf(stderr, "twshim disable: %s%s/%s.d/" DROPIN_NAME ": %s\n", a.root,
			UNIT_CONF_DIR, a.unit, strerror(errno));
		close(dirfd);
		return EXIT_FAIL;
	}
	fsync(dirfd);
	close(dirfd);
	/* the directory goes too when nothing else is in it (ENOTEMPTY: it stays) */
	{
		char path[PATH_MAX];

		snprintf(path, sizeof(path), "%s" UNIT_CONF_DIR "/%s.d", a.root, a.unit);
		rmdir(path);
	}
	printf("%s: removed %s%s/%s.d/" DROPIN_NAME "\n", a.unit, a.root, UNIT_CONF_DIR,
	       a.unit);
	if (a.now)
		return systemctl_apply("disable", "try-restart", a.unit);
	printf("Restart %s for this to take effect: systemctl daemon-reload && "
	       "systemctl try-restart %s\n", a.unit, a.unit);
	return EXIT_OK;
}

/*
 * Whether the running service has the library mapped: its main process's
 * /proc/PID/maps, the pid from systemctl. Only when systemd runs and no
 * --root was given.
 */
static const char *unit_state(const struct unit_args *a, const char *unit, const char *lib)
{
	char out[64], maps[64], line[PATH_MAX + 128];
	const char *const show[] = { "systemctl", "show", "-p", "MainPID", "--value", "--", unit,
				     NULL };
	bool loaded = false;
	long pid;
	FILE *f;

	if (a->root[0] || !systemd_running())
		return "-";
	if (run_cmd(show, out, sizeof(out)) != 0)
		return "unknown";
	pid = strtol(out, NULL, 10);
	if (pid <= 0)
		return "not running";
	snprintf(maps, sizeof(maps), "/proc/%ld/maps", pid);
	f = fopen(maps, "re");
	if (!f)
		return "unknown";
	while (!loaded && fgets(line, sizeof(line), f))
		loaded = lib && strstr(line, lib);
	fclose(f);
	return loaded ? "running, preloaded" : "running without it: restart";
}

/* "%%" back to "%", in place: a value as the service gets it */
static char *unescape_specifiers(char *s)
{
	char *r = s, *w = s;

	for (; s && *r; r++, w++) {
		*w = *r;
		if (r[0] == '%' && r[1] == '%')
			r++;
	}
	if (s)
		*w = '\0';
	return s;
}

/* Adds a row for the drop-in of unit to t; false when it has none of ours. */
static bool status_row(const struct unit_args *a, const char *unit, struct table *t)
{
	char path[PATH_MAX], lib[PATH_MAX], libpath[PATH_MAX + 16];
	struct unit_env e = { 0 };
	const char *row[5];
	int dirfd;
	bool ours;

	dirfd = dropin_dir_open("status", a->root, unit, false);
	if (dirfd < 0)
		return false;
	ours = dropin_ours(dirfd);
	close(dirfd);
	if (!ours)
		return false;
	snprintf(path, sizeof(path), "%s" UNIT_CONF_DIR "/%s.d/" DROPIN_NAME, a->root, unit);
	unit_file_read(path, &e);
	snprintf(lib, sizeof(lib), "%.*s", e.preload ? (int)strcspn(e.preload, ": ") : 0,
		 e.preload ? e.preload : "");
	snprintf(libpath, sizeof(libpath), "%s%s", lib,
		 access(rooted(a->root, lib, path, sizeof(path)), R_OK) ? " (missing)" : "");
	row[0] = unit;
	row[1] = libpath;
	row[2] = e.config ? (*e.config ? unescape_specifiers(e.config) : "''") : "-";
	row[3] = e.options ? unescape_specifiers(e.options) : "-";
	row[4] = unit_state(a, unit, lib);
	table_add(t, row);
	unit_env_free(&e);
	return true;
}

static int name_cmp(const void *x, const void *y)
{
	return strcmp(*(char *const *)x, *(char *const *)y);
}

int cmd_status(int argc, char **argv)
{
	static const char *const head[] = { "UNIT", "LIBRARY", "CONFIG", "OPTIONS", "STATE" };
	char dir[PATH_MAX], **names = NULL;
	struct unit_args a;
	struct dirent *de;
	struct table t;
	size_t n = 0, rows = 0;
	int ret;
	DIR *d;

	ret = unit_args_parse("status", status_usage, argc, argv, &a);
	if (ret)
		return ret == ARGS_HELP ? EXIT_OK : ret;
	table_init(&t, 5);
	table_add(&t, head);
	if (a.unit_arg) {
		rows = status_row(&a, a.unit, &t);
		if (!rows) {
			printf("%s: no drop-in from twshim enable\n", a.unit);
			table_free(&t);
			return EXIT_FAIL;
		}
	} else {
		d = opendir(rooted(a.root, UNIT_CONF_DIR, dir, sizeof(dir)));
		while (d && (de = readdir(d))) {
			char unit[UNIT_NAME_LEN], **grown;
			size_t len = strlen(de->d_name);

			if (len < 3 || len - 2 >= sizeof(unit) || !ends_with(de->d_name, ".d"))
				continue;
			snprintf(unit, sizeof(unit), "%.*s", (int)(len - 2), de->d_name);
			grown = realloc(names, (n + 1) * sizeof(*names));
			if (!grown || !(grown[n] = strdup(unit))) {
				names = grown ? grown : names;
				ret = EXIT_FAIL;
				break;
			}
			names = grown;
			n++;
		}
		if (d)
			closedir(d);
		if (n)
			qsort(names, n, sizeof(*names), name_cmp);
		for (size_t i = 0; i < n; i++)
			rows += status_row(&a, names[i], &t);
	}
	if (rows) {
		table_print(&t, stdout);
		printf("A change takes effect when the unit restarts: systemctl daemon-reload && "
		       "systemctl restart UNIT\n");
	} else {
		printf("No unit has a drop-in from twshim enable.\n");
	}
	for (size_t i = 0; i < n; i++)
		free(names[i]);
	free(names);
	table_free(&t);
	return ret;
}
