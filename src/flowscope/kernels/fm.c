/*
 * Fused training loss and gradient of flowscope's flow matching MLP.
 *
 * For network inputs y (B, D), times t (B,), targets u (B, D) and optional class ids,
 * evaluates the velocity MLP on [y, t, emb(label)] (nlin Linear layers, LeakyReLU with
 * negative slope `slope` between them, none after the last) and returns
 *     loss = (1/B) sum_n sum_d (MLP(y_n, t_n, emb[label_n])_d - u_nd)^2
 * and, on request, its gradient with respect to every weight, bias and embedding row.
 * The path (y, u) is built by the caller; this is the network's forward and backward pass
 * without PyTorch's per-operation overhead.
 *
 * Layout. theta holds the layers in order, each as its weight (out_i, in_i) row-major
 * (nn.Linear's layout) followed by its bias (out_i); gtheta has the same layout, emb and
 * gemb are (C, E). Inside, every activation and gradient is stored batch-major,
 * [sample][feature], each row padded with zeros to a whole number of vectors. Then all
 * three products of a layer,
 *     forward        O  (B x out) = A (B x in)  . W^T
 *     input gradient P  (B x in)  = G (B x out) . W
 *     weight gradient gW (out x in) = G^T . A   (or gW^T = A^T . G, whichever pads less)
 * are the same register-blocked product C[r][:] += X[r][k] * Y[k][:]: MR rows of C times
 * NV vectors of columns live in registers, and each step over k broadcasts MR scalars of X
 * (any strides, so G^T and A^T are read in place) and loads NV vectors of a row of Y. No
 * product reduces across a vector, so there are no horizontal sums. Only W^T (and W with
 * padded rows, where `in` is not a whole number of vectors) are copied per call.
 * The bias and the LeakyReLU are applied as the forward product's registers are stored;
 * the LeakyReLU derivative (from the stored activation, which has the sign of its
 * pre-activation for slope >= 0) as the input gradient's are.
 *
 * The batch goes through the network in chunks of FM_CHUNK samples (the gradients are
 * sums over samples, so the chunks' add up), which bounds the scratch memory whatever B.
 *
 * Compile-time choices. The vector width is the widest the target has: 64 bytes with
 * AVX-512F, 32 with AVX, else 16 (GCC/Clang generic vectors; without SIMD hardware the
 * compiler lowers them to scalar code). The register block MR x NV is sized to the
 * register file: 6 x 4 with AVX-512 (24 of the 32 registers accumulate), 6 x 2 with AVX
 * (12 of 16), 3 x 4 with 16-byte vectors (gemm.h). MK_MR, MK_NV and FM_CHUNK override them. All
 * scratch memory is one 64-byte aligned block per thread, kept between calls and grown
 * when a call needs more. No -ffast-math is assumed: the loader's flags
 * (-fassociative-math and friends, GCC's default FMA contraction) suffice.
 *
 * Compiled by kernels/build.py with REAL = float and REAL = double, and NAME the exported
 * symbol, once per function: NAME = fm_loss_<f32|f64> builds the loss above (the default),
 * NAME = fm_euler_<f32|f64> the sampler below. Needs GCC or Clang (vector extensions,
 * __thread).
 *
 * The sampler. fm_euler integrates dy/dt = MLP(y, t, emb(label)) + g(t) y with Euler steps
 * along a grid of times, the same arithmetic as flowscope's PyTorch sampler
 * (VelocityField.frozen and matching.solvers.integrate) up to rounding: the first layer's
 * part that does not depend on y or t, bias + emb(label) . W_emb^T, is computed once per
 * point; the rest of the first layer, (that + t w_t) + y . W_y^T, is D vector FMAs per
 * row; the other layers are the forward product above. Points are independent, so the
 * batch goes through all the steps in chunks of FM_STEP_CHUNK samples, whose activations
 * stay in the L1 cache; each point's own sequence of operations is that of the PyTorch
 * sampler, whatever the chunk.
 */
#include <stdlib.h>
#include <string.h>

#ifndef REAL
#define REAL double
#endif
#ifndef NAME
#define NAME fm_loss_f64
#endif
/* FM_EULER: whether NAME is fm_euler_f32 or fm_euler_f64 (it pastes into a defined macro) */
#define FM_CAT_(a, b) a##b
#define FM_CAT(a, b) FM_CAT_(a, b)
#define fm_euler_f32_is_the_sampler 1
#define fm_euler_f64_is_the_sampler 1
#if FM_CAT(NAME, _is_the_sampler)
#define FM_EULER 1
#else
#define FM_EULER 0
#endif

#include "gemm.h"

