// SPDX-License-Identifier: MIT
/*
 * `twshim enable`, `disable` and `status` on unit files under a scratch
 * root (--root): the drop-in they write, what systemd-analyze verify makes
 * of it, the LD_PRELOAD the unit had, and the files they must leave alone.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <criterion/criterion.h>

#include "lab.h"

#define ETC	"/etc/systemd/system"
#define LIB	"/lib/systemd/system"

static const char *tool(void)
{
	return lab_build_path("twshim");
}

/* the scratch root, with the two unit directories made */
static const char *root(void)
{
	const char *r = lab_path("root");

	cr_assert_eq(system(lab_fmt("mkdir -p '%s" ETC "' '%s" LIB "'", r, r)), 0);
	return r;
}

static const char *in_root(const char *path)
{
	return lab_fmt("%s%s", lab_path("root"), path);
}

/* lab_write_file() of a path under the root, its directory made first */
static void put(const char *path, const char *text)
{
	const char *full = in_root(path);

	cr_assert_eq(system(lab_fmt("mkdir -p \"$(dirname '%s')\"", full)), 0);
	lab_write_file(full, text);
}

static const char *library(void)
{
	static char real[4096];

	cr_assert(realpath(lab_build_path("libtwshim.so"), real), "library not built");
	return real;
}

/* A unit that preloads a library of its own, and sets an unrelated variable. */
static void write_unit(const char *dir, const char *name, const char *extra)
{
	put(lab_fmt("%s/%s", dir, name),
		       lab_fmt("[Unit]\nDescription=twshim test unit\n\n[Service]\n"
			       "ExecStart=/bin/sleep 1\n"
			       "Environment=\"LD_PRELOAD=/usr/lib/libfirst.so\" OTHER=1\n%s",
			       extra ? extra : ""));
}

static struct lab_proc *twshim(const char *name, const char *cmd, const char *a1,
			       const char *a2, const char *a3, const char *a4)
{
	return lab_run(name, NULL, 10000, tool(), cmd, "--root", lab_path("root"), a1, a2, a3,
		       a4, NULL);
}

/* systemd-analyze verify of the unit with the drop-ins under the root: 0, its stderr in *err */
static int verify(const char *unit, char **err)
{
	const char *env[] = { lab_fmt("SYSTEMD_UNIT_PATH=%s:%s:", in_root(ETC), in_root(LIB)),
			      NULL };
	struct lab_opts o = { .env = env };
	struct lab_proc *p;

	if (access("/usr/bin/systemd-analyze", X_OK))
		cr_skip_test("systemd-analyze is not installed (Debian package systemd)");
	p = lab_run("verify", &o, 30000, "/usr/bin/systemd-analyze", "verify", "--man=no", unit,
		    NULL);
	*err = lab_stderr(p);
	return lab_exit_code(p);
}

