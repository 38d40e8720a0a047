/* SPDX-License-Identifier: MIT */
/* Connections more than one process holds. */
#ifndef TWSHIM_SHARED_H
#define TWSHIM_SHARED_H

#include <stdbool.h>
#include <stdint.h>

/* true when the parent or a child may hold fd's socket too */
bool holders_elsewhere(int fd);
/*
 * Around a run of holders_elsewhere() questions in this thread: the
 * parent's and the children's fds are read once, at holders_begin().
 */
void holders_begin(void);
void holders_end(void);
int shared_init(void);
/* true for the first process to claim the cookie: it writes the record */
bool shared_claim(uint64_t cookie);

#endif
