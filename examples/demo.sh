#!/bin/sh
# SPDX-License-Identifier: MIT
#
# twshim demo: a tour of the library and the tool on one scenario.
#
# tw-client makes 200 short connections to tw-server and closes each one
# first, so each closed connection holds a client port in TIME_WAIT for
# 60 s. Every step runs in a private network namespace (tcp_tw_reuse=0,
# 100 ephemeral ports), so the numbers are exact and nothing on this host
# is touched:
#   1. without the library  : the client fails at connection 101, and the
#                             kernel cannot say whose the TIME_WAIT is
#   2. close=normal         : the same failure; the close records (twshim
#                             tw, twshim report) name tw-client as the holder
#   3. close=defer          : every connection succeeds; the TIME_WAIT moves
#                             to the server, and is attributed to tw-server
#   4. close=abort          : every connection succeeds, no TIME_WAIT at all,
#                             but the server sees resets
#   5. twshim ab            : close=normal against close=defer, three runs each
#
# Usage: examples/demo.sh [BUILD_DIR]   (make demo; needs root for unshare -n)
set -eu

CONNS=200
PORTS=100
SERVICE=127.0.0.1:8080
AB_RUNS=3

usage() {
	echo "usage: $0 [BUILD_DIR]"
	echo "Runs the twshim demo in private network namespaces (needs root)."
}

# Prints its input indented, so the tool's output stands out from the text.
indent() {
	sed '/./s/^/     /'
}

# Folds a JSON line after commas into lines of at most 76 characters.
fold_json() {
	awk '{
		n = split($0, f, ",")
		line = ""
		for (i = 1; i <= n; i++) {
			s = f[i] (i < n ? "," : "")
			if (line != "" && length(line) + length(s) > 76) {
				print line
				line = ""
			}
			line = line s
		}
		print line
	}'
}

# The summary line a test program prints at exit, without the empty fields.
summary() {
	tail -n 1 "$1" | sed 's/ drained=[0-9]*//; s/ first_error= first_error_conn=0//;
			      s/ first_error_op=.*//'
}

# --- inside a namespace -------------------------------------------------------

# A namespace of its own: loopback up, no TIME_WAIT reuse, 100 ephemeral ports.
netns_setup() {
	ip link set lo up 2>/dev/null || {
		echo "demo: cannot bring lo up in the namespace" >&2
		exit 1
	}
	echo 0 > /proc/sys/net/ipv4/tcp_tw_reuse
	echo "40000 $((40000 + PORTS - 1))" > /proc/sys/net/ipv4/ip_local_port_range
}

# Waits until the server started in the background (pid $1) says it listens.
wait_listening() {
	tries=0
	until grep -q '^listening' "$2" 2>/dev/null; do
		tries=$((tries + 1))
		if [ "$tries" -gt 300 ] || ! kill -0 "$1" 2>/dev/null; then
			echo "demo: the server did not start:" >&2
			cat "$3" >&2
			kill "$1" 2>/dev/null || true
			exit 1
		fi
		sleep 0.01
	done
}

# The server replies, waits for the client's close, and closes a connection
# left idle for 20 ms itself (a keep-alive timeout). The arguments are the
# command that starts it (env ... or twshim run ...); its output goes to $out.
start_server() {
	"$@" "$build/examples/tw-server" -l "$SERVICE" --close last --idle-ms 20 \
		--threads 16 > "$out/server.out" 2> "$out/server.err" &
	spid=$!
	wait_listening "$spid" "$out/server.out" "$out/server.err"
}

stop_server() {
	kill "$spid" 2>/dev/null || true
	wait "$spid" 2>/dev/null || true
}

# One step: the server and the client, then what the tool says.
scenario() {
	name=$1
	netns_setup
	cd "$out"
	if [ "$name" = plain ]; then
		start_server env -u LD_PRELOAD
		env -u LD_PRELOAD "$build/examples/tw-client" -n "$CONNS" --close first \
			"$SERVICE" > client.out 2> /dev/null || true
	else
		start_server "$build/twshim" run -o close=normal,log=server.jsonl --
		"$build/twshim" run -o "close=$name,log=client.jsonl" -- \
			"$build/examples/tw-client" -n "$CONNS" --close first "$SERVICE" \
			> client.out 2> /dev/null || true
	fi
	# give the last closes time to finish on the wire, then ask the kernel
	sleep 0.1
	stop_server

	echo "   tw-client: $(summary client.out)"
	echo "   tw-server: $(summary server.out)"
	echo
	if [ "$name" = plain ]; then
		# the local endpoints (one line per client port) are left out
		echo "   \$ twshim tw        (the table of local endpoints left out)"
		"$build/twshim" tw | awk 'NR == 1; /^REMOTE/ { on = 1 } on' |
			indent
		return
	fi
	echo "   \$ twshim tw client.jsonl server.jsonl"
	"$build/twshim" tw client.jsonl server.jsonl | indent
	echo
	echo "   \$ twshim report client.jsonl server.jsonl"
	if [ "$name" = normal ]; then
		"$build/twshim" report client.jsonl server.jsonl | indent
	else
		"$build/twshim" report client.jsonl server.jsonl | grep -v '^TW_NOW:' | indent
	fi
	if [ "$name" = defer ]; then
		echo
		echo "   \$ head -n 1 client.jsonl      (one line in the file; folded here)"
		head -n 1 client.jsonl | fold_json | indent
	fi
}