Test(tool_unit, enable_writes_a_dropin_that_systemd_accepts, .timeout = 60)
{
	const char *dropin;
	struct lab_proc *p;
	struct stat st;
	char *text, *err;

	lab_enter(100);
	root();
	write_unit(LIB, "demo.service", NULL);
	/* a drop-in of the admin's overrides the unit's LD_PRELOAD: that is the one kept */
	put(ETC "/demo.service.d/override.conf",
		       "[Service]\n# a comment\nEnvironment=A=1 \\\n"
		       "  \"LD_PRELOAD=/usr/lib/libsecond.so /opt/lib third.so\"\n");
	p = twshim("enable", "enable", "demo", "-o",
		   "close=defer,log=/var/log/twshim/%n.jsonl", NULL);
	cr_assert_eq(lab_exit_code(p), 0, "%s", lab_stderr(p));
	cr_expect(strstr(lab_stdout(p), "Restart demo.service"), "%s", lab_stdout(p));

	dropin = in_root(ETC "/demo.service.d/twshim.conf");
	cr_assert_eq(lstat(dropin, &st), 0, "no drop-in written");
	cr_expect(S_ISREG(st.st_mode));
	cr_expect_eq(st.st_mode & 07777, 0644);
	text = lab_read_file(dropin);
	cr_expect(strstr(text, lab_fmt("\nEnvironment=\"LD_PRELOAD=%s:/usr/lib/libsecond.so:"
				       "/opt/lib:third.so\"\n", library())), "%s", text);
	/* %n is a systemd specifier: doubled, so that the service gets %n */
	cr_expect(strstr(text, "\nEnvironment=\"TWSHIM_OPTIONS=close=defer,"
			       "log=/var/log/twshim/%%n.jsonl\"\n"), "%s", text);
	cr_expect_null(strstr(text, "TWSHIM_CONFIG"), "no -c: the service reads /etc/twshim.conf");
	cr_expect_eq(system(lab_fmt("ls -A '%s' | grep -qv -e override.conf -e twshim.conf",
				    in_root(ETC "/demo.service.d"))), 256,
		     "a temporary file was left behind");

	cr_expect_eq(verify("demo.service", &err), 0, "%s", err);
	cr_expect_str_eq(err, "", "systemd-analyze verify complains");

	/* again, other settings: the entry is replaced, the library not added twice */
	p = twshim("again", "enable", "demo.service", "-c", "/etc/twshim/demo.conf", NULL);
	cr_expect_eq(lab_exit_code(p), 2, "a -c file that does not exist is a usage error");
	put("/etc/twshim/demo.conf", "close = \"abort\";\n");
	p = twshim("again", "enable", "demo.service", "-c", "/etc/twshim/demo.conf", NULL);
	cr_assert_eq(lab_exit_code(p), 0, "%s", lab_stderr(p));
	text = lab_read_file(dropin);
	cr_expect(strstr(text, lab_fmt("LD_PRELOAD=%s:/usr/lib/libsecond.so:", library())),
		  "%s", text);
	cr_expect_null(strstr(strstr(text, "libtwshim.so") + 1, "libtwshim.so"), "%s", text);
	cr_expect(strstr(text, "\nEnvironment=\"TWSHIM_CONFIG=/etc/twshim/demo.conf\"\n"), "%s",
		  text);
	cr_expect_null(strstr(text, "TWSHIM_OPTIONS"), "%s", text);
	cr_expect_eq(verify("demo.service", &err), 0, "%s", err);
}

Test(tool_unit, a_template_gives_its_instances_their_ld_preload, .timeout = 60)
{
	struct lab_proc *p;
	char *text, *err;

	lab_enter(100);
	root();
	write_unit(LIB, "worker@.service", "Environment=\nEnvironment=LD_PRELOAD=/lib/after.so\n");
	p = twshim("enable", "enable", "worker@1", NULL, NULL, NULL);
	cr_assert_eq(lab_exit_code(p), 0, "%s", lab_stderr(p));
	text = lab_read_file(in_root(ETC "/worker@1.service.d/twshim.conf"));
	/* the empty Environment= dropped /usr/lib/libfirst.so */
	cr_expect(strstr(text, lab_fmt("\nEnvironment=\"LD_PRELOAD=%s:/lib/after.so\"\n",
				       library())), "%s", text);
	cr_expect_eq(verify("worker@1.service", &err), 0, "%s", err);
	cr_expect_str_eq(err, "");
}

Test(tool_unit, disable_removes_only_its_own_dropin, .timeout = 60)
{
	const char *dir;
	struct lab_proc *p;
	struct stat st;

	lab_enter(100);
	root();
	write_unit(LIB, "a.service", NULL);
	write_unit(LIB, "b.service", NULL);
	put(ETC "/a.service.d/override.conf", "[Service]\nNice=5\n");
	cr_assert_eq(lab_exit_code(twshim("ea", "enable", "a", NULL, NULL, NULL)), 0);
	cr_assert_eq(lab_exit_code(twshim("eb", "enable", "b", NULL, NULL, NULL)), 0);

	p = twshim("da", "disable", "a", NULL, NULL, NULL);
	cr_assert_eq(lab_exit_code(p), 0, "%s", lab_stderr(p));
	cr_expect(strstr(lab_stdout(p), "Restart a.service"), "%s", lab_stdout(p));
	dir = in_root(ETC "/a.service.d");
	cr_expect_neq(access(lab_fmt("%s/twshim.conf", dir), F_OK), 0);
	cr_expect_str_eq(lab_read_file(lab_fmt("%s/override.conf", dir)), "[Service]\nNice=5\n");
	p = twshim("db", "disable", "b.service", NULL, NULL, NULL);
	cr_assert_eq(lab_exit_code(p), 0, "%s", lab_stderr(p));
	cr_expect_neq(lstat(in_root(ETC "/b.service.d"), &st), 0,
		      "the directory it made, now empty, stays");
	/* nothing left to disable: said, and not a failure */
	p = twshim("db2", "disable", "b", NULL, NULL, NULL);
	cr_expect_eq(lab_exit_code(p), 0, "%s", lab_stderr(p));
	cr_expect(strstr(lab_stdout(p), "nothing to do"), "%s", lab_stdout(p));

	/* a twshim.conf that someone else wrote is neither replaced nor removed */
	lab_write_file(in_root(ETC "/a.service.d/twshim.conf"), "[Service]\nNice=1\n");
	p = twshim("ef", "enable", "a", NULL, NULL, NULL);
	cr_expect_eq(lab_exit_code(p), 1);
	cr_expect(strstr(lab_stderr(p), "not written by twshim enable"), "%s", lab_stderr(p));
	p = twshim("df", "disable", "a", NULL, NULL, NULL);
	cr_expect_eq(lab_exit_code(p), 1);
	cr_expect_str_eq(lab_read_file(in_root(ETC "/a.service.d/twshim.conf")),
			 "[Service]\nNice=1\n");
}