/* samples per pass through the network: the scratch holds about
   FM_CHUNK * (sum of the padded widths + 2 * the widest) reals, plus the weights twice */
#ifndef FM_CHUNK
#define FM_CHUNK ((int)(2048 / sizeof(real)))
#endif
_Static_assert(FM_CHUNK >= 1, "FM_CHUNK must be >= 1");
/* samples the sampler takes through all the steps at a time: a multiple of MK_MR whose
   activations (2 x FM_STEP_CHUNK x the padded width) fit the L1 cache with room to spare */
#ifndef FM_STEP_CHUNK
#define FM_STEP_CHUNK (8 * MK_MR)
#endif
_Static_assert(FM_STEP_CHUNK >= 1, "FM_STEP_CHUNK must be >= 1");

#if !FM_EULER
/*
 * Returns 0 on success, 1 if memory could not be allocated, 2 for unsupported sizes or
 * arguments (B, D, h >= 1, 2 <= nlin <= 32, E >= 0, slope >= 0; E > 0 needs emb, labels
 * and C >= 1), 3 if a label is outside [0, C).
 * y, u: (B, D); t: (B,); emb: (C, E) or NULL (then E = 0); labels: (B,) int64 or NULL.
 * loss: one value, out. gtheta (theta's layout) and gemb (C, E; rows of classes not in
 * the batch are zero) are overwritten; gtheta NULL computes the loss only.
 */
