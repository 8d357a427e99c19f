/* Tiny inline helpers Swift cannot express directly. Header-only; nothing here is
 * exported from libbatchcore.so. */
#ifndef BATCHCORE_CSUPPORT_H
#define BATCHCORE_CSUPPORT_H

/* The quantized-weight dot products (included here so a module cache built before
 * that header existed is invalidated by this file's change). */
#include "quant_dot.h"
#include "quant_kdot.h"
#include "quant_hdot.h"
#include "quant_rows.h"
#include "transpose.h"
#include "bf16_gemm.h"

/* The spin-wait hint (x86 PAUSE): lets a spinning core yield pipeline resources. */
static inline void bc_internal_spin_pause(void) {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#endif
}

/* Hint: start loading the cache line holding p into L2 (and L3) ahead of a read. */
static inline void bc_internal_prefetch_l2(const void *p) {
    __builtin_prefetch(p, 0, 2);
}

#endif