Test(tool_unit, symbolic_links_in_the_dropin_directory_are_not_followed, .timeout = 60)
{
	const char *elsewhere;
	struct lab_proc *p;

	lab_enter(100);
	elsewhere = lab_path("elsewhere");
	root();
	write_unit(LIB, "s.service", NULL);
	write_unit(LIB, "t.service", NULL);
	cr_assert_eq(mkdir(elsewhere, 0755), 0);
	lab_write_file(lab_fmt("%s/target", elsewhere), "keep\n");

	/* the drop-in directory itself a link */
	cr_assert_eq(symlink(elsewhere, in_root(ETC "/s.service.d")), 0);
	p = twshim("dirlink", "enable", "s", NULL, NULL, NULL);
	cr_expect_eq(lab_exit_code(p), 1);
	cr_expect(strstr(lab_stderr(p), "symbolic link"), "%s", lab_stderr(p));
	cr_expect_neq(access(lab_fmt("%s/twshim.conf", elsewhere), F_OK), 0,
		      "written through the link");

	/* twshim.conf a link to a file: left alone, the file unchanged */
	cr_assert_eq(mkdir(in_root(ETC "/t.service.d"), 0755), 0);
	cr_assert_eq(symlink(lab_fmt("%s/target", elsewhere),
			     in_root(ETC "/t.service.d/twshim.conf")), 0);
	p = twshim("filelink", "enable", "t", NULL, NULL, NULL);
	cr_expect_eq(lab_exit_code(p), 1);
	p = twshim("filelink-d", "disable", "t", NULL, NULL, NULL);
	cr_expect_eq(lab_exit_code(p), 1);
	cr_expect_str_eq(lab_read_file(lab_fmt("%s/target", elsewhere)), "keep\n");
}

Test(tool_unit, unit_names_and_settings_are_checked_before_anything_is_written, .timeout = 60)
{
	static const char *const bad_names[] = { "../demo", "a/b", "", "x..y", "@demo", "a@b@c",
						 "demo.socket", "demo.timer", "de mo", "de$mo" };
	struct lab_proc *p;
	struct stat st;

	lab_enter(100);
	root();
	write_unit(LIB, "demo.service", NULL);
	for (size_t i = 0; i < sizeof(bad_names) / sizeof(bad_names[0]); i++) {
		p = twshim("badname", "enable", bad_names[i], NULL, NULL, NULL);
		cr_expect_eq(lab_exit_code(p), 2, "'%s': %s", bad_names[i], lab_stderr(p));
	}
	p = twshim("badopt", "enable", "demo", "-o", "close=sometimes", NULL);
	cr_expect_eq(lab_exit_code(p), 2);
	cr_expect(strstr(lab_stderr(p), "close"), "%s", lab_stderr(p));
	p = twshim("filekey", "enable", "demo", "-o", "rules=1", NULL);
	cr_expect_eq(lab_exit_code(p), 2);
	/* a broken /etc/twshim.conf, which the service would read, is named */
	lab_write_file(in_root("/etc/twshim.conf"), "close = \"later\";\n");
	p = twshim("badetc", "enable", "demo", NULL, NULL, NULL);
	cr_expect_eq(lab_exit_code(p), 2);
	cr_expect(strstr(lab_stderr(p), "twshim.conf"), "%s", lab_stderr(p));
	/* -c '': no file at all, so the broken one does not count */
	p = twshim("noconf", "enable", "nosuchunit", "-c", "", NULL);
	cr_expect_eq(lab_exit_code(p), 1, "a unit without a unit file");
	cr_expect(strstr(lab_stderr(p), "no unit file"), "%s", lab_stderr(p));
	cr_expect_neq(lstat(in_root(ETC "/demo.service.d"), &st), 0, "something was written");
	cr_expect_neq(lstat(in_root(ETC "/nosuchunit.service.d"), &st), 0);

	p = lab_run("relroot", NULL, 10000, tool(), "enable", "--root", "relative/dir", "demo",
		    NULL);
	cr_expect_eq(lab_exit_code(p), 2);
	p = lab_run("help", NULL, 10000, tool(), "enable", "--help", NULL);
	cr_expect_eq(lab_exit_code(p), 0);
	cr_expect(strstr(lab_stdout(p), "usage: twshim enable"));
}

