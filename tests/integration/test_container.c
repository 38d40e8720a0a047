// SPDX-License-Identifier: MIT
/*
 * examples/container/ as far as it can be checked without a container
 * runtime: the library gathered by copy-lib.sh preloads into a program of a
 * fresh root tree (chroot), copied in or bind-mounted read-only; and the
 * Kubernetes manifest parses and hands the application what the init
 * container copies.
 */
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <criterion/criterion.h>
#include <jansson.h>

#include "lab.h"

#define RUN_MS	30000

static const char *src(void)
{
	const char *s = lab_source_dir();

	if (!s)
		cr_skip_test("no source tree here (examples/container/)");
	/* a sanitizer build's library needs the sanitizer's runtime too: not what is shipped */
	if (getenv("TWSHIM_TEST_PRELOAD"))
		cr_skip_test("the library under test is a sanitizer build");
	return s;
}

/*
 * A root tree that holds tw-client and env with their libraries (glibc,
 * ld.so) and nothing of twshim: what an application image brings.
 */
static const char *image_tree(void)
{
	const char *tree = lab_path("tree");
	struct lab_proc *p;

	p = lab_run("tree", NULL, RUN_MS, "/bin/sh", "-ec",
		    "tree=$1; mkdir -p \"$tree/bin\" \"$tree/tmp\"\n"
		    "cp \"$2\" /usr/bin/env \"$tree/bin/\"\n"
		    "for f in $(ldd \"$2\" /usr/bin/env | awk '{ for (i = 1; i <= NF; i++) "
		    "if ($i ~ /^\\// && $i !~ /:$/) print $i }' | sort -u); do\n"
		    "  mkdir -p \"$tree$(dirname \"$f\")\"; cp -L \"$f\" \"$tree$f\"\n"
		    "done", "sh", tree, lab_example("tw-client"), NULL);
	cr_assert_eq(lab_exit_code(p), 0, "%s", lab_stderr(p));
	return tree;
}

/* copy-lib.sh LIB DIR; what it prints (the LD_PRELOAD value), without the newline */
static char *copy_lib(const char *dir)
{
	struct lab_proc *p;
	char *out;

	p = lab_run("copy-lib", NULL, RUN_MS, lab_fmt("%s/examples/container/copy-lib.sh", src()),
		    lab_build_path("libtwshim.so"), dir, NULL);
	cr_assert_eq(lab_exit_code(p), 0, "%s", lab_stderr(p));
	out = lab_stdout(p);
	out[strcspn(out, "\n")] = '\0';
	return out;
}

/* "PREFIX/a PREFIX/b" -> "/a /b": the paths as the chroot sees them */
static const char *strip_prefix(const char *list, const char *prefix)
{
	char *out = calloc(1, strlen(list) + 1), *w = out;
	size_t n = strlen(prefix);

	for (const char *p = list; *p;) {
		if (!strncmp(p, prefix, n))
			p += n;
		while (*p && *p != ' ')
			*w++ = *p++;
		if (*p)
			*w++ = *p++;
	}
	return out;
}

/*
 * tw-client in the tree under chroot (the first command of wrap, then the
 * rest), LD_PRELOAD given to it alone by env inside the tree; one connection
 * to a server outside, under close=abort, logged to the tree's /tmp.
 */
static struct lab_proc *client_in_tree(const char *name, const char *wrap, const char *tree,
				       const char *preload)
{
	struct lab_proc *srv, *c;

	srv = lab_start_server("server", NULL, lab_example("tw-server"), "--close", "last", "-l",
			       lab_addr4(lab_port()), NULL);
	c = lab_run(name, NULL, RUN_MS, "/bin/sh", "-c",
		    lab_fmt("%s chroot '%s' /bin/env 'LD_PRELOAD=%s' "
			    "TWSHIM_OPTIONS=close=abort,log=/tmp/rec.jsonl /bin/tw-client "
			    "--timeout 2000 127.0.0.1:%d", wrap, tree, preload, srv->port), NULL);
	lab_stop(srv, 5000);
	return c;
}

