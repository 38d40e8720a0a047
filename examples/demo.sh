#!/bin/sh
# SPDX-License-Identifier: MIT
#
# twshim demo: a client that closes its connections first runs out of
# ephemeral ports, because each closed connection holds its port in
# TIME_WAIT for 60 s. Shown three times, each in a private network
# namespace (tcp_tw_reuse=0, 100 ephemeral ports) so the numbers are exact
# and nothing on this host is touched:
#   1. without the library   : the client fails at connection 101
#   2. close=normal          : the same failure, now with close records that
#                              name the client as the holder of the TIME_WAIT
#   3. close=defer           : every connection succeeds; the server side
#                              holds the TIME_WAIT instead
#
# Usage: examples/demo.sh [BUILD_DIR]   (make demo; needs root for unshare -n)
set -eu

CONNS=200
PORTS=100
SERVICE_PORT=8080

usage() {
	echo "usage: $0 [BUILD_DIR]"
	echo "Runs the twshim demo in private network namespaces (needs root)."
}

# --- inside a namespace: one scenario -----------------------------------------

scenario() {
	name=$1 build=$2 out=$3
	client="$build/examples/tw-client"
	server="$build/examples/tw-server"

	ip link set lo up 2>/dev/null || {
		echo "demo: cannot bring lo up in the namespace" >&2
		exit 1
	}
	echo 0 > /proc/sys/net/ipv4/tcp_tw_reuse
	echo "40000 $((40000 + PORTS - 1))" > /proc/sys/net/ipv4/ip_local_port_range

	# The server replies, waits for the client's close, and closes a
	# connection left idle for 20 ms itself (a keep-alive timeout).
	"$server" -l "127.0.0.1:$SERVICE_PORT" --close last --idle-ms 20 --threads 16 \
		> "$out/server.out" 2> "$out/server.err" &
	spid=$!
	tries=0
	until grep -q '^listening' "$out/server.out" 2>/dev/null; do
		tries=$((tries + 1))
		if [ "$tries" -gt 200 ]; then
			echo "demo: the server did not start:" >&2
			cat "$out/server.err" >&2
			kill "$spid" 2>/dev/null || true
			exit 1
		fi
		sleep 0.01
	done

	log="$out/$name.jsonl"
	case $name in
	plain)
		env -u LD_PRELOAD "$client" -n "$CONNS" --close first \
			"127.0.0.1:$SERVICE_PORT" > "$out/client.out" 2> /dev/null || true ;;
	*)
		LD_PRELOAD="$build/libtwshim.so" TWSHIM_OPTIONS="close=$name,log=$log" \
			"$client" -n "$CONNS" --close first "127.0.0.1:$SERVICE_PORT" \
			> "$out/client.out" 2> /dev/null || true ;;
	esac

	# give the last closes time to finish on the wire, then ask the kernel
	sleep 0.1
	kill "$spid" 2>/dev/null || true
	wait "$spid" 2>/dev/null || true
	tw_client=$(ss -Htan state time-wait "( dport = :$SERVICE_PORT )" | wc -l)
	tw_server=$(ss -Htan state time-wait "( sport = :$SERVICE_PORT )" | wc -l)
	summary=$(tail -n 1 "$out/client.out")

	echo "  client:  $summary"
	echo "  kernel:  TIME_WAIT $(ss -Htan state time-wait | wc -l)" \
	     "(client side $tw_client, server side $tw_server)"
	if [ -s "$log" ]; then
		if [ -x "$build/twshim" ]; then
			echo "  records: $build/twshim report $(basename "$log")"
			"$build/twshim" report "$log" | sed 's/^/    /'
		else
			echo "  records: $(wc -l < "$log") lines;" \
			     "$(grep -c '"tw":"local"' "$log") tw=local," \
			     "$(grep -c '"tw":"peer"' "$log") tw=peer," \
			     "$(grep -c '"tw":"none"' "$log") tw=none"
		fi
		echo "  first record:"
		head -n 1 "$log" | sed 's/^/    /'
	fi
}

if [ "${1:-}" = "--scenario" ]; then
	scenario "$2" "$3" "$4"
	exit 0
fi

# --- outside: checks, then each scenario in its own namespace ---------------

case ${1:-} in
-h|--help)
	usage
	exit 0 ;;
esac
build=${1:-build}

if [ "$(id -u)" != 0 ]; then
	echo "demo: needs root: each scenario runs in a private network namespace" >&2
	echo "      (unshare -n) with its own tcp_tw_reuse and port range." >&2
	echo "      Run it as root: sudo make demo" >&2
	exit 1
fi
for f in "$build/libtwshim.so" "$build/examples/tw-client" "$build/examples/tw-server"; do
	if [ ! -e "$f" ]; then
		echo "demo: $f is missing; build first: make" >&2
		exit 1
	fi
done
for tool in unshare ip ss; do
	if ! command -v "$tool" > /dev/null 2>&1; then
		echo "demo: '$tool' is needed (util-linux, iproute2)" >&2
		exit 1
	fi
done

build=$(cd "$build" && pwd)
self=$(cd "$(dirname "$0")" && pwd)/$(basename "$0")
out=$(mktemp -d /tmp/twshim-demo.XXXXXX)
trap 'rm -rf "$out"' EXIT

echo "twshim demo: $CONNS short connections to one server; the client closes first."
echo "Each run: a fresh network namespace, tcp_tw_reuse=0, $PORTS ephemeral ports."
echo

echo "1. Without the library"
unshare -n -- "$self" --scenario plain "$build" "$out"
echo "   Every connection the client closed holds its port in TIME_WAIT for 60 s:"
echo "   after $PORTS connections connect() fails with EADDRNOTAVAIL."
echo

echo "2. LD_PRELOAD=libtwshim.so TWSHIM_OPTIONS=close=normal,log=normal.jsonl"
unshare -n -- "$self" --scenario normal "$build" "$out"
echo "   Nothing changes, but every connection now has a close record: end=active,"
echo "   tw=local, from process tw-client, one per TIME_WAIT socket the kernel holds."
echo

echo "3. LD_PRELOAD=libtwshim.so TWSHIM_OPTIONS=close=defer,log=defer.jsonl"
unshare -n -- "$self" --scenario defer "$build" "$out"
echo "   The client's close returns at once but the library waits for the server's"
echo "   FIN: the server closes first, so the TIME_WAIT lands on its side and the"
echo "   client's ports are free again. (Fewer server-side sockets than connections:"
echo "   a SYN from a reused client port recycles a server-side TIME_WAIT.)"
