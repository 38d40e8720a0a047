/* SPDX-License-Identifier: MIT */
/*
 * What the wrappers share: the real libc functions, resolved once with
 * dlsym(RTLD_NEXT) under pthread_once.
 */
#ifndef TWSHIM_SHIM_H
#define TWSHIM_SHIM_H

#include <spawn.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <sys/socket.h>

#define SHIM_EXPORT __attribute__((visibility("default")))

struct real {
	int (*socket)(int, int, int);
	int (*connect)(int, const struct sockaddr *, socklen_t);
	int (*accept)(int, struct sockaddr *, socklen_t *);
	int (*accept4)(int, struct sockaddr *, socklen_t *, int);
	int (*close)(int);
	int (*shutdown)(int, int);
	int (*dup)(int);
	int (*dup2)(int, int);
	int (*dup3)(int, int, int);
	int (*fcntl)(int, int, ...);
	int (*fcntl64)(int, int, ...);
	int (*close_range)(unsigned, unsigned, int);
	void (*closefrom)(int);
	int (*fclose)(FILE *);
	FILE *(*fdopen)(int, const char *);
	int (*epoll_create)(int);
	int (*epoll_create1)(int);
	void (*pthread_exit)(void *) __attribute__((noreturn));
	void (*_exit)(int) __attribute__((noreturn));
	void (*_Exit)(int) __attribute__((noreturn));
	int (*setsockopt)(int, int, int, const void *, socklen_t);
	ssize_t (*sendmsg)(int, const struct msghdr *, int);
	int (*execve)(const char *, char *const[], char *const[]);
	int (*execv)(const char *, char *const[]);
	int (*execvp)(const char *, char *const[]);
	int (*execvpe)(const char *, char *const[], char *const[]);
	int (*fexecve)(int, char *const[], char *const[]);
	int (*unshare)(int);
	int (*setns)(int, int);
	int (*clone)(int (*)(void *), void *, int, void *, ...);
	int (*posix_spawn)(pid_t *, const char *, const posix_spawn_file_actions_t *,
			   const posix_spawnattr_t *, char *const[], char *const[]);
	int (*posix_spawnp)(pid_t *, const char *, const posix_spawn_file_actions_t *,
			    const posix_spawnattr_t *, char *const[], char *const[]);
	int (*system)(const char *);
	FILE *(*popen)(const char *, const char *);
};

extern struct real real;

/* the program set TCP_FASTOPEN_CONNECT on a socket (shim/sockopt.c) */
extern _Atomic bool shim_fastopen;

/* fork()'s handlers (shim/init.c), which clone() without CLONE_VM or CLONE_FILES runs too */
void shim_fork_prepare(void);
void shim_fork_parent(void);
void shim_clone_child(void);

/* Resolves every real function once; safe to call from any wrapper but close. */
void shim_symbols(void);

#define REAL(f) (__builtin_expect(real.f != NULL, 1) ? real.f : (shim_symbols(), real.f))

#endif
