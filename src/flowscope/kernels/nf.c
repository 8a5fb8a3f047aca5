/*
 * Fused inverse pass (and its gradient) of flowscope's NormalizingFlow.
 *
 * Computes, for standardized points x (B, D), z = phi^{-1}(x) through L affine couplings
 * (the study's Eqs. 4, 6-8) with fixed permutations between them, the per-point log N(z; 0, I)
 * and log|det d phi^{-1}/dx|, and optionally the gradient of the mean negative
 * log-likelihood (Eq. 9) with respect to every weight. It is the same math as
 * flows.py, written as one loop nest over a batch-contiguous layout ([row][batch]) so
 * that the compiler vectorises every inner loop: for these tiny networks the cost of
 * PyTorch is per-operation overhead, not arithmetic.
 *
 * Compiled twice by _kernel.py, with REAL = float and REAL = double.
 *
 * Weight layout (per coupling, in order): for each Linear layer i of dims in_i -> out_i,
 * W_i (2, in_i, out_i) then b_i (2, out_i); net 0 gives log s, net 1 gives b.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#ifndef REAL
#define REAL double
#endif
#ifndef NAME
#define NAME nf_nll_f64
#endif

#define SIMD _Pragma("omp simd")

typedef REAL real;

static inline real rexp(real v) { return sizeof(real) == 4 ? expf(v) : exp(v); }
static inline real rtanh(real v) { return sizeof(real) == 4 ? tanhf(v) : tanh(v); }

/* out[j][n] = b[j] + sum_i W[i][j] a[i][n] */
static void linear(const real *W, const real *b, real *const *a, int in, int out, real *const *o,
                   int B) {
    for (int j = 0; j < out; j++) {
        real *restrict oj = o[j];
        const real bj = b[j];
        SIMD for (int n = 0; n < B; n++) oj[n] = bj;
        for (int i = 0; i < in; i++) {
            const real w = W[i * out + j];
            const real *restrict ai = a[i];
            SIMD for (int n = 0; n < B; n++) oj[n] += w * ai[n];
        }
    }
}

static void leaky(real *const *o, int rows, int B, real slope) {
    for (int j = 0; j < rows; j++) {
        real *restrict oj = o[j];
        SIMD for (int n = 0; n < B; n++) oj[n] = oj[n] > 0 ? oj[n] : slope * oj[n];
    }
}

/*
 * Returns 0 on success, 1 if memory could not be allocated.
 * x: (B, D) row-major. inv_perms: (L - 1, D), the inverse of the permutation after coupling
 * k is row k. logpz, logdet: (B,) outputs. grad: NULL, or the gradient of
 * -mean(logpz + logdet) with respect to theta (same size as theta), overwritten.
 */
