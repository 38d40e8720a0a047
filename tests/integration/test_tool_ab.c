// SPDX-License-Identifier: MIT
/*
 * `twshim ab`: two settings compared on the same program. The server runs
 * in a second network namespace behind a veth pair, so that "TIME_WAIT
 * here" means the client's host only, as it would between two machines.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <net/if.h>
#include <netinet/in.h>
#include <sched.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>
#include <linux/if_link.h>
#include <linux/rtnetlink.h>
#include <linux/veth.h>

#include <criterion/criterion.h>
#include <jansson.h>
#include <libmnl/libmnl.h>

#include "lab.h"

/* RFC 2544 benchmark range, only inside the test's own namespaces */
#define CLIENT_IP	"198.18.0.1"
#define SERVER_IP	"198.18.0.2"

static const char *tool(void)
{
	return lab_build_path("twshim");
}

/* veth pair: `name` here, `peer` created straight into the namespace peer_ns. */
static void veth_create(const char *name, const char *peer, int peer_ns)
{
	char buf[1024], ans[4096];
	struct nlattr *info, *data, *pinfo;
	struct ifinfomsg *ifm;
	struct mnl_socket *nl;
	struct nlmsghdr *nlh;
	ssize_t n;
	int ret;

	memset(buf, 0, sizeof(buf));
	nlh = mnl_nlmsg_put_header(buf);
	nlh->nlmsg_type = RTM_NEWLINK;
	nlh->nlmsg_flags = NLM_F_REQUEST | NLM_F_CREATE | NLM_F_EXCL | NLM_F_ACK;
	nlh->nlmsg_seq = 1;
	ifm = mnl_nlmsg_put_extra_header(nlh, sizeof(*ifm));
	ifm->ifi_family = AF_UNSPEC;
	mnl_attr_put_strz(nlh, IFLA_IFNAME, name);
	info = mnl_attr_nest_start(nlh, IFLA_LINKINFO);
	mnl_attr_put_strz(nlh, IFLA_INFO_KIND, "veth");
	data = mnl_attr_nest_start(nlh, IFLA_INFO_DATA);
	pinfo = mnl_attr_nest_start(nlh, VETH_INFO_PEER);
	/* the peer's attributes follow an ifinfomsg of its own (drivers/net/veth.c) */
	nlh->nlmsg_len += MNL_ALIGN(sizeof(struct ifinfomsg));
	mnl_attr_put_strz(nlh, IFLA_IFNAME, peer);
	mnl_attr_put_u32(nlh, IFLA_NET_NS_FD, (uint32_t)peer_ns);
	mnl_attr_nest_end(nlh, pinfo);
	mnl_attr_nest_end(nlh, data);
	mnl_attr_nest_end(nlh, info);

	nl = mnl_socket_open(NETLINK_ROUTE);
	cr_assert(nl, "netlink: %s", strerror(errno));
	cr_assert_geq(mnl_socket_bind(nl, 0, MNL_SOCKET_AUTOPID), 0);
	cr_assert_geq(mnl_socket_sendto(nl, nlh, nlh->nlmsg_len), 0);
	n = mnl_socket_recvfrom(nl, ans, sizeof(ans));
	cr_assert_gt(n, 0);
	ret = mnl_cb_run(ans, (size_t)n, 1, mnl_socket_get_portid(nl), NULL, NULL);
	if (ret < 0 && (errno == EOPNOTSUPP || errno == ENOENT))
		cr_skip_test("no veth support in this kernel: %s", strerror(errno));
	cr_assert_geq(ret, 0, "RTM_NEWLINK veth: %s", strerror(errno));
	mnl_socket_close(nl);
}

