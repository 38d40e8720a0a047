// SPDX-License-Identifier: MIT
/*
 * The close path is faithful to the program and its peer: what they see is
 * what they would see without the library, except whose FIN goes first. No
 * FIN of the library's own, unread data and data after the close reset at
 * once, a reset never loses what was written, and no fd of the library's in
 * a process that makes no TCP connection.
 */
#include <criterion/criterion.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "lab.h"

#define RUN_MS	30000

/* The program (preloaded) and its peer (not), in one Python script. */
static const char py_script[] =
"import os, socket, subprocess, sys, time\n"
"mode, port = sys.argv[1], int(sys.argv[2])\n"
"def listen():\n"
"    l = socket.socket()\n"
"    l.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n"
"    l.bind(('127.0.0.1', port)); l.listen(8)\n"
"    print('listening', port, flush=True)\n"
"    return l\n"
"def connect():\n"
"    return socket.create_connection(('127.0.0.1', port))\n"
"def err(e):\n"
"    import errno\n"
"    return errno.errorcode.get(e.errno, str(e.errno))\n"
"if mode == 'spawn':\n"
"    # hands the accepted socket to a child (vfork + exec) and closes its own copy\n"
"    c, _ = listen().accept()\n"
"    fd = c.fileno()\n"
"    p = subprocess.Popen(['/bin/sh', '-c', 'sleep 0.3; printf hello >&%d' % fd],\n"
"                         pass_fds=(fd,))\n"
"    c.close()\n"
"    print('child=%d' % p.wait(), flush=True)\n"
"elif mode == 'unread':\n"
"    # closes without reading what the peer keeps sending\n"
"    c, _ = listen().accept()\n"
"    time.sleep(0.3)\n"
"    c.close()\n"
"    time.sleep(1)\n"
"elif mode == 'quiet':\n"
"    # closes at once; the peer writes afterwards\n"
"    c, _ = listen().accept()\n"
"    c.recv(1)\n"
"    c.close()\n"
"    time.sleep(3)\n"
"elif mode == 'bulk':\n"
"    # writes 1 MiB and closes; the peer reads it late\n"
"    c, _ = listen().accept()\n"
"    c.sendall(b'x' * 1048576)\n"
"    c.close()\n"
"    time.sleep(4)\n"
"elif mode == 'fds':\n"
"    print('fds=' + ','.join(sorted(os.listdir('/proc/self/fd'))), flush=True)\n"
"elif mode == 'read':\n"
"    s = connect(); got = b''\n"
"    while True:\n"
"        b = s.recv(65536)\n"
"        if not b: break\n"
"        got += b\n"
"    print('got=' + got.decode(), flush=True)\n"
"elif mode == 'flood':\n"
"    s = connect(); n = 0; e = ''\n"
"    end = time.monotonic() + 4\n"
"    try:\n"
"        while time.monotonic() < end:\n"
"            n += s.send(b'y' * 10000); time.sleep(0.005)\n"
"    except OSError as x: e = err(x)\n"
"    print('accepted=%d err=%s' % (n, e), flush=True)\n"
"elif mode == 'drip':\n"
"    s = connect(); s.send(b'a'); time.sleep(0.2); n = 0; e = ''\n"
"    try:\n"
"        for i in range(200):\n"
"            s.send(b'b'); n += 1; time.sleep(0.01)\n"
"    except OSError as x: e = err(x)\n"
"    print('writes_ok=%d err=%s' % (n, e), flush=True)\n"
"elif mode == 'slowread':\n"
"    s = connect(); time.sleep(2); n = 0; e = ''\n"
"    try:\n"
"        while True:\n"
"            b = s.recv(65536)\n"
"            if not b: break\n"
"            n += len(b)\n"
"    except OSError as x: e = err(x)\n"
"    print('got=%d err=%s' % (n, e), flush=True)\n";

static const char *python(void)
{
	if (access("/usr/bin/python3", X_OK) != 0)
		cr_skip_test("python3 is not installed");
	return "/usr/bin/python3";
}

struct pair {
	const char *py, *script, *log;
	int port;
	struct lab_proc *prog, *peer;
};

