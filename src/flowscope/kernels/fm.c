/*
 * Fused training loss (seed Eq. 16) and gradient of flowscope's flow matching MLP.
 *
 * For data x1 (B, D), noise x0 (B, D), times t (B,) and optional class ids, builds
 * y = t x1 + (1 - t) x0, evaluates the velocity MLP on [y, t, embedding(label)], and
 * returns mean ||v - (x1 - x0)||^2 and its gradient with respect to every weight, bias
 * and embedding row. With skip != 0, v = MLP + g(t) y, g(t) = (2t - 1) / (t^2 + (1 - t)^2)
 * (matching.gaussian_velocity). Same math as matching.py, without PyTorch's per-operation
 * overhead.
 * Activations are stored [row][batch] with the batch padded to a multiple of the vector
 * length, so every product below is a register-blocked loop of whole-vector operations.
 *
 * Compiled twice by _kernel.py, with REAL = float and REAL = double.
 * theta holds the layers in order, each as its weight (out_i, in_i) row-major (nn.Linear's
 * layout) followed by its bias (out_i); the gradient gtheta has the same layout.
 */
#include <stdlib.h>
#include <string.h>

#ifndef REAL
#define REAL double
#endif
#ifndef NAME
#define NAME fm_loss_f64
#endif

typedef REAL real;
#define VL ((int)(64 / sizeof(real)))
typedef real vec __attribute__((vector_size(64)));

static inline vec ld(const real *p) { return *(const vec *)p; }
static inline void st(real *p, vec v) { *(vec *)p = v; }
static inline real hsum(vec v) {
    real s = 0;
    for (int k = 0; k < VL; k++) s += v[k];
    return s;
}

/* O[j][:] = b[j] + sum_i W[j][i] A[i][:]  (W: out x in), rows of length Bp */
static void forward_layer(const real *W, const real *b, real *const *A, int in, int out,
                          real *const *O, int Bp) {
    int j = 0;
    for (; j + 4 <= out; j += 4) {
        const real *w0 = W + (long)j * in, *w1 = w0 + in, *w2 = w1 + in, *w3 = w2 + in;
        for (int n = 0; n < Bp; n += VL) {
            vec a0 = (vec){} + b[j], a1 = (vec){} + b[j + 1];
            vec a2 = (vec){} + b[j + 2], a3 = (vec){} + b[j + 3];
            for (int i = 0; i < in; i++) {
                const vec x = ld(A[i] + n);
                a0 += w0[i] * x;
                a1 += w1[i] * x;
                a2 += w2[i] * x;
                a3 += w3[i] * x;
            }
            st(O[j] + n, a0);
            st(O[j + 1] + n, a1);
            st(O[j + 2] + n, a2);
            st(O[j + 3] + n, a3);
        }
    }
    for (; j < out; j++) {
        const real *w = W + (long)j * in;
        for (int n = 0; n < Bp; n += VL) {
            vec a = (vec){} + b[j];
            for (int i = 0; i < in; i++) a += w[i] * ld(A[i] + n);
            st(O[j] + n, a);
        }
    }
}

/* P[i][:] = sum_j W[j][i] G[j][:]  for i < rows (the gradient of the layer's input) */
static void backward_input(const real *W, real *const *G, int in, int out, int rows,
                           real *const *P, int Bp) {
    int i = 0;
    for (; i + 4 <= rows; i += 4) {
        for (int n = 0; n < Bp; n += VL) {
            vec a0 = {}, a1 = {}, a2 = {}, a3 = {};
            for (int j = 0; j < out; j++) {
                const vec g = ld(G[j] + n);
                const real *w = W + (long)j * in + i;
                a0 += w[0] * g;
                a1 += w[1] * g;
                a2 += w[2] * g;
                a3 += w[3] * g;
            }
            st(P[i] + n, a0);
            st(P[i + 1] + n, a1);
            st(P[i + 2] + n, a2);
            st(P[i + 3] + n, a3);
        }
    }
    for (; i < rows; i++) {
        for (int n = 0; n < Bp; n += VL) {
            vec a = {};
            for (int j = 0; j < out; j++) a += W[(long)j * in + i] * ld(G[j] + n);
            st(P[i] + n, a);
        }
    }
}

/* gW[j][i] = sum_n G[j][n] A[i][n];  gb[j] = sum_n G[j][n] */
static void weight_grad(real *const *G, real *const *A, int in, int out, real *gW, real *gb,
                        int Bp) {
    for (int j = 0; j < out; j++) {
        vec s = {};
        for (int n = 0; n < Bp; n += VL) s += ld(G[j] + n);
        gb[j] = hsum(s);
    }
    for (int j = 0; j < out; j += 2) {
        const int j2 = j + 1 < out;
        int i = 0;
        for (; i + 4 <= in; i += 4) {
            vec s00 = {}, s01 = {}, s02 = {}, s03 = {}, s10 = {}, s11 = {}, s12 = {}, s13 = {};
            for (int n = 0; n < Bp; n += VL) {
                const vec g0 = ld(G[j] + n), g1 = j2 ? ld(G[j + 1] + n) : (vec){};
                const vec x0 = ld(A[i] + n), x1 = ld(A[i + 1] + n);
                const vec x2 = ld(A[i + 2] + n), x3 = ld(A[i + 3] + n);
                s00 += g0 * x0, s01 += g0 * x1, s02 += g0 * x2, s03 += g0 * x3;
                s10 += g1 * x0, s11 += g1 * x1, s12 += g1 * x2, s13 += g1 * x3;
            }
            real *r0 = gW + (long)j * in + i;
            r0[0] = hsum(s00), r0[1] = hsum(s01), r0[2] = hsum(s02), r0[3] = hsum(s03);
            if (j2) {
                real *r1 = r0 + in;
                r1[0] = hsum(s10), r1[1] = hsum(s11), r1[2] = hsum(s12), r1[3] = hsum(s13);
            }
        }
        for (; i < in; i++) {
            vec s0 = {}, s1 = {};
            for (int n = 0; n < Bp; n += VL) {
                const vec x = ld(A[i] + n);
                s0 += ld(G[j] + n) * x;
                if (j2) s1 += ld(G[j + 1] + n) * x;
            }
            gW[(long)j * in + i] = hsum(s0);
            if (j2) gW[(long)(j + 1) * in + i] = hsum(s1);
        }
    }
}