Test(tool_unit, status_lists_the_units_with_its_dropin, .timeout = 60)
{
	struct lab_proc *p;
	char *out;

	lab_enter(100);
	root();
	p = twshim("empty", "status", NULL, NULL, NULL, NULL);
	cr_expect_eq(lab_exit_code(p), 0);
	cr_expect(strstr(lab_stdout(p), "No unit"), "%s", lab_stdout(p));
	write_unit(LIB, "one.service", NULL);
	write_unit(LIB, "two.service", NULL);
	write_unit(LIB, "three.service", NULL);
	put(ETC "/three.service.d/twshim.conf", "[Service]\n");
	cr_assert_eq(lab_exit_code(twshim("e1", "enable", "one", "-o", "log=/tmp/%n.jsonl",
					   NULL)), 0);
	cr_assert_eq(lab_exit_code(twshim("e2", "enable", "two", "-c", "", NULL)), 0);

	p = twshim("all", "status", NULL, NULL, NULL, NULL);
	cr_assert_eq(lab_exit_code(p), 0, "%s", lab_stderr(p));
	out = lab_stdout(p);
	cr_expect(strstr(out, "one.service "), "%s", out);
	cr_expect(strstr(out, "log=/tmp/%n.jsonl"), "shown as the service gets it: %s", out);
	cr_expect(strstr(out, "two.service "), "%s", out);
	cr_expect_null(strstr(out, "three.service"), "not ours: %s", out);
	cr_expect(strstr(out, library()), "%s", out);
	cr_expect(strstr(out, "restart"), "%s", out);

	p = twshim("one", "status", "one", NULL, NULL, NULL);
	cr_expect_eq(lab_exit_code(p), 0);
	cr_expect_null(strstr(lab_stdout(p), "two.service"));
	p = twshim("three", "status", "three", NULL, NULL, NULL);
	cr_expect_eq(lab_exit_code(p), 1);
}

/*
 * --now needs a running systemd; where there is none (a container, a chroot)
 * it says so and fails before it writes anything.
 */
Test(tool_unit, now_without_systemd_fails_and_writes_nothing, .timeout = 60)
{
	const char *unit = lab_fmt("twshim-test-%ld", (long)getpid());
	struct lab_proc *p;
	struct stat st;

	lab_enter(100);
	if (lstat("/run/systemd/system", &st) == 0)
		cr_skip_test("systemd runs here: --now would restart a real unit");
	p = lab_run("now", NULL, 10000, tool(), "enable", unit, "--now", NULL);
	cr_expect_eq(lab_exit_code(p), 1);
	cr_expect(strstr(lab_stderr(p), "systemd is not running"), "%s", lab_stderr(p));
	cr_expect_neq(lstat(lab_fmt(ETC "/%s.service.d", unit), &st), 0);
	p = lab_run("now-d", NULL, 10000, tool(), "disable", unit, "--now", NULL);
	cr_expect_eq(lab_exit_code(p), 1);
	p = lab_run("now-root", NULL, 10000, tool(), "enable", unit, "--now", "--root",
		    lab_path("root"), NULL);
	cr_expect_eq(lab_exit_code(p), 2, "--now with --root is a usage error");
}