/* address/24 on ifname, and ifname up (ioctl: enough for one IPv4 address) */
static void if_up(const char *ifname, const char *addr)
{
	struct sockaddr_in *sin;
	struct ifreq ifr;
	int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);

	cr_assert_geq(fd, 0);
	if (addr) {
		memset(&ifr, 0, sizeof(ifr));
		snprintf(ifr.ifr_name, sizeof(ifr.ifr_name), "%s", ifname);
		sin = (struct sockaddr_in *)&ifr.ifr_addr;
		sin->sin_family = AF_INET;
		inet_pton(AF_INET, addr, &sin->sin_addr);
		cr_assert_eq(ioctl(fd, SIOCSIFADDR, &ifr), 0, "%s: %s", ifname, strerror(errno));
		inet_pton(AF_INET, "255.255.255.0", &sin->sin_addr);
		cr_assert_eq(ioctl(fd, SIOCSIFNETMASK, &ifr), 0, "%s: %s", ifname,
			     strerror(errno));
	}
	memset(&ifr, 0, sizeof(ifr));
	snprintf(ifr.ifr_name, sizeof(ifr.ifr_name), "%s", ifname);
	cr_assert_eq(ioctl(fd, SIOCGIFFLAGS, &ifr), 0);
	ifr.ifr_flags |= IFF_UP;
	cr_assert_eq(ioctl(fd, SIOCSIFFLAGS, &ifr), 0, "%s up: %s", ifname, strerror(errno));
	close(fd);
}

/*
 * The lab's namespace is the client's host; a second namespace, joined by a
 * veth pair, is the server's. The server is started there; the test process
 * comes back to the client's side. Returns the server's address.
 */
static struct lab_proc *server_elsewhere(const char *const *server_args, const char **addr)
{
	int here, there, port = lab_port();
	struct lab_proc *srv;
	char *argv[32];
	int n = 0;

	here = open("/proc/self/ns/net", O_RDONLY | O_CLOEXEC);
	cr_assert_geq(here, 0);
	cr_assert_eq(unshare(CLONE_NEWNET), 0, "%s", strerror(errno));
	there = open("/proc/self/ns/net", O_RDONLY | O_CLOEXEC);
	cr_assert_geq(there, 0);
	if_up("lo", NULL);
	cr_assert_eq(setns(here, CLONE_NEWNET), 0, "%s", strerror(errno));

	veth_create("twab0", "twab1", there);
	if_up("twab0", CLIENT_IP);

	cr_assert_eq(setns(there, CLONE_NEWNET), 0);
	if_up("twab1", SERVER_IP);
	*addr = lab_fmt("%s:%d", SERVER_IP, port);
	argv[n++] = (char *)"tw-server";
	argv[n++] = (char *)"-l";
	argv[n++] = (char *)*addr;
	for (; *server_args && n < 31; server_args++)
		argv[n++] = (char *)*server_args;
	argv[n] = NULL;
	srv = lab_spawnv("server", NULL, lab_example("tw-server"), argv);
	lab_wait_listening(srv, 5000);
	cr_assert_eq(setns(here, CLONE_NEWNET), 0);
	close(here);
	close(there);
	return srv;
}

static json_t *ab_json(struct lab_proc *p)
{
	json_t *j = json_loads(lab_stdout(p), 0, NULL);

	cr_assert(j, "twshim ab --json: not JSON:\n%s\nstderr:\n%s", lab_stdout(p),
		  lab_stderr(p));
	return j;
}

static json_t *arm(json_t *j, const char *name)
{
	json_t *a = json_object_get(json_object_get(j, "arms"), name);

	cr_assert(a, "no arm %s", name);
	return a;
}

static long num(json_t *o, const char *key)
{
	json_t *v = json_object_get(o, key);

	cr_assert(json_is_number(v), "\"%s\" is not a number in %s", key, json_dumps(o, 0));
	return (long)json_number_value(v);
}

/*
 * The client closes first. Under A (normal) each connection leaves TIME_WAIT
 * on the client's host; under B (defer) the client waits for the server's
 * close, which comes after the server's idle timeout, and the TIME_WAIT goes
 * to the server's host: none here.
 */