static void assert_one_record(const char *tree)
{
	json_t *recs = lab_records(lab_fmt("%s/tmp/rec.jsonl", tree));

	lab_records_check(recs);
	cr_assert_eq(lab_rec_count(recs, ""), 1, "%s", lab_rec_summary(recs));
	lab_rec_assert_count(recs, "comm=tw-client,role=client,policy=abort,end=abort", 1);
	json_decref(recs);
}

Test(container, library_copied_into_a_fresh_tree_preloads_there, .timeout = 90)
{
	const char *tree, *preload;
	struct lab_proc *c;

	lab_enter(100);
	tree = image_tree();
	/*
	 * The library alone, without what it needs: ld.so refuses to start the
	 * program at all (127), which is why copy-lib.sh exists.
	 */
	cr_assert_eq(system(lab_fmt("mkdir -p '%s/opt/alone' && cp '%s' '%s/opt/alone/'", tree,
				    lab_build_path("libtwshim.so"), tree)), 0);
	c = client_in_tree("alone", "", tree, "/opt/alone/libtwshim.so");
	cr_expect_eq(lab_exit_code(c), 127, "%s", lab_stderr(c));
	cr_expect(strstr(lab_stderr(c), "libconfig.so.9"), "%s", lab_stderr(c));
	cr_expect_neq(access(lab_fmt("%s/tmp/rec.jsonl", tree), F_OK), 0);

	/* what copy-lib.sh gathers, all of it preloaded: the library works */
	preload = strip_prefix(copy_lib(lab_fmt("%s/opt/twshim", tree)), tree);
	cr_expect_str_eq(preload, "/opt/twshim/libtwshim.so /opt/twshim/libconfig.so.9 "
				  "/opt/twshim/libmnl.so.0");
	c = client_in_tree("copied", "", tree, preload);
	cr_assert_eq(lab_exit_code(c), 0, "%s", lab_stderr(c));
	cr_expect_null(strstr(lab_stderr(c), "twshim"), "%s", lab_stderr(c));
	cr_expect_null(strstr(lab_stderr(c), "preloaded"), "%s", lab_stderr(c));
	assert_one_record(tree);
}

Test(container, library_mounted_read_only_preloads_there, .timeout = 90)
{
	const char *tree, *lib, *preload;
	struct lab_proc *c;

	lab_enter(100);
	tree = image_tree();
	lib = lab_path("twshim-volume");
	preload = strip_prefix(copy_lib(lib), lab_dir());
	cr_assert_eq(system(lab_fmt("mkdir -p '%s/twshim-volume'", tree)), 0);
	/* the volume as a pod or `docker run -v ...:ro` gives it: read-only, in a mount namespace */
	c = client_in_tree("mounted", lab_fmt("exec unshare -m sh -ec 'mount --bind -o ro %s "
					      "%s/twshim-volume && touch %s/twshim-volume/x "
					      "2>/dev/null && exit 9; exec \"$@\"' sh",
					      lib, tree, tree), tree, preload);
	cr_assert_eq(lab_exit_code(c), 0, "%s", lab_stderr(c));
	cr_expect_null(strstr(lab_stderr(c), "preloaded"), "%s", lab_stderr(c));
	assert_one_record(tree);
}

/*
 * The manifest parses (python3-yaml), and what the application container
 * preloads is exactly what the init container's copy-lib.sh writes into the
 * shared volume, which the application mounts read-only.
 */