# The program that twshim ab runs, once per run, in a namespace of its own:
# a server without the library, and the client under the run's settings.
ab_program() {
	netns_setup
	out=$(mktemp -d /tmp/twshim-demo-ab.XXXXXX)
	start_server env -u LD_PRELOAD -u TWSHIM_OPTIONS -u TWSHIM_CONFIG
	rc=0
	"$build/examples/tw-client" -n "$CONNS" --close first "$SERVICE" || rc=$?
	stop_server
	rm -rf "$out"
	exit "$rc"
}

case ${1:-} in
--scenario)
	build=$3 out=$4
	scenario "$2"
	exit 0 ;;
--ab-program)
	build=$2
	ab_program ;;
-h|--help)
	usage
	exit 0 ;;
esac

# --- outside: checks, then each step in its own namespace --------------------

build=${1:-build}

if [ "$(id -u)" != 0 ]; then
	echo "demo: needs root: each step runs in a private network namespace" >&2
	echo "      (unshare -n) with its own tcp_tw_reuse and port range." >&2
	echo "      Run it as root: sudo make demo" >&2
	exit 1
fi
for f in "$build/libtwshim.so" "$build/twshim" "$build/examples/tw-client" \
	 "$build/examples/tw-server"; do
	if [ ! -e "$f" ]; then
		echo "demo: $f is missing; build first: make" >&2
		exit 1
	fi
done
for tool in unshare ip; do
	if ! command -v "$tool" > /dev/null 2>&1; then
		echo "demo: '$tool' is needed (util-linux, iproute2)" >&2
		exit 1
	fi
done

build=$(cd "$build" && pwd)
self=$(cd "$(dirname "$0")" && pwd)/$(basename "$0")
top=$(mktemp -d /tmp/twshim-demo.XXXXXX)
trap 'rm -rf "$top"' EXIT

# step NAME: the scenario NAME in a fresh namespace and a fresh directory
step() {
	mkdir "$top/$1"
	unshare -n -- "$self" --scenario "$1" "$build" "$top/$1"
}

cat <<EOF
twshim demo: tw-client makes $CONNS short connections to tw-server ($SERVICE)
and closes each one first. The server replies, waits for the client's close,
and closes a connection left idle for 20 ms itself. Each step runs in a fresh
network namespace with tcp_tw_reuse=0 and $PORTS ephemeral ports.

1. Without the library
   Each connection the client closes holds its port in TIME_WAIT for 60 s, so
   after $PORTS connections connect() fails with EADDRNOTAVAIL.

EOF
step plain
cat <<EOF

   The kernel counts the TIME_WAIT sockets but cannot say which process they
   belonged to: only the addresses are left.

2. close=normal: both programs run under the library, which records every close
   \$ twshim run -o close=normal,log=server.jsonl -- tw-server ... &
   \$ twshim run -o close=normal,log=client.jsonl -- tw-client ...

EOF
step normal
cat <<EOF

   Nothing changes, but 'twshim tw' matches each TIME_WAIT socket to the record
   of the close that made it: all $PORTS belong to tw-client, which closed first.

3. close=defer for the client: its close returns at once, but the library
   waits for the server's FIN, so the server closes first
   \$ twshim run -o close=defer,log=client.jsonl -- tw-client ...

EOF
step defer
cat <<EOF

   Every connection succeeds: the TIME_WAIT moved to the server, and the kernel's
   sockets are attributed to tw-server. The kernel holds fewer than the records
   say: a SYN from a reused client port recycles a server-side TIME_WAIT.

4. close=abort for the client: it resets each connection once the server has
   acknowledged everything it sent
   \$ twshim run -o close=abort,log=client.jsonl -- tw-client ...

EOF
step abort
cat <<EOF

   No TIME_WAIT anywhere, but the server, still waiting for the client's close,
   gets ECONNRESET instead: abort suits only peers that tolerate resets.

5. twshim ab: the same client under A = close=normal and B = close=defer,
   alternately, $AB_RUNS runs each, each run in a namespace of its own
   \$ twshim ab --netns -n $AB_RUNS -a close=normal -b close=defer -- demo.sh --ab-program

EOF
rc=0
"$build/twshim" ab --netns -n "$AB_RUNS" -a close=normal -b close=defer -- \
	"$self" --ab-program "$build" > "$top/ab.out" 2> "$top/ab.err" || rc=$?
if [ "$rc" -ge 2 ] || [ ! -s "$top/ab.out" ]; then
	cat "$top/ab.err" >&2
	echo "demo: twshim ab failed (exit $rc)" >&2
	exit 1
fi
indent < "$top/ab.out"
cat <<EOF

   Under A every run fails (exit 1) with $PORTS TIME_WAIT sockets on the client;
   under B every run passes, and the TIME_WAIT counted is the server's.
   ('twshim ab' itself exits 1 here, because some runs did not exit 0.)
EOF