/*
 * Returns 0 on success, 1 if memory could not be allocated, 2 for unsupported sizes.
 * Returns 3 if a label is outside [0, C). skip: add the Gaussian velocity g(t) y.
 * emb: (C, E) or NULL (then E = 0); gemb: (C, E), overwritten. labels: (B,) int64 or
 * NULL. loss: one value, out. gtheta: NULL computes the loss only.
 */
int NAME(int B, int D, int E, int C, int h, int nlin, int skip, double slope,
         const real *theta, const real *emb, const real *x1, const real *x0, const real *t,
         const long long *labels, real *loss, real *gtheta, real *gemb) {
    if (nlin < 2 || nlin > 32 || B < 1) return 2;
    for (int n = 0; labels && n < B; n++)
        if (labels[n] < 0 || labels[n] >= C) return 3;
    const int in0 = D + 1 + E;
    const int Bp = (B + VL - 1) / VL * VL;
    int width[34];
    width[0] = in0;
    for (int i = 1; i < nlin; i++) width[i] = h;
    width[nlin] = D;
    /* theta holds, for each layer, W (out, in) then b (out) */
    const real *W[32], *b[32];
    real *gW[32], *gb[32];
    long off = 0;
    for (int i = 0; i < nlin; i++) {
        W[i] = theta + off;
        gW[i] = gtheta + off;
        off += (long)width[i + 1] * width[i];
        b[i] = theta + off;
        gb[i] = gtheta + off;
        off += width[i + 1];
    }
    /* rows: inputs, every layer's output, the target, two gradient buffers */
    long nrows = in0 + (long)(nlin - 1) * h + 2L * D + 2L * (h > in0 ? h : in0) + D;
    real *buf = (real *)aligned_alloc(64, sizeof(real) * nrows * Bp);
    real **rows = (real **)malloc(sizeof(real *) * (nrows + 8));
    if (!buf || !rows) {
        free(buf);
        free(rows);
        return 1;
    }
    memset(buf, 0, sizeof(real) * nrows * Bp);
    for (long r = 0; r < nrows; r++) rows[r] = buf + r * Bp;
    real **act[34];
    act[0] = rows;
    for (int i = 1; i <= nlin; i++) act[i] = act[i - 1] + width[i - 1];
    real **target = act[nlin] + D;
    real **g0 = target + D;
    real **g1 = g0 + (h > in0 ? h : in0);

    for (int n = 0; n < B; n++) {
        const real tn = t[n];
        /* with skip, v = MLP + g(t) y: the MLP's target is Eq. 15 less g(t) y */
        const real g = skip ? (2 * tn - 1) / (tn * tn + (1 - tn) * (1 - tn)) : 0;
        for (int d = 0; d < D; d++) {
            const real a = x1[(long)n * D + d], z = x0[(long)n * D + d];
            const real y = tn * a + (1 - tn) * z; /* Eq. 14 */
            act[0][d][n] = y;
            target[d][n] = a - z - g * y; /* Eq. 15 */
        }
        act[0][D][n] = tn;
        for (int e = 0; e < E; e++) act[0][D + 1 + e][n] = emb[labels[n] * (long)E + e];
    }
    for (int i = 0; i < nlin; i++) {
        forward_layer(W[i], b[i], act[i], width[i], width[i + 1], act[i + 1], Bp);
        if (i < nlin - 1)
            for (int j = 0; j < width[i + 1]; j++) {
                real *o = act[i + 1][j];
                for (int n = 0; n < Bp; n++) o[n] = o[n] > 0 ? o[n] : (real)slope * o[n];
            }
    }
    /* loss and its gradient with respect to the output (zero in the padding) */
    real total = 0;
    const real scale = (real)2 / (real)B;
    for (int d = 0; d < D; d++) {
        const real *v = act[nlin][d], *u = target[d];
        real *g = g0[d];
        for (int n = 0; n < B; n++) {
            const real diff = v[n] - u[n];
            total += diff * diff;
            g[n] = scale * diff;
        }
    }
    *loss = total / (real)B;
    if (!gtheta) { /* the loss only */
        free(buf);
        free(rows);
        return 0;
    }

    real **G = g0, **P = g1;
    for (int i = nlin - 1; i >= 0; i--) {
        weight_grad(G, act[i], width[i], width[i + 1], gW[i], gb[i], Bp);
        if (i > 0) {
            backward_input(W[i], G, width[i], width[i + 1], width[i], P, Bp);
            for (int r = 0; r < width[i]; r++) {
                const real *a = act[i][r];
                real *p = P[r];
                for (int n = 0; n < Bp; n++) p[n] *= a[n] > 0 ? (real)1 : (real)slope;
            }
            real **tmp = G;
            G = P;
            P = tmp;
        } else if (E > 0) {
            memset(gemb, 0, sizeof(real) * (long)C * E);
            /* only the embedding rows of the input need a gradient */
            backward_input(W[0], G, in0, width[1], in0, P, Bp);
            for (int n = 0; n < B; n++)
                for (int e = 0; e < E; e++) gemb[labels[n] * (long)E + e] += P[D + 1 + e][n];
        }
    }
    free(buf);
    free(rows);
    return 0;
}