Test(container, kubernetes_manifest_hands_the_library_to_the_application, .timeout = 60)
{
	static const char check[] =
		"import sys, yaml\n"
		"docs = list(yaml.safe_load_all(open(sys.argv[1])))\n"
		"pod = [d for d in docs if d and d.get('kind') == 'Pod'][0]['spec']\n"
		"init = pod['initContainers'][0]\n"
		"vols = {v['name']: v for v in pod['volumes']}\n"
		"dest = init['command'][-1]\n"
		"[vol] = [m['name'] for m in init['volumeMounts'] if m['mountPath'] == dest]\n"
		"assert 'emptyDir' in vols[vol], vol\n"
		"app = pod['containers'][0]\n"
		"[m] = [m for m in app['volumeMounts'] if m['name'] == vol]\n"
		"assert m.get('readOnly') is True, m\n"
		"env = {e['name']: e['value'] for e in app['env']}\n"
		"print(m['mountPath'], dest, env['LD_PRELOAD'])\n";
	char mount[256], dest[256], preload[1024];
	const char *want, *s;
	struct lab_proc *p;

	s = src();
	lab_enter(100);
	if (access("/usr/bin/python3", X_OK) ||
	    system("/usr/bin/python3 -c 'import yaml' 2>/dev/null"))
		cr_skip_test("python3-yaml is not installed");
	p = lab_run("yaml", NULL, RUN_MS, "/usr/bin/python3", "-c", check,
		    lab_fmt("%s/examples/container/twshim-k8s.yaml", s), NULL);
	cr_assert_eq(lab_exit_code(p), 0, "%s", lab_stderr(p));
	cr_assert_eq(sscanf(lab_stdout(p), "%255s %255s %1023[^\n]", mount, dest, preload), 3,
		     "%s", lab_stdout(p));
	cr_expect_str_eq(mount, dest, "the application mounts the volume elsewhere");
	/* copy-lib.sh into that directory prints the LD_PRELOAD the application must have */
	want = strip_prefix(copy_lib(lab_fmt("%s%s", lab_dir(), dest)), lab_dir());
	cr_expect_str_eq(preload, want);
	/* the Dockerfile's ENV says the same of its own directory */
	want = strip_prefix(copy_lib(lab_fmt("%s/opt/twshim", lab_dir())), lab_dir());
	cr_expect(strstr(lab_read_file(lab_fmt("%s/examples/container/Dockerfile", s)),
			 lab_fmt("LD_PRELOAD=\"%s\"", want)), "the Dockerfile does not preload %s",
		  want);
}

/*
 * A musl program (an Alpine image's) cannot use the library, built for
 * glibc: musl's loader does not start the program at all. This is why the
 * README says musl-based images do not work, not merely go unrecorded.
 */
Test(container, musl_program_does_not_start_with_the_glibc_library, .timeout = 60)
{
	const char *bin;
	struct lab_proc *p;
	struct lab_opts o = { .preload = true, .options = "log=stderr" };

	lab_enter(100);
	if (access("/usr/bin/musl-gcc", X_OK))
		cr_skip_test("musl-gcc is not installed (Debian package musl-tools)");
	bin = lab_path("musl-socket");
	lab_write_file(lab_path("musl-socket.c"),
		       "#include <stdio.h>\n#include <sys/socket.h>\n#include <unistd.h>\n"
		       "int main(void) { int s = socket(AF_INET, SOCK_STREAM, 0);\n"
		       "  printf(\"socket %d\\n\", s >= 0); return close(s); }\n");
	p = lab_run("musl-gcc", NULL, RUN_MS, "/usr/bin/musl-gcc", "-o", bin,
		    lab_path("musl-socket.c"), NULL);
	cr_assert_eq(lab_exit_code(p), 0, "%s", lab_stderr(p));
	p = lab_run("plain", NULL, RUN_MS, bin, NULL);
	cr_assert_eq(lab_exit_code(p), 0, "the musl program runs without the library");
	cr_assert_str_eq(lab_stdout(p), "socket 1\n");

	p = lab_run("preloaded", &o, RUN_MS, bin, NULL);
	cr_expect_eq(lab_exit_code(p), 127, "%s", lab_stderr(p));
	cr_expect_str_eq(lab_stdout(p), "", "it ran");
	cr_expect(strstr(lab_stderr(p), "Error relocating"), "%s", lab_stderr(p));
}
