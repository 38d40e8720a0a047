// SPDX-License-Identifier: MIT
/*
 * posix_spawn(), posix_spawnp(), system() and popen(): children that glibc
 * makes without fork() (clone with CLONE_VM | CLONE_VFORK, no fork handler
 * runs) and that exec with every fd not marked close-on-exec (and any its
 * file actions made). Such a child may keep a connection open after the
 * program's close: the connections open at the spawn count as shared, as
 * after a fork, and so do those made later on the sockets open at the
 * spawn (conn_spawn_prepare()). Nothing else changes: each wrapper marks
 * and calls libc's.
 */
#include <spawn.h>
#include <stdlib.h>

#include "conn.h"
#include "runtime.h"
#include "shim.h"

SHIM_EXPORT int posix_spawn(pid_t *pid, const char *path, const posix_spawn_file_actions_t *fa,
			    const posix_spawnattr_t *attr, char *const argv[], char *const envp[])
{
	conn_spawn_prepare();
	return REAL(posix_spawn)(pid, path, fa, attr, argv, envp);
}

SHIM_EXPORT int posix_spawnp(pid_t *pid, const char *file, const posix_spawn_file_actions_t *fa,
			     const posix_spawnattr_t *attr, char *const argv[], char *const envp[])
{
	conn_spawn_prepare();
	return REAL(posix_spawnp)(pid, file, fa, attr, argv, envp);
}

SHIM_EXPORT int system(const char *command)
{
	conn_spawn_prepare();
	return REAL(system)(command);
}

SHIM_EXPORT FILE *popen(const char *command, const char *type)
{
	conn_spawn_prepare();
	return REAL(popen)(command, type);
}
