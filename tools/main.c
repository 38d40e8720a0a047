// SPDX-License-Identifier: MIT
/*
 * twshim: runs programs with the preload library and reports on the close
 * records it writes and on the TIME_WAIT sockets the kernel holds.
 */
#include <stdio.h>
#include <string.h>

#include "tool.h"

static const char usage[] =
	"usage: twshim COMMAND [OPTIONS] ...\n"
	"\n"
	"Decides who closes TCP connections first, and shows where TIME_WAIT lands.\n"
	"\n"
	"commands:\n"
	"  run     run a program with libtwshim.so preloaded and the given settings\n"
	"  report  aggregate close records: connections, TIME_WAIT local/peer/none, held now\n"
	"  tw      the TIME_WAIT sockets of this network namespace, attributed to processes\n"
	"  ab      run a program under two settings, alternately, and compare them\n"
	"  exporter  Prometheus metrics from the processes' counters and the kernel's TIME_WAIT\n"
	"  enable  preload the library into a systemd service (a drop-in)\n"
	"  disable remove that drop-in\n"
	"  status  the services that have it\n"
	"\n"
	"'twshim COMMAND --help' describes each command; 'man twshim' all of them.\n"
	"Exit status: 0 success, 1 failure, 2 usage error.\n";

int main(int argc, char **argv)
{
	static const struct {
		const char *name;
		int (*fn)(int argc, char **argv);
	} cmds[] = {
		{ "run", cmd_run },
		{ "report", cmd_report },
		{ "tw", cmd_tw },
		{ "ab", cmd_ab },
		{ "exporter", cmd_exporter },
		{ "enable", cmd_enable },
		{ "disable", cmd_disable },
		{ "status", cmd_status },
	};

	if (argc < 2) {
		fputs(usage, stderr);
		return EXIT_USAGE;
	}
	if (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h") || !strcmp(argv[1], "help")) {
		fputs(usage, stdout);
		return EXIT_OK;
	}
	for (size_t i = 0; i < sizeof(cmds) / sizeof(cmds[0]); i++)
		if (!strcmp(argv[1], cmds[i].name))
			return cmds[i].fn(argc - 1, argv + 1);
	fprintf(stderr, "twshim: unknown command '%s'\n\n%s", argv[1], usage);
	return EXIT_USAGE;
}