int NAME(int B, int D, int E, int C, int h, int nlin, double slope, const real *theta,
         const real *emb, const real *y, const real *t, const real *u,
         const long long *labels, real *loss, real *gtheta, real *gemb) {
    if (B < 1 || D < 1 || h < 1 || nlin < 2 || nlin > 32 || E < 0 || !(slope >= 0))
        return 2;
    if (E > 0 && (C < 1 || !emb || !labels || (gtheta && !gemb))) return 2;
    if (E > 0)
        for (int n = 0; n < B; n++)
            if (labels[n] < 0 || labels[n] >= C) return 3;
    const real sl = (real)slope;
    const int in0 = D + 1 + E;
    int w[33], wp[33]; /* widths and padded widths */
    w[0] = in0;
    for (int i = 1; i < nlin; i++) w[i] = h;
    w[nlin] = D;
    int wmax = 0;
    for (int i = 0; i <= nlin; i++) {
        wp[i] = (int)rup(w[i], VL);
        if (wp[i] > wmax) wmax = wp[i];
    }
    /* the batch goes through in chunks of CH samples (all of it when it is small) */
    const int CH = B < FM_CHUNK ? B : FM_CHUNK;
    /* per layer: the weight gradient as gW (out x in, vectors along in) or as gW^T
       (in x out, vectors along out), whichever pads less; written straight into gtheta
       when gW's rows are whole vectors, else summed in scratch and copied at the end */
    int transposed[32], direct[32];
    for (int i = 0; i < nlin; i++) {
        const long cost_w = (long)w[i + 1] * wp[i], cost_wt = (long)w[i] * wp[i + 1];
        transposed[i] = cost_wt < cost_w;
        direct[i] = !transposed[i] && w[i] % VL == 0;
    }

    /* scratch (every piece a whole number of vectors): activations and two gradients of
       a chunk; per layer W^T, the padded bias, W with padded rows where needed, the
       gradient sums */
    size_t need = 2 * (size_t)CH * wmax;
    for (int i = 0; i <= nlin; i++) need += (size_t)CH * wp[i];
    for (int i = 0; i < nlin; i++) {
        need += (size_t)w[i] * wp[i + 1] + wp[i + 1];
        if (w[i] % VL) need += (size_t)w[i + 1] * wp[i];
        if (gtheta) {
            need += wp[i + 1];
            if (!direct[i])
                need += transposed[i] ? (size_t)w[i] * wp[i + 1] : (size_t)w[i + 1] * wp[i];
        }
    }
    real *p = get_scratch(need);
    if (!p) return 1;
    real *act[33];
    for (int i = 0; i <= nlin; i++) act[i] = p, p += (size_t)CH * wp[i];
    real *G0 = p, *P0 = G0 + (size_t)CH * wmax;
    p = P0 + (size_t)CH * wmax;
    const real *W[32], *WT[32], *bp[32], *WP[32];
    real *gW[32], *gb[32], *gacc[32], *gbacc[32];
    long off = 0;
    for (int i = 0; i < nlin; i++) {
        const int in = w[i], out = w[i + 1], inp = wp[i], outp = wp[i + 1];
        W[i] = theta + off;
        gW[i] = gtheta ? gtheta + off : NULL;
        off += (long)out * in;
        gb[i] = gtheta ? gtheta + off : NULL;
        /* W^T (in x outp); blocks of 8 rows of W are read together */
        real *wt = p;
        int j0 = 0;
        for (; j0 + 8 <= out; j0 += 8) {
            const real *wj = W[i] + (long)j0 * in;
            for (int k = 0; k < in; k++) {
                real *o = wt + (long)k * outp + j0;
                for (int j = 0; j < 8; j++) o[j] = wj[(long)j * in + k];
            }
        }
        for (; j0 < out; j0++)
            for (int k = 0; k < in; k++) wt[(long)k * outp + j0] = W[i][(long)j0 * in + k];
        for (int k = 0; k < in; k++)
            for (int j = out; j < outp; j++) wt[(long)k * outp + j] = 0;
        WT[i] = wt;
        p += (long)in * outp;
        /* the bias, zero padded */
        real *bb = p;
        memcpy(bb, theta + off, sizeof(real) * out);
        for (int j = out; j < outp; j++) bb[j] = 0;
        bp[i] = bb;
        p += outp;
        off += out;
        if (in % VL) { /* rows of W padded to whole vectors */
            real *wpad = p;
            for (int j = 0; j < out; j++) {
                memcpy(wpad + (long)j * inp, W[i] + (long)j * in, sizeof(real) * in);
                for (int k = in; k < inp; k++) wpad[(long)j * inp + k] = 0;
            }
            WP[i] = wpad;
            p += (long)out * inp;
        } else {
            WP[i] = W[i];
        }
        gbacc[i] = gacc[i] = NULL;
        if (gtheta) {
            gbacc[i] = p;
            p += outp;
            if (direct[i]) {
                gacc[i] = gW[i];
            } else {
                gacc[i] = p;
                p += transposed[i] ? (long)in * outp : (long)out * inp;
            }
        }
    }

    double total = 0;
    const real scale = (real)2 / (real)B;
    if (gtheta && E > 0) memset(gemb, 0, sizeof(real) * (long)C * E);
    for (long c0 = 0; c0 < B; c0 += CH) {
        const int nb = B - c0 < CH ? (int)(B - c0) : CH;
        const int mode = c0 == 0 ? EP_PLAIN : EP_ADD; /* for the gradient sums */
        /* the input rows [y, t, emb(label)], zero padded */
        {
            const long ld = wp[0];
            for (long n = 0; n < nb; n++) {
                real *row = act[0] + n * ld;
                const long m = c0 + n;
                for (int d = 0; d < D; d++) row[d] = y[m * D + d];
                row[D] = t[m];
                if (E > 0) memcpy(row + D + 1, emb + labels[m] * (long)E, sizeof(real) * E);
                for (int k = in0; k < ld; k++) row[k] = 0;
            }
        }
        /* forward: act[i+1] = leaky(act[i] . W_i^T + b_i), no LeakyReLU after the last */
        for (int i = 0; i < nlin; i++)
            gemm(nb, wp[i + 1], w[i], act[i], wp[i], 1, WT[i], wp[i + 1], act[i + 1],
                 wp[i + 1], bp[i], i < nlin - 1 ? EP_LEAKY : EP_PLAIN, NULL, sl);

        /* loss and its gradient with respect to the output (zero in the padding) */
        real *G = G0, *P = P0;
        {
            const real *v = act[nlin];
            const long ld = wp[nlin];
            for (long n = 0; n < nb; n++) {
                real *g = G + n * ld;
                const real *un = u + (c0 + n) * D;
                for (int d = 0; d < D; d++) {
                    const real diff = v[n * ld + d] - un[d];
                    total += (double)diff * diff;
                    g[d] = scale * diff;
                }
                for (int d = D; d < ld; d++) g[d] = 0;
            }
        }
        if (!gtheta) continue;

        for (int i = nlin - 1; i >= 0; i--) {
            const int in = w[i], out = w[i + 1], inp = wp[i], outp = wp[i + 1];
            const real *A = act[i];
            colsum(G, nb, outp, gbacc[i], mode == EP_ADD); /* the bias gradient */
            if (!transposed[i]) /* gW (out x in) = G^T . A: X[r][k] = G[k][r], Y = A */
                gemm(out, inp, nb, G, 1, outp, A, inp, gacc[i], direct[i] ? in : inp, NULL,
                     mode, NULL, sl);
            else /* gW^T (in x out) = A^T . G: X[r][k] = A[k][r], Y = G */
                gemm(in, outp, nb, A, 1, inp, G, outp, gacc[i], outp, NULL, mode, NULL, sl);
            if (i > 0) {
                /* P = (G . W_i) * leaky'(act[i]) */
                gemm(nb, inp, out, G, outp, 1, WP[i], inp, P, inp, NULL, EP_MASK, A, sl);
                real *tmp = G;
                G = P;
                P = tmp;
            } else if (E > 0) {
                /* the gradient of the first layer's input, of which the embedding columns */
                gemm(nb, inp, out, G, outp, 1, WP[0], inp, P, inp, NULL, EP_PLAIN, NULL, sl);
                for (long n = 0; n < nb; n++) {
                    real *ge = gemb + labels[c0 + n] * (long)E;
                    const real *pr = P + n * inp + D + 1;
                    for (int e = 0; e < E; e++) ge[e] += pr[e];
                }
            }
        }
    }
    *loss = (real)(total / B);
    if (!gtheta) return 0;
    /* the sums kept in scratch, into gtheta */
    for (int i = 0; i < nlin; i++) {
        const int in = w[i], out = w[i + 1], inp = wp[i], outp = wp[i + 1];
        memcpy(gb[i], gbacc[i], sizeof(real) * out);
        if (direct[i]) continue;
        if (!transposed[i])
            for (int j = 0; j < out; j++)
                memcpy(gW[i] + (long)j * in, gacc[i] + (long)j * inp, sizeof(real) * in);
        else
            for (int k = 0; k < in; k++)
                for (int j = 0; j < out; j++) gW[i][(long)j * in + k] = gacc[i][(long)k * outp + j];
    }
    return 0;
}
#endif /* !FM_EULER */