/* The program in prog_mode under opts, and its peer in peer_mode run to its end. */
static void run_pair(struct pair *p, const char *opts, const char *prog_mode,
		     const char *peer_mode)
{
	lab_enter(100);
	p->py = python();
	p->script = lab_path("close_path.py");
	lab_write_file(p->script, py_script);
	p->log = lab_path("prog.jsonl");
	p->port = lab_port();
	p->prog = lab_start_server("prog", lab_traced(p->log, opts), p->py, p->script, prog_mode,
				   lab_fmt("%d", p->port), NULL);
	p->peer = lab_run("peer", NULL, RUN_MS, p->py, p->script, peer_mode,
			  lab_fmt("%d", p->port), NULL);
	cr_assert_eq(lab_exit_code(p->peer), 0, "peer: %s%s", lab_stdout(p->peer),
		     lab_stderr(p->peer));
}

/*
 * inetd style under logging only: the child the socket went to (vfork +
 * exec, which no fork handler sees) answers after the parent closed its
 * copy. A FIN of the library's own would cut the answer off.
 */
Test(close_path, normal_close_sends_no_fin_to_a_socket_a_spawned_child_holds, .timeout = 60)
{
	struct pair p;

	run_pair(&p, "close=normal", "spawn", "read");
	cr_assert(strstr(lab_stdout(p.peer), "got=hello\n"), "peer: %s", lab_stdout(p.peer));
	cr_assert_eq(lab_wait(p.prog, 10000), 0, "program: %s%s", lab_stdout(p.prog),
		     lab_stderr(p.prog));
	cr_assert_eq(lab_value_long(lab_stdout(p.prog), "child"), 0, "program: %s",
		     lab_stdout(p.prog));
}

/* A close with data unread resets at once under defer too, as the kernel does. */
Test(close_path, defer_close_with_unread_data_resets_at_once, .timeout = 60)
{
	struct pair p;
	char e[32];

	run_pair(&p, "close=defer,defer_ms=20000", "unread", "flood");
	lab_value_str(lab_stdout(p.peer), "err", e, sizeof(e));
	cr_assert(!strcmp(e, "ECONNRESET") || !strcmp(e, "EPIPE"),
		  "the sender never learned: %s", lab_stdout(p.peer));
	lab_wait(p.prog, 10000);
	lab_records_expect(p.log, 1, "role=server,end=abort,tw=none,why=unread,policy=normal");
}

/* Data arriving at a deferred connection is answered with a reset at once. */
Test(close_path, defer_data_after_close_is_answered_with_a_reset, .timeout = 60)
{
	struct pair p;
	char e[32];

	run_pair(&p, "close=defer,defer_ms=20000", "quiet", "drip");
	lab_value_str(lab_stdout(p.peer), "err", e, sizeof(e));
	cr_assert(!strcmp(e, "ECONNRESET") || !strcmp(e, "EPIPE"), "peer: %s",
		  lab_stdout(p.peer));
	/* without the library the second write fails; a little slack for the closer */
	cr_assert_leq(lab_value_long(lab_stdout(p.peer), "writes_ok"), 5, "peer: %s",
		      lab_stdout(p.peer));
	lab_stop(p.prog, 5000);
	lab_records_expect(p.log, 1, "role=server,policy=defer,end=abort,tw=none,"
			   "why=data_after_close");
}

/*
 * fallback=abort at the deadline while the peer has not read yet: no reset
 * that would drop what was written, a normal close instead (why: unacked).
 */
Test(close_path, defer_fallback_abort_loses_no_data, .timeout = 60)
{
	struct pair p;

	run_pair(&p, "close=defer,defer_ms=300,fallback=abort", "bulk", "slowread");
	cr_assert(strstr(lab_stdout(p.peer), "got=1048576 err=\n"), "peer: %s",
		  lab_stdout(p.peer));
	lab_stop(p.prog, 5000);
	lab_records_expect(p.log, 1, "role=server,policy=defer,timeout=true,why=unacked,"
			   "end=active,tw=local");
}

/* A process that makes no TCP connection holds no fd of the library's. */
Test(close_path, no_tcp_connection_no_library_fd, .timeout = 60)
{
	const char *py, *script;
	struct lab_proc *bare, *pre;
	char a[256], b[256];

	lab_enter(100);
	py = python();
	script = lab_path("close_path.py");
	lab_write_file(script, py_script);
	bare = lab_run("bare", NULL, RUN_MS, py, script, "fds", "0", NULL);
	pre = lab_run("pre", lab_traced("none", "close=defer"), RUN_MS, py, script, "fds", "0",
		      NULL);
	lab_value_str(lab_stdout(bare), "fds", a, sizeof(a));
	lab_value_str(lab_stdout(pre), "fds", b, sizeof(b));
	cr_assert_str_eq(b, a, "with the library: %s, without: %s", b, a);
}
