/* SPDX-License-Identifier: MIT */
/*
 * The library's runtime modules, for the files that use several: the fd
 * table (fdtab.h), connections (conn.h), the deferred closer (closer.h),
 * shared connections (shared.h), the record sink (sink.h). Everything there
 * is reachable from the close path, so everything is lock-free,
 * allocation-free and async-signal-safe unless its comment says otherwise.
 */
#ifndef TWSHIM_RUNTIME_H
#define TWSHIM_RUNTIME_H

#include "closer.h"
#include "conn.h"
#include "fdtab.h"
#include "shared.h"
#include "sink.h"

#endif
