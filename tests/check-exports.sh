#!/bin/sh
# The preload library must export exactly the libc names it wraps: any other
# symbol could capture a call of the host program's by accident.
set -eu
lib=${1:-build/libtwshim.so}
want="_Exit _exit accept accept4 clone close close_range closefrom connect dup dup2 dup3 epoll_create epoll_create1 execl execle execlp execv execve execvp execvpe fclose fcntl fcntl64 fdopen fexecve popen posix_spawn posix_spawnp prlimit prlimit64 pthread_exit sendmsg setns setrlimit setrlimit64 setsockopt shutdown socket system unshare vfork"
got=$(nm -D --defined-only "$lib" | awk '$2 ~ /^[TtWiV]$/ {print $3}' | sed 's/@.*//' | sort | tr '\n' ' ' | sed 's/ $//')
if [ "$got" != "$want" ]; then
	echo "exported symbols of $lib differ from the wrapped libc names:" >&2
	echo "  want: $want" >&2
	echo "  got:  $got" >&2
	exit 1
fi
echo "exports: $lib exports exactly the $(echo "$want" | wc -w) wrapped names"
