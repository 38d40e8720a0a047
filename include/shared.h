/* SPDX-License-Identifier: MIT */
/* Connections more than one process holds. */
#ifndef TWSHIM_SHARED_H
#define TWSHIM_SHARED_H

#include <stdbool.h>
#include <stdint.h>

/* true when the parent or a child may hold fd's socket too */
bool holders_elsewhere(int fd);
int shared_init(void);
/* true for the first process to claim the cookie: it writes the record */
bool shared_claim(uint64_t cookie);

#endif