#if FM_EULER
/* wt (ncol x outp, zero padded columns) = columns col0 .. col0+ncol-1 of W (out x ldw), transposed */
static void transpose_padded(const real *W, int out, long ldw, int col0, int ncol, real *wt,
                             int outp) {
    for (int k = 0; k < ncol; k++) {
        real *o = wt + (long)k * outp;
        for (int j = 0; j < out; j++) o[j] = W[(long)j * ldw + col0 + k];
        for (int j = out; j < outp; j++) o[j] = 0;
    }
}

/* v (outp), zero padded */
static void copy_padded(const real *v, int n, real *o, int outp) {
    memcpy(o, v, sizeof(real) * n);
    for (int j = n; j < outp; j++) o[j] = 0;
}

/*
 * The first layer for nb points at time t: A[n] = leaky((cst[n] + t w_t) + y[n] . W_y^T),
 * cst[n] = cst + n * ldc (ldc = 0: one row for every point), WyT (D x hp).
 */
static void first_layer(int nb, int D, int hp, const real *y, const real *cst, long ldc,
                        real t, const real *w_t, const real *WyT, real *A, real slope) {
    const vec tv = splat(t), zero = {}, s = splat(slope);
    for (long n = 0; n < nb; n++) {
        const real *c = cst + n * ldc, *yn = y + n * D;
        real *a = A + n * hp;
        for (int v = 0; v < hp; v += VL) {
            vec x = ld(c + v) + tv * ld(w_t + v);
            for (int d = 0; d < D; d++) x += splat(yn[d]) * ld(WyT + (long)d * hp + v);
            st(a + v, sel((ivec)(x > zero), x, x * s));
        }
    }
}

/*
 * Euler steps of dy/dt = MLP(y, t, emb(label)) + g(t) y (the network of fm_loss) along the
 * times grid[0 .. K]: step k is y += (grid[k+1] - grid[k]) * (MLP(y, grid[k]) + rate[k] y).
 *
 * Returns 0 on success, 1 if memory could not be allocated, 2 for unsupported sizes or
 * arguments (as fm_loss; K >= 0; R >= 0 with record strictly increasing in [0, K] and out
 * given), 3 if a label is outside [0, C).
 * y: (B, D), the state at grid[0] on entry, at grid[K] on return. emb: (C, E) or NULL
 * (then E = 0); labels: (B,) int64 or NULL. grid: (K+1,) doubles, increasing or
 * decreasing; the network sees them rounded to real, the steps are rounded differences.
 * rate: (K,) doubles, the skip's g at grid[k], or NULL (no skip). record: (R,) int64 step
 * counts; out (R, B, D) receives the state after record[r] steps (0: the initial state).
 */