int NAME(int L, int D, int s, int h, int nlin, double bound, double slope, const real *theta,
         const real *x, int B, const int *inv_perms, real *logpz, real *logdet, real *grad) {
    const int dr = D - s;
    int dims[64];
    if (nlin < 1 || nlin > 16 || h > 64 || s > 64 || D - s > 64 || L > 512) return 2;
    dims[0] = s;
    for (int i = 1; i < nlin; i++) dims[i] = h;
    dims[nlin] = dr;
    int per = 0; /* weights per coupling */
    for (int i = 0; i < nlin; i++) per += 2 * dims[i] * dims[i + 1] + 2 * dims[i + 1];
    const int hid = nlin - 1; /* hidden layers per net */
    const int need_grad = grad != NULL;

    /* Saved per coupling: hidden activations of both nets (2 * hid * h rows), raw outputs
     * (2 * dr rows: log s, b), bounded log s, exp(-log s) and the new z_r (dr rows each). */
    const long rows_per = 2L * hid * h + 5L * dr;
    const long nrows = (need_grad ? (long)L : 1L) * rows_per + 1 + 2L * D + 4L * (h + dr) + 2;
    real *buf = (real *)malloc(sizeof(real) * nrows * (long)(B > 0 ? B : 1));
    real **rowp = (real **)malloc(sizeof(real *) * ((long)L * D + 4L * D + 4 * 64 + 2 * 64 + 8));
    if (!buf || !rowp) {
        free(buf);
        free(rowp);
        return 1;
    }
    real *next = buf;
#define TAKE() (next += B, next - B)
    real **cur = rowp;            /* current state rows (D) */
    real **saved_in = cur + D;    /* input rows of every coupling (L * D) */
    real **tmp = saved_in + (long)L * D; /* scratch row pointers */
    real *coupling_base[512];

    real *ld = TAKE();
    SIMD for (int n = 0; n < B; n++) ld[n] = 0;
    for (int d = 0; d < D; d++) {
        cur[d] = TAKE();
        for (int n = 0; n < B; n++) cur[d][n] = x[(long)n * D + d];
    }
    real *work_start = next;
    for (int k = L - 1; k >= 0; k--) {
        if (k < L - 1) { /* undo the permutation that follows coupling k */
            const int *inv = inv_perms + (long)k * D;
            for (int d = 0; d < D; d++) tmp[d] = cur[inv[d]];
            for (int d = 0; d < D; d++) cur[d] = tmp[d];
        }
        memcpy(saved_in + (long)k * D, cur, sizeof(real *) * D);
        next = need_grad ? work_start + (long)(L - 1 - k) * rows_per * B : work_start;
        coupling_base[k] = next;
        const real *Wk = theta + (long)k * per;
        real *raw[2][64];
        for (int m = 0; m < 2; m++) {
            real *const *a = cur; /* y_l rows */
            const real *W = Wk;
            for (int i = 0; i < nlin; i++) {
                const int in = dims[i], out = dims[i + 1];
                real **o = tmp + D + (m * 2 + (i & 1)) * 64;
                for (int j = 0; j < out; j++) o[j] = TAKE();
                linear(W + (long)m * in * out, W + 2L * in * out + (long)m * out, a, in, out, o, B);
                if (i < nlin - 1) leaky(o, out, B, (real)slope);
                else
                    for (int j = 0; j < out; j++) raw[m][j] = o[j];
                a = o;
                W += 2L * in * out + 2L * out;
            }
        }
        for (int j = 0; j < dr; j++) {
            real *restrict ls = TAKE();
            real *restrict e = TAKE();
            real *zr = need_grad ? TAKE() : cur[s + j]; /* in place without grad */
            const real *restrict r = raw[0][j];
            const real *restrict b = raw[1][j];
            const real *yr = cur[s + j];
            if (bound > 0) {
                const real c = (real)bound;
                for (int n = 0; n < B; n++) ls[n] = c * rtanh(r[n] / c);
            } else {
                SIMD for (int n = 0; n < B; n++) ls[n] = r[n];
            }
            for (int n = 0; n < B; n++) e[n] = rexp(-ls[n]);
            for (int n = 0; n < B; n++) zr[n] = (yr[n] - b[n]) * e[n];
            SIMD for (int n = 0; n < B; n++) ld[n] -= ls[n];
            cur[s + j] = zr;
        }
    }
    const real half_log_2pi = (real)0.91893853320467274178;
    for (int n = 0; n < B; n++) {
        real acc = 0;
        for (int d = 0; d < D; d++) acc += cur[d][n] * cur[d][n];
        logpz[n] = -(real)0.5 * acc - D * half_log_2pi;
        logdet[n] = ld[n];
    }
    if (!need_grad) {
        free(buf);
        free(rowp);
        return 0;
    }

    /* ---- backward: gradient of -mean(logpz + logdet) ---- */
    memset(grad, 0, sizeof(real) * (long)L * per);
    next = work_start + (long)L * rows_per * B;
    const real invB = (real)1 / (real)B;
    real **g = tmp + D + 4 * 64;            /* gradient rows of the current state (D) */
    real **gtmp = g + D;                     /* (D) */
    for (int d = 0; d < D; d++) {
        g[d] = TAKE();
        SIMD for (int n = 0; n < B; n++) g[d][n] = cur[d][n] * invB;
    }
    real *dbuf[2][2][64];
    for (int m = 0; m < 2; m++)
        for (int p = 0; p < 2; p++)
            for (int j = 0; j < h + dr && j < 64; j++) dbuf[m][p][j] = TAKE();
    for (int k = 0; k < L; k++) {
        real *const *in_rows = saved_in + (long)k * D;
        real *base = coupling_base[k];
        /* Rebuild this coupling's saved row pointers in the order they were taken. */
        real *hidden[2][16][64];
        real *p = base;
        for (int m = 0; m < 2; m++)
            for (int i = 0; i < nlin; i++)
                for (int j = 0; j < dims[i + 1]; j++) {
                    if (i < nlin - 1) hidden[m][i][j] = p;
                    p += B; /* the raw outputs of the last layer are not needed */
                }
        const real *Wk = theta + (long)k * per;
        real *Gk = grad + (long)k * per;
        for (int j = 0; j < dr; j++) {
            const real *restrict ls = p;
            const real *restrict e = p + B;
            const real *restrict zr = p + 2L * B;
            p += 3L * B;
            real *restrict gz = g[s + j];
            real *restrict d0 = dbuf[0][0][j];
            real *restrict d1 = dbuf[1][0][j];
            const real c = (real)bound;
            for (int n = 0; n < B; n++) {
                const real gyr = gz[n] * e[n];
                real gls = invB - gz[n] * zr[n];
                if (bound > 0) gls *= (real)1 - (ls[n] / c) * (ls[n] / c);
                d0[n] = gls;
                d1[n] = -gyr;
                gz[n] = gyr; /* becomes the gradient of y_r */
            }
        }
        /* Backpropagate both networks; their input y_l collects into g[0..s). */
        for (int m = 0; m < 2; m++) {
            int cur_buf = 0;
            /* offsets of layer i's weights */
            long off[64];
            long o = 0;
            for (int i = 0; i < nlin; i++) {
                off[i] = o;
                o += 2L * dims[i] * dims[i + 1] + 2L * dims[i + 1];
            }
            for (int i = nlin - 1; i >= 0; i--) {
                const int in = dims[i], out = dims[i + 1];
                const real *W = Wk + off[i] + (long)m * in * out;
                real *GW = Gk + off[i] + (long)m * in * out;
                real *Gb = Gk + off[i] + 2L * in * out + (long)m * out;
                real *const *dl = dbuf[m][cur_buf];
                real *const *a = i == 0 ? in_rows : hidden[m][i - 1];
                for (int j = 0; j < out; j++) {
                    const real *restrict dj = dl[j];
                    real acc = 0;
#pragma omp simd reduction(+ : acc)
                    for (int n = 0; n < B; n++) acc += dj[n];
                    Gb[j] += acc;
                    for (int ii = 0; ii < in; ii++) {
                        const real *restrict ai = a[ii];
                        real acc2 = 0;
#pragma omp simd reduction(+ : acc2)
                        for (int n = 0; n < B; n++) acc2 += ai[n] * dj[n];
                        GW[ii * out + j] += acc2;
                    }
                }
                if (i == 0) {
                    for (int ii = 0; ii < in; ii++) {
                        real *restrict gi = g[ii];
                        for (int j = 0; j < out; j++) {
                            const real w = W[ii * out + j];
                            const real *restrict dj = dl[j];
                            SIMD for (int n = 0; n < B; n++) gi[n] += w * dj[n];
                        }
                    }
                } else {
                    real *const *dn = dbuf[m][1 - cur_buf];
                    real *const *act = hidden[m][i - 1];
                    for (int ii = 0; ii < in; ii++) {
                        real *restrict di = dn[ii];
                        SIMD for (int n = 0; n < B; n++) di[n] = 0;
                        for (int j = 0; j < out; j++) {
                            const real w = W[ii * out + j];
                            const real *restrict dj = dl[j];
                            SIMD for (int n = 0; n < B; n++) di[n] += w * dj[n];
                        }
                        const real *restrict ai = act[ii];
                        const real sl = (real)slope;
                        SIMD for (int n = 0; n < B; n++) di[n] *= ai[n] > 0 ? (real)1 : sl;
                    }
                    cur_buf = 1 - cur_buf;
                }
            }
        }
        if (k < L - 1) { /* the permutation after coupling k: g_new[inv[d]] = g_old[d] */
            const int *inv = inv_perms + (long)k * D;
            for (int d = 0; d < D; d++) gtmp[inv[d]] = g[d];
            for (int d = 0; d < D; d++) g[d] = gtmp[d];
        }
    }
#undef TAKE
    free(buf);
    free(rowp);
    return 0;
}
