// SPDX-License-Identifier: MIT
/*
 * twshim run: the program, with the library preloaded and the settings given.
 */
#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "config.h"
#include "defaults.h"
#include "tool.h"

static const char run_usage[] =
	"usage: twshim run [-c FILE] [-o KEY=VAL[,KEY=VAL...]] [--] PROGRAM [ARGS...]\n"
	"\n"
	"Runs PROGRAM with libtwshim.so preloaded (an LD_PRELOAD it already has is\n"
	"kept) and the given settings, which are checked first.\n"
	"\n"
	"  -c, --config FILE     libconfig file for TWSHIM_CONFIG ('' reads no file)\n"
	"  -o, --options LIST    comma-separated KEY=VAL policy settings, added to\n"
	"                        TWSHIM_OPTIONS; may be given more than once\n"
	"  -h, --help            this text\n"
	"\n"
	"Example: twshim run -o close=defer,log=/tmp/tw.jsonl -- curl -s http://127.0.0.1/\n"
	"\n"
	"Exit status: the program's; 2 when the settings do not parse or the program\n"
	"cannot be started; 1 when the library is not found.\n";

int opt_list_append(char **list, const char *item)
{
	char *n;

	if (!*item)
		return 0;
	if (!*list)
		n = strdup(item);
	else if (asprintf(&n, "%s,%s", *list, item) < 0)
		n = NULL;
	if (!n)
		return -ENOMEM;
	free(*list);
	*list = n;
	return 0;
}

int cmd_run(int argc, char **argv)
{
	static const struct option longopts[] = {
		{ "config", required_argument, NULL, 'c' },
		{ "options", required_argument, NULL, 'o' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	char *options = NULL, err[512], abs[PATH_MAX];
	const char *config = NULL, *lib, *prog, *base;
	struct conf *conf;
	int opt, ret = EXIT_USAGE;

	opterr = 0;
	optind = 1;
	while ((opt = getopt_long(argc, argv, "+c:o:h", longopts, NULL)) != -1) {
		switch (opt) {
		case 'c':
			config = optarg;
			break;
		case 'o':
			if (opt_list_append(&options, optarg)) {
				fprintf(stderr, "twshim run: out of memory\n");
				goto out;
			}
			break;
		case 'h':
			fputs(run_usage, stdout);
			ret = EXIT_OK;
			goto out;
		default:
			ret = usage_error("run", "%s: unknown option or missing argument",
					  argv[optind - 1]);
			goto out;
		}
	}
	if (optind >= argc) {
		ret = usage_error("run", "no program given");
		goto out;
	}
	prog = argv[optind];

	if (config && *config) {
		/* absolute, so that a child that changed directory finds it too */
		if (!realpath(config, abs)) {
			fprintf(stderr, "twshim run: %s: %s\n", config, strerror(errno));
			goto out;
		}
		config = abs;
	}
	if (config && setenv(TW_ENV_CONFIG, config, 1)) {
		fprintf(stderr, "twshim run: %s\n", strerror(errno));
		goto out;
	}
	if (env_append_options(options)) {
		fprintf(stderr, "twshim run: out of memory\n");
		goto out;
	}

	/* the settings exactly as the library will read them, checked before the program runs */
	base = strrchr(prog, '/');
	base = base ? base + 1 : prog;
	if (conf_load_env(&conf, base, false, err, sizeof(err))) {
		fprintf(stderr, "twshim run: bad settings: %s\n", err);
		goto out;
	}
	conf_free(conf);

	lib = preload_lib_path("run");
	if (!lib) {
		ret = EXIT_FAIL;
		goto out;
	}
	if (env_prepend_preload(lib)) {
		fprintf(stderr, "twshim run: out of memory\n");
		ret = EXIT_FAIL;
		goto out;
	}
	fflush(NULL);
	execvp(prog, argv + optind);
	if (errno == ENOENT)
		fprintf(stderr, "twshim run: %s: program not found\n", prog);
	else
		fprintf(stderr, "twshim run: %s: cannot run it: %s\n", prog, strerror(errno));
	ret = EXIT_USAGE;
out:
	free(options);
	return ret;
}
