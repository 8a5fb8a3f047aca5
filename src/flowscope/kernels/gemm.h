/*
 * The register-blocked product shared by the fused kernels (fm.c, nsf.c), with the vector
 * type it is written in and the per-thread scratch memory.
 *
 * Every product is C[r][:] (op)= X[r][k] * Y[k][:]: MR rows of C times NV vectors of
 * columns live in registers, and each step over k broadcasts MR scalars of X (any strides,
 * so that a transposed operand is read in place) and loads NV vectors of a row of Y. No
 * product reduces across a vector, so there are no horizontal sums. The vector width is
 * the widest the target has: 64 bytes with AVX-512F, 32 with AVX, else 16 (GCC/Clang
 * generic vectors; without SIMD hardware the compiler lowers them to scalar code). The
 * register block MR x NV is sized to the register file: 6 x 4 with AVX-512 (24 of the 32
 * registers accumulate), 6 x 2 with AVX (12 of 16), 3 x 4 with 16-byte vectors; MK_MR and
 * MK_NV override them.
 *
 * The including file defines REAL (float or double). Needs GCC or Clang (vector
 * extensions, __thread).
 */
#ifndef FLOWSCOPE_GEMM_H
#define FLOWSCOPE_GEMM_H
#include <stdlib.h>
#include <string.h>

typedef REAL real;

#if defined(__AVX512F__)
#define VBYTES 64
#elif defined(__AVX__)
#define VBYTES 32
#else
#define VBYTES 16
#endif

/* the register block: MR x NV accumulators, NV vectors of Y and a broadcast */
#ifndef MK_MR
#if VBYTES == 16
#define MK_MR 3
#else
#define MK_MR 6
#endif
#endif
#ifndef MK_NV
#if VBYTES == 32
#define MK_NV 2
#else
#define MK_NV 4
#endif
#endif
#if MK_MR < 1 || MK_MR > 16 || MK_NV < 1 || MK_NV > 4 /* mk has 16 x 4 accumulators */
#error "MK_MR must be 1..16 and MK_NV 1..4"
#endif

#define VL ((int)(VBYTES / sizeof(real)))
/* any alignment: theta, gtheta and their layers need not be vector aligned */
typedef real vec __attribute__((vector_size(VBYTES), aligned(sizeof(real))));
typedef long long ivec __attribute__((vector_size(VBYTES), aligned(sizeof(real))));

#define INLINE static inline __attribute__((always_inline))

INLINE vec ld(const real *p) { return *(const vec *)p; }
INLINE void st(real *p, vec v) { *(vec *)p = v; }
INLINE vec splat(real s) { return (vec){} + s; }
/* m ? a : b, m a comparison's result (all ones or all zeros per lane) */
INLINE vec sel(ivec m, vec a, vec b) { return (vec)(((ivec)a & m) | ((ivec)b & ~m)); }

static inline long rup(long n, long m) { return (n + m - 1) / m * m; }

/*
 * C[r][v] (op)= sum_{k<K} X[r*xr + k*xk] * Y[k*ldy + v]  for r < mr, v < nv*VL.
 * With bias, the sums start from bias[v]. Stored: EP_PLAIN the sums, EP_LEAKY their
 * LeakyReLU, EP_MASK the sums times (mask[r*ldc + v] > 0 ? 1 : slope), EP_ADD C + sums.
 * mr and nv are compile-time constants at every call (always_inline); the accumulators
 * are named variables, not an array, so that they stay in registers.
 */
#define MK_ROWS(M) M(0) M(1) M(2) M(3) M(4) M(5) M(6) M(7) M(8) M(9) M(10) M(11) M(12) M(13) M(14) M(15)
#define MK_INIT(r) vec a##r##0 = b0, a##r##1 = b1, a##r##2 = b2, a##r##3 = b3;
#define MK_FMA(r)                                                                             \
    if (mr > r) {                                                                             \
        const vec xs = splat(x[r * xr]);                                                      \
        a##r##0 += xs * y0;                                                                   \
        if (nv > 1) a##r##1 += xs * y1;                                                       \
        if (nv > 2) a##r##2 += xs * y2;                                                       \
        if (nv > 3) a##r##3 += xs * y3;                                                       \
    }
#define MK_STORE1(r, v, OP)                                                                   \
    if (nv > v) {                                                                             \
        real *c = C + r * ldc + v * VL;                                                       \
        const vec a = a##r##v;                                                                \
        OP;                                                                                   \
    }
#define MK_STORE(r, OP)                                                                       \
    if (mr > r) {                                                                             \
        MK_STORE1(r, 0, OP) MK_STORE1(r, 1, OP) MK_STORE1(r, 2, OP) MK_STORE1(r, 3, OP)       \
    }
#define MK_ST_MASK(r) MK_STORE(r, st(c, a * sel((ivec)(ld(mask + (c - C)) > zero), one, s)))
#define MK_ST_LEAKY(r) MK_STORE(r, st(c, sel((ivec)(a > zero), a, a * s)))
#define MK_ST_PLAIN(r) MK_STORE(r, st(c, a))
#define MK_ST_ADD(r) MK_STORE(r, st(c, ld(c) + a))

enum { EP_PLAIN, EP_LEAKY, EP_MASK, EP_ADD }; /* what mk does as it stores C */