int NAME(int B, int D, int E, int C, int h, int nlin, double slope, const real *theta,
         const real *emb, const long long *labels, real *y, int K, const double *grid,
         const double *rate, int R, const long long *record, real *out) {
    if (B < 1 || D < 1 || h < 1 || nlin < 2 || nlin > 32 || E < 0 || !(slope >= 0) || K < 0 ||
        R < 0 || !y || !grid)
        return 2;
    if (E > 0 && (C < 1 || !emb || !labels)) return 2;
    if (R > 0 && !out) return 2;
    for (int r = 0; r < R; r++)
        if (record[r] < 0 || record[r] > K || (r > 0 && record[r] <= record[r - 1])) return 2;
    if (E > 0)
        for (int n = 0; n < B; n++)
            if (labels[n] < 0 || labels[n] >= C) return 3;
    const real sl = (real)slope;
    const int in0 = D + 1 + E, hp = (int)rup(h, VL), Dp = (int)rup(D, VL);
    const int CH = B < FM_STEP_CHUNK ? B : FM_STEP_CHUNK;
    const int Ep = (int)rup(E, VL);

    /* scratch: the first layer's W_y^T (D x hp), w_t, bias, W_emb^T (E x hp); per later
       layer W^T and the bias, padded; per chunk two activations, the output, the
       per-point constant of the first layer and the chunk's embedding rows */
    size_t need = (size_t)(D + 2 + E) * hp;
    for (int i = 1; i < nlin; i++) need += (size_t)(h + 1) * (i < nlin - 1 ? hp : Dp);
    need += (size_t)CH * (2 * hp + Dp);
    if (E > 0) need += (size_t)CH * (hp + Ep);
    real *p = get_scratch(need);
    if (!p) return 1;
    const real *W0 = theta;
    real *WyT = p, *w_t = WyT + (long)D * hp, *b0 = w_t + hp, *WeT = b0 + hp;
    p = WeT + (long)E * hp;
    transpose_padded(W0, h, in0, 0, D, WyT, hp);
    transpose_padded(W0, h, in0, D, 1, w_t, hp);
    transpose_padded(W0, h, in0, D + 1, E, WeT, hp);
    copy_padded(theta + (long)h * in0, h, b0, hp);
    const real *WT[32], *bp[32];
    long off = (long)h * in0 + h;
    for (int i = 1; i < nlin; i++) {
        const int out = i < nlin - 1 ? h : D, outp = i < nlin - 1 ? hp : Dp;
        real *wt = p, *bb = p + (long)h * outp;
        transpose_padded(theta + off, out, h, 0, h, wt, outp);
        off += (long)out * h;
        copy_padded(theta + off, out, bb, outp);
        off += out;
        WT[i] = wt, bp[i] = bb;
        p = bb + outp;
    }
    real *A0 = p, *A1 = A0 + (long)CH * hp, *V = A1 + (long)CH * hp;
    real *cst = V + (long)CH * Dp, *er = cst + (long)CH * hp;

    for (long c0 = 0; c0 < B; c0 += CH) {
        const int nb = B - c0 < CH ? (int)(B - c0) : CH;
        real *yc = y + c0 * D;
        const real *c = b0;
        long ldc = 0;
        if (E > 0) { /* cst[n] = bias + emb(label_n) . W_emb^T, as VelocityField.frozen */
            for (long n = 0; n < nb; n++)
                memcpy(er + n * E, emb + labels[c0 + n] * (long)E, sizeof(real) * E);
            gemm(nb, hp, E, er, E, 1, WeT, hp, cst, hp, b0, EP_PLAIN, NULL, sl);
            c = cst, ldc = hp;
        }
        int r = 0;
        for (int k = 0;; k++) {
            if (r < R && record[r] == k) {
                memcpy(out + (long)r * B * D + c0 * D, yc, sizeof(real) * (long)nb * D);
                r++;
            }
            if (k == K) break;
            first_layer(nb, D, hp, yc, c, ldc, (real)grid[k], w_t, WyT, A0, sl);
            real *a = A0, *b = A1;
            for (int i = 1; i < nlin - 1; i++) {
                gemm(nb, hp, h, a, hp, 1, WT[i], hp, b, hp, bp[i], EP_LEAKY, NULL, sl);
                real *tmp = a;
                a = b, b = tmp;
            }
            gemm(nb, Dp, h, a, hp, 1, WT[nlin - 1], Dp, V, Dp, bp[nlin - 1], EP_PLAIN, NULL, sl);
            /* y += dt (v + g y), as the PyTorch sampler's two operations */
            const real dt = (real)(grid[k + 1] - grid[k]), g = rate ? (real)rate[k] : 0;
            for (long n = 0; n < nb; n++)
                for (int d = 0; d < D; d++) {
                    real *yd = yc + n * D + d;
                    const real v = V[n * Dp + d];
                    *yd += dt * (rate ? v + g * *yd : v);
                }
        }
    }
    return 0;
}
#endif /* FM_EULER */