Test(tool_ab, defer_moves_timewait_off_the_client_host, .timeout = 120)
{
	static const char *const srv_args[] = { "--close", "last", "--idle-ms", "200",
						"--threads", "8", NULL };
	struct lab_proc *srv, *p;
	const char *addr;
	json_t *j, *a, *b;

	lab_enter(200);
	srv = server_elsewhere(srv_args, &addr);
	p = lab_spawn("ab", NULL, tool(), "ab", "-a", "close=normal", "-b",
		      "close=defer,defer_ms=3000", "-n", "2", "--json", "--",
		      lab_example("tw-client"), "-n", "5", "--close", "first", addr, NULL);
	cr_assert_eq(lab_wait(p, 90000), 0, "ab failed:\n%s", lab_stderr(p));
	j = ab_json(p);
	a = arm(j, "A");
	b = arm(j, "B");

	cr_expect_eq(num(a, "runs"), 2);
	cr_expect_eq(num(b, "runs"), 2);
	cr_expect_eq(num(a, "connections"), 10);
	cr_expect_eq(num(a, "tw_local"), 10);
	cr_expect_eq(num(a, "tw_peak_median"), 5, "A leaves its TIME_WAIT here");
	cr_expect_eq(num(a, "tw_end_median"), 5);

	cr_expect_eq(num(b, "connections"), 10);
	cr_expect_eq(num(b, "tw_peer"), 10);
	cr_expect_eq(num(b, "tw_local"), 0);
	cr_expect_eq(num(b, "deferred"), 10);
	cr_expect_eq(num(b, "timeouts"), 0);
	cr_expect_eq(num(b, "tw_peak_median"), 0, "B leaves none here");
	cr_expect_eq(num(b, "tw_end_median"), 0);
	/* the runs' TIME_WAIT is still here: 2 runs of A, 5 each */
	cr_expect_eq(lab_tw_total(), 10);
	cr_expect(strstr(lab_stderr(p), "run 4/4"), "progress on stderr: %s", lab_stderr(p));
	json_decref(j);

	/* the same for people: one row per measure, A and B side by side */
	p = lab_spawn("ab-table", NULL, tool(), "ab", "-a", "close=normal", "-b",
		      "close=defer,defer_ms=3000", "-n", "1", "--",
		      lab_example("tw-client"), "-n", "3", "--close", "first", addr, NULL);
	cr_assert_eq(lab_wait(p, 60000), 0, "%s", lab_stderr(p));
	cr_expect(strstr(lab_stdout(p), "TIME_WAIT peak"), "%s", lab_stdout(p));
	cr_expect(strstr(lab_stdout(p), "close=defer,defer_ms=3000"), "%s", lab_stdout(p));
	lab_stop(srv, 5000);
}

Test(tool_ab, exit_codes_of_every_run_are_listed, .timeout = 60)
{
	struct lab_proc *p;
	json_t *j, *codes, *c;
	size_t i;

	lab_enter(100);
	p = lab_spawn("ab", NULL, tool(), "ab", "-a", "close=normal", "-b", "close=abort", "-n",
		      "2", "--json", "--", "/bin/sh", "-c", "exit 3", NULL);
	cr_expect_eq(lab_wait(p, 30000), 1, "a run that fails makes ab fail");
	j = ab_json(p);
	for (int k = 0; k < 2; k++) {
		codes = json_object_get(arm(j, k ? "B" : "A"), "exit_codes");
		cr_assert_eq(json_array_size(codes), 2);
		json_array_foreach(codes, i, c)
			cr_expect_eq(json_integer_value(c), 3);
	}
	json_decref(j);

	p = lab_spawn("ab-table", NULL, tool(), "ab", "-a", "close=normal", "-b", "close=abort",
		      "-n", "2", "--", "/bin/sh", "-c", "exit 5", NULL);
	cr_expect_eq(lab_wait(p, 30000), 1);
	cr_expect(strstr(lab_stdout(p), "5 5"), "%s", lab_stdout(p));
}

Test(tool_ab, a_config_file_arm_and_an_options_arm, .timeout = 60)
{
	struct lab_proc *srv, *p;
	const char *conf;
	json_t *j;
	FILE *f;

	lab_enter(100);
	conf = lab_path("abort.conf");
	f = fopen(conf, "w");
	cr_assert(f);
	fputs("close = \"abort\";\n", f);
	fclose(f);
	srv = lab_start_server("server", NULL, lab_example("tw-server"), "--close", "last",
			       "-l", lab_addr4(lab_port()), NULL);
	p = lab_spawn("ab", NULL, tool(), "ab", "-a", "", "-b", conf, "-n", "1", "--json", "--",
		      lab_example("tw-client"), "-n", "4", "--close", "first",
		      lab_fmt("127.0.0.1:%d", srv->port), NULL);
	cr_assert_eq(lab_wait(p, 30000), 0, "%s", lab_stderr(p));
	j = ab_json(p);
	cr_expect_str_eq(json_string_value(json_object_get(arm(j, "A"), "kind")), "options");
	cr_expect_str_eq(json_string_value(json_object_get(arm(j, "B"), "kind")), "file");
	cr_expect_eq(num(arm(j, "A"), "tw_local"), 4, "defaults: normal close");
	cr_expect_eq(num(arm(j, "A"), "tw_peak_median"), 4);
	cr_expect_eq(num(arm(j, "B"), "tw_none"), 4, "the file's close=abort");
	cr_expect_eq(num(arm(j, "B"), "tw_peak_median"), 0);
	json_decref(j);
	lab_stop(srv, 5000);
}

