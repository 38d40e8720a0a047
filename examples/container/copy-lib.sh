#!/bin/sh
# SPDX-License-Identifier: MIT
#
# copy-lib.sh LIB DIR: copies the preload library LIB and the shared
# libraries it needs beyond glibc (libconfig, libmnl) into DIR, and prints
# the LD_PRELOAD value that loads them from there:
#
#   $ copy-lib.sh /usr/lib/x86_64-linux-gnu/twshim/libtwshim.so /twshim
#   /twshim/libtwshim.so /twshim/libconfig.so.9 /twshim/libmnl.so.0
#
# With every one of them in LD_PRELOAD, ld.so finds the library's
# dependencies by their sonames among what it has loaded already: no
# LD_LIBRARY_PATH, nothing else of the image changed. glibc itself comes
# from the image (2.34 or newer). Used by the Dockerfile and by the
# Kubernetes init container of this directory.
set -eu
[ $# -eq 2 ] || { echo "usage: $0 LIB DIR" >&2; exit 2; }
lib=$1
dir=$2
mkdir -p "$dir"
cp -L "$lib" "$dir/libtwshim.so"
chmod 644 "$dir/libtwshim.so"
preload="$dir/libtwshim.so"
# ldd lines: "libconfig.so.9 => /lib/x86_64-linux-gnu/libconfig.so.9 (0x...)"
for dep in $(ldd "$lib" | awk '$2 == "=>" && $3 ~ /^\// { print $3 }'); do
	name=${dep##*/}
	case "$name" in
	# glibc's own: the image's must be used, matching its ld.so
	libc.so.* | libdl.so.* | libpthread.so.* | libm.so.* | librt.so.* | ld-linux*) continue ;;
	esac
	cp -L "$dep" "$dir/$name"
	chmod 644 "$dir/$name"
	preload="$preload $dir/$name"
done
echo "$preload"