INLINE void mk(const int mr, const int nv, int K, const real *X, long xr, long xk,
               const real *Y, long ldy, real *C, long ldc, const real *bias, int mode,
               const real *mask, real slope) {
    vec b0 = {}, b1 = {}, b2 = {}, b3 = {};
    if (bias) {
        b0 = ld(bias);
        if (nv > 1) b1 = ld(bias + VL);
        if (nv > 2) b2 = ld(bias + 2 * VL);
        if (nv > 3) b3 = ld(bias + 3 * VL);
    }
    MK_ROWS(MK_INIT)
    for (int k = 0; k < K; k++) {
        const real *yk = Y + k * ldy;
        const vec y0 = ld(yk);
        const vec y1 = nv > 1 ? ld(yk + VL) : y0;
        const vec y2 = nv > 2 ? ld(yk + 2 * VL) : y0;
        const vec y3 = nv > 3 ? ld(yk + 3 * VL) : y0;
        const real *x = X + k * xk;
        MK_ROWS(MK_FMA)
    }
    const vec zero = {}, s = splat(slope), one = splat(1);
    if (mode == EP_MASK) {
        MK_ROWS(MK_ST_MASK)
    } else if (mode == EP_LEAKY) {
        MK_ROWS(MK_ST_LEAKY)
    } else if (mode == EP_ADD) {
        MK_ROWS(MK_ST_ADD)
    } else {
        MK_ROWS(MK_ST_PLAIN)
    }
}

/* mk with run-time mr <= MK_MR, nv <= MK_NV: one specialised copy per pair */
static void mk_any(int mr, int nv, int K, const real *X, long xr, long xk, const real *Y,
                   long ldy, real *C, long ldc, const real *bias, int mode, const real *mask,
                   real slope) {
#define MK_CASE(a, b)                                                                         \
    case (a) * 8 + (b):                                                                       \
        if ((a) <= MK_MR && (b) <= MK_NV)                                                     \
            mk((a) <= MK_MR ? (a) : 1, (b) <= MK_NV ? (b) : 1, K, X, xr, xk, Y, ldy, C, ldc,  \
               bias, mode, mask, slope);                                                      \
        return;
#define MK_ROW(a) MK_CASE(a, 1) MK_CASE(a, 2) MK_CASE(a, 3) MK_CASE(a, 4)
    switch (mr * 8 + nv) {
        MK_ROW(1) MK_ROW(2) MK_ROW(3) MK_ROW(4) MK_ROW(5) MK_ROW(6) MK_ROW(7) MK_ROW(8)
        MK_ROW(9) MK_ROW(10) MK_ROW(11) MK_ROW(12) MK_ROW(13) MK_ROW(14) MK_ROW(15) MK_ROW(16)
    }
#undef MK_ROW
#undef MK_CASE
}

/*
 * C (M x NP, row stride ldc) = X (M x K, strides xr, xk) . Y (K x NP, row stride ldy),
 * NP a multiple of VL; the epilogue as in mk (mask has C's layout).
 */
static void gemm(int M, int NP, int K, const real *X, long xr, long xk, const real *Y,
                 long ldy, real *C, long ldc, const real *bias, int mode, const real *mask,
                 real slope) {
    const int nvec = NP / VL;
    for (int v0 = 0; v0 < nvec; v0 += MK_NV) {
        const int nv = nvec - v0 < MK_NV ? nvec - v0 : MK_NV;
        const long c0 = (long)v0 * VL;
        const real *Yv = Y + c0, *bv = bias ? bias + c0 : NULL;
        int r0 = 0;
        for (; r0 + MK_MR <= M; r0 += MK_MR) {
            const long cr = r0 * ldc + c0;
            if (nv == MK_NV)
                mk(MK_MR, MK_NV, K, X + r0 * xr, xr, xk, Yv, ldy, C + cr, ldc, bv, mode,
                   mask ? mask + cr : NULL, slope);
            else
                mk_any(MK_MR, nv, K, X + r0 * xr, xr, xk, Yv, ldy, C + cr, ldc, bv, mode,
                       mask ? mask + cr : NULL, slope);
        }
        if (r0 < M) {
            const long cr = r0 * ldc + c0;
            mk_any(M - r0, nv, K, X + r0 * xr, xr, xk, Yv, ldy, C + cr, ldc, bv, mode,
                   mask ? mask + cr : NULL, slope);
        }
    }
}

/* acc[v] (+)= sum_{n<nb} G[n * ldg + v] for v < ldg, a multiple of VL (a bias's gradient) */
static void colsum(const real *G, int nb, long ldg, real *acc, int add) {
    for (long v = 0; v < ldg; v += VL) {
        vec s0 = {}, s1 = {}, s2 = {}, s3 = {};
        const real *g = G + v;
        int n = 0;
        for (; n + 4 <= nb; n += 4, g += 4 * ldg) {
            s0 += ld(g);
            s1 += ld(g + ldg);
            s2 += ld(g + 2 * ldg);
            s3 += ld(g + 3 * ldg);
        }
        for (; n < nb; n++, g += ldg) s0 += ld(g);
        const vec s = (s0 + s1) + (s2 + s3);
        st(acc + v, add ? ld(acc + v) + s : s);
    }
}

/* per-thread scratch, kept between calls (and not freed when the thread ends) */
static __thread real *scratch;
static __thread size_t scratch_len; /* in reals */

static real *get_scratch(size_t n) {
    if (n > scratch_len) {
        free(scratch);
        scratch_len = 0;
        size_t bytes = rup((long)(n * sizeof(real)), 64);
        scratch = (real *)aligned_alloc(64, bytes);
        if (!scratch) return NULL;
        scratch_len = bytes / sizeof(real);
    }
    return scratch;
}

#endif /* FLOWSCOPE_GEMM_H */