Test(tool_ab, bad_settings_or_program_exit_2_before_any_run, .timeout = 30)
{
	struct lab_proc *p;

	lab_enter(100);
	p = lab_spawn("bad-a", NULL, tool(), "ab", "-a", "close=sometimes", "-b", "close=defer",
		      "--", "/bin/true", NULL);
	cr_expect_eq(lab_wait(p, 10000), 2);
	cr_expect(strstr(lab_stderr(p), "-a"), "%s", lab_stderr(p));
	cr_expect(strstr(lab_stderr(p), "close"), "%s", lab_stderr(p));
	cr_expect_null(strstr(lab_stderr(p), "run 1/"), "no run may start: %s", lab_stderr(p));

	p = lab_spawn("bad-b", NULL, tool(), "ab", "-a", "close=normal", "-b",
		      "tests/fixtures/conf/bad-close-value.conf", "--", "/bin/true", NULL);
	cr_expect_eq(lab_wait(p, 10000), 2);
	cr_expect(strstr(lab_stderr(p), "bad-close-value.conf"), "%s", lab_stderr(p));

	p = lab_spawn("missing", NULL, tool(), "ab", "-a", "close=normal", "-b", "close=defer",
		      "--", "no-such-program-twshim", NULL);
	cr_expect_eq(lab_wait(p, 10000), 2);
	cr_expect(strstr(lab_stderr(p), "no-such-program-twshim"), "%s", lab_stderr(p));

	p = lab_spawn("no-b", NULL, tool(), "ab", "-a", "close=normal", "--", "/bin/true", NULL);
	cr_expect_eq(lab_wait(p, 10000), 2);
	p = lab_spawn("bad-n", NULL, tool(), "ab", "-a", "", "-b", "", "-n", "0", "--",
		      "/bin/true", NULL);
	cr_expect_eq(lab_wait(p, 10000), 2);
}

/*
 * --netns: every run in a namespace of its own, server and client inside
 * it. Each run counts exactly its own 4 TIME_WAIT sockets (none carried
 * over from the run before), and none reach the test's namespace.
 */
Test(tool_ab, netns_gives_each_run_a_fresh_namespace, .timeout = 120)
{
	struct lab_proc *p;
	const char *script;
	json_t *j, *runs, *r;
	size_t i;

	lab_enter(100);
	script = lab_fmt("'%s' -l 127.0.0.1:8080 -n 4 --close last | "
			 "{ read l; '%s' -n 4 --close first 127.0.0.1:8080 >&2; rc=$?; "
			 "cat >/dev/null; exit $rc; }",
			 lab_example("tw-server"), lab_example("tw-client"));
	p = lab_spawn("ab", NULL, tool(), "ab", "--netns", "-a", "close=normal", "-b",
		      "close=abort", "-n", "2", "--json", "--", "/bin/sh", "-c", script, NULL);
	cr_assert_eq(lab_wait(p, 90000), 0, "%s", lab_stderr(p));
	j = ab_json(p);
	cr_expect(json_is_true(json_object_get(j, "netns")));
	runs = json_object_get(arm(j, "A"), "per_run");
	cr_assert_eq(json_array_size(runs), 2);
	json_array_foreach(runs, i, r) {
		cr_expect_eq(num(r, "tw_end"), 4, "run %zu", i + 1);
		cr_expect_eq(num(r, "tw_peak"), 4, "run %zu", i + 1);
	}
	/* client and server both write records: 4 client (local), 4 server (peer) */
	cr_expect_eq(num(arm(j, "A"), "tw_local"), 8);
	cr_expect_eq(num(arm(j, "A"), "tw_peer"), 8);
	cr_expect_eq(num(arm(j, "B"), "tw_peak_median"), 0);
	cr_expect_eq(lab_tw_total(), 0, "nothing leaks into the caller's namespace");
	json_decref(j);
}
