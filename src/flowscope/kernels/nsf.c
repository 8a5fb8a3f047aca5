/*
 * Fused negative log-likelihood (and its gradient) of flowscope's SplineFlow.
 *
 * For standardized points x (B, D), computes z = phi^{-1}(x) through L rational-quadratic
 * spline couplings with fixed permutations between them, the per-point log N(z; 0, I) and
 * log|det d phi^{-1}/dx|, and optionally the gradient of their negated mean with respect
 * to every weight: the same math as flows.SplineCoupling.inverse and splines.py
 * (spline_parameters with its floors, the bins' knots, the bin search, Eq. 4 and log g'
 * of the rational quadratic, linear tails outside [-B, B], and spline_transform's
 * backward pass), in one call instead of about a hundred PyTorch operations per coupling
 * and their backward passes.
 *
 * Layout. Each coupling's conditioner is one MLP (nlin Linear layers, LeakyReLU between
 * them) from y_l = y[:, :s] to the D_r (3K - 1) unconstrained numbers of its splines;
 * theta holds, per coupling in forward order and per layer, W (in, out) row-major then
 * b (out), as SplineCoupling.pairs() lists them. The network runs batch-major
 * ([sample][feature], rows padded to whole vectors) through the register-blocked product
 * of gemm.h: forward O = A . W, input gradient P = G . W^T, weight gradient gW = A^T . G.
 * The splines run feature-major ([number][sample]): the network's output is transposed so
 * that every spline operation is a vector over VL points, with the K bins as a loop (the
 * softmax, the running sums of the knots, the bin search as selects: no gathers). The
 * spline's forward values are recomputed in the backward pass rather than stored.
 *
 * exp, log and log1p are evaluated in vector form (range reduction and a Taylor series
 * to the real's precision: degree 7 or 13 for exp, the atanh series for log), so that the
 * float64 build checks the arithmetic the float32 build runs.
 *
 * The batch goes through the flow in chunks of NSF_CHUNK points; the weight gradients are
 * sums over points, so the chunks' add up. Compiled by kernels/build.py with REAL = float
 * and REAL = double, NAME the exported symbol.
 */
#include <math.h>

#ifndef REAL
#define REAL double
#endif
#ifndef NAME
#define NAME nsf_nll_f64
#endif

#include "gemm.h"

#ifndef NSF_CHUNK
#define NSF_CHUNK 256
#endif
_Static_assert(NSF_CHUNK >= 1, "NSF_CHUNK must be >= 1");
/* the most bins, couplings, features and Linear layers (the per-coupling bookkeeping
   lives on the stack: at most about 300 kB) */
#define KMAX 64
#define LMAX 128
#define DMAX 128
#define NLMAX 16

/* the integer of the real's width, for exponent bits */
#define NSF_CAT_(a, b) a##b
#define NSF_CAT(a, b) NSF_CAT_(a, b)
#define NSF_IS_float 1
#define NSF_IS_double 2
#if NSF_CAT(NSF_IS_, REAL) == 1
typedef int iword;
#define MBITS 23
#define EBIAS 127
#define EXP_LO (-87.0)
#define EXP_HI 88.0
#define EXP_DEGREE 7
#define LOG_TERMS 5
#define LOG1P_TERMS 7
#else
typedef long long iword;
#define MBITS 52
#define EBIAS 1023
#define EXP_LO (-708.0)
#define EXP_HI 709.0
#define EXP_DEGREE 13
#define LOG_TERMS 11
#define LOG1P_TERMS 17
#endif
typedef iword iv __attribute__((vector_size(VBYTES)));

INLINE vec vmax(vec a, vec b) { return sel((ivec)(a > b), a, b); }
INLINE vec vmin(vec a, vec b) { return sel((ivec)(a < b), a, b); }
INLINE vec vabs(vec a) { return sel((ivec)(a < splat(0)), -a, a); }

/* e^x = 2^n e^r, n = round(x / ln 2), |r| <= ln(2) / 2; x clamped to the normal range */
INLINE vec vexp(vec x) {
    x = vmin(vmax(x, splat((real)EXP_LO)), splat((real)EXP_HI));
    const vec t = x * (real)1.4426950408889634;
    const iv n = __builtin_convertvector(t + sel((ivec)(t >= splat(0)), splat(0.5), splat(-0.5)), iv);
    const vec nf = __builtin_convertvector(n, vec);
    const vec r = (x - nf * (real)0.693145751953125) - nf * (real)1.4286068203094172e-06;
    real coef = 1;
    for (int k = 1; k <= EXP_DEGREE; k++) coef /= k; /* 1 / EXP_DEGREE! (folded) */
    vec p = splat(coef);
    for (int k = EXP_DEGREE; k >= 1; k--) {
        coef *= k; /* 1 / (k - 1)! */
        p = p * r + coef;
    }
    return p * (vec)((n + EBIAS) << MBITS);
}

/* 2 atanh(f) = 2 (f + f^3 / 3 + f^5 / 5 + ...), terms of the series */
INLINE vec atanh2(vec f, int terms) {
    const vec f2 = f * f;
    vec p = splat((real)1 / (2 * terms - 1));
    for (int k = terms - 2; k >= 0; k--) p = p * f2 + (real)1 / (2 * k + 1);
    return 2 * f * p;
}

/* log x for normal x > 0: x = 2^e m with m in [sqrt(1/2), sqrt(2)), log m = 2 atanh((m-1)/(m+1)) */
INLINE vec vlog(vec x) {
    const iv b = (iv)x;
    iv e = (b >> MBITS) - EBIAS;
    const iv mantissa = (((iv){} + 1) << MBITS) - 1, unit = ((iv){} + EBIAS) << MBITS;
    vec m = (vec)((b & mantissa) | unit); /* in [1, 2) */
    const iv big = (iv)(m > splat((real)1.4142135623730951));
    m = sel((ivec)big, m * (real)0.5, m);
    e -= big; /* the comparison is -1 where true */
    const vec ef = __builtin_convertvector(e, vec);
    return ef * (real)0.693145751953125 +
           (ef * (real)1.4286068203094172e-06 + atanh2((m - 1) / (m + 1), LOG_TERMS));
}

/* log(1 + u) for u in [0, 1]: 2 atanh(u / (2 + u)), exact in relative terms for small u */
INLINE vec vlog1p(vec u) { return atanh2(u / (2 + u), LOG1P_TERMS); }

/* what is fixed about a coupling's splines */
struct spline {
    int K;
    real B, lw, rw, lh, rh, md, shift; /* bound, least width and room, least height and
                                          room, least derivative, softplus shift */
};

/* p[i] = softmax(u)[i], u[i] = raw[i * ldr] */
INLINE void softmax(const real *raw, long ldr, int K, vec *p) {
    vec mu = ld(raw);
    for (int i = 1; i < K; i++) mu = vmax(mu, ld(raw + i * ldr));
    vec sum = {};
    for (int i = 0; i < K; i++) {
        p[i] = vexp(ld(raw + i * ldr) - mu);
        sum += p[i];
    }
    const vec inv = 1 / sum;
    for (int i = 0; i < K; i++) p[i] *= inv;
}

/* knots k[0..K] of bins of sizes least + room p[i], from -B to exactly B */
INLINE void knots(const vec *p, real least, real room, real B, int K, vec *k) {
    vec cum = {};
    k[0] = splat(-B);
    for (int i = 1; i < K; i++) {
        cum += least + room * p[i - 1];
        k[i] = cum + -B;
    }
    k[K] = splat(B);
}

/*
 * One vector of points (lanes n .. n + VL) through one spline, the raw numbers at
 * raw[m * ldr] (m < 3K - 1), the points at xp. Without grad: z at zp and log g' added to
 * *ldp. With grad: given the loss's gradient gz at gzp with respect to the spline's
 * output and gl with respect to its log g', writes the raw numbers' gradients at
 * graw[m * ldr] and the input's gradient at gxp (which may be gzp).
 */
INLINE void spline_vec(const struct spline *c, const real *raw, long ldr, const real *xp,
                       real *zp, real *ldp, const real *gzp, vec gl, real *graw, real *gxp,
                       const int grad) {
    const int K = c->K;
    vec pw[KMAX], ph[KMAX], xk[KMAX + 1], yk[KMAX + 1], dk[KMAX + 1], sg[KMAX + 1];
    softmax(raw, ldr, K, pw);
    softmax(raw + K * ldr, ldr, K, ph);
    knots(pw, c->lw, c->rw, c->B, K, xk);
    knots(ph, c->lh, c->rh, c->B, K, yk);
    dk[0] = dk[K] = splat(1);
    for (int i = 1; i < K; i++) { /* md + softplus(r + shift), PyTorch's threshold 20 */
        const vec t = ld(raw + (2 * K + i - 1) * ldr) + c->shift;
        const vec e = vexp(-vabs(t));
        dk[i] = sel((ivec)(t > splat(20)), t, vmax(t, splat(0)) + vlog1p(e)) + c->md;
        if (grad) sg[i] = sel((ivec)(t >= splat(0)), splat(1), e) / (1 + e); /* sigmoid(t) */
    }
    const vec x = ld(xp), Bv = splat(c->B);
    const ivec inside = (ivec)(vabs(x) <= Bv);
    const vec xc = vmin(vmax(x, -Bv), Bv);
    /* the bin: the last knot <= xc (searchsorted, right=True, less one; at most K - 1) */
    vec x0 = xk[0], x1 = xk[1], y0 = yk[0], y1 = yk[1], d0 = dk[0], d1 = dk[1], kk = {};
    for (int j = 1; j < K; j++) {
        const ivec m = (ivec)(xk[j] <= xc);
        x0 = sel(m, xk[j], x0), x1 = sel(m, xk[j + 1], x1);
        y0 = sel(m, yk[j], y0), y1 = sel(m, yk[j + 1], y1);
        d0 = sel(m, dk[j], d0), d1 = sel(m, dk[j + 1], d1);
        kk = sel(m, splat(j), kk);
    }
    const vec w = x1 - x0, h = y1 - y0, s = h / w;
    const vec xi = vmin(vmax((xc - x0) / w, splat(0)), splat(1));
    const vec c2 = (d0 + d1) - 2 * s;
    const vec one = 1 - xi, t = xi * one, xi2 = xi * xi;
    const vec q = s + c2 * t;                         /* the denominator of Eq. 4 */
    const vec r = (s * xi2 + d0 * t) / q;             /* (y - y_k) / h */
    const vec nn = (d1 * xi2 + 2 * (s * t)) + d0 * (one * one); /* g' q^2 / s^2 */
    if (!grad) {
        st(zp, sel(inside, y0 + h * r, x));
        st(ldp, ld(ldp) + sel(inside, vlog(s * s * nn / (q * q)), splat(0)));
        return;
    }
    /* splines._segment_grads, then the knots' running sums, the softmax and the softplus */
    const vec zero = {}, gz = ld(gzp);
    const vec gy = sel(inside, gz, zero), gli = sel(inside, gl, zero);
    const vec slope = one - xi; /* dt / dxi = 1 - 2 xi */
    const vec gyq = gy * (h / q), glq = gli / q, gln = gli / nn;
    const vec q_xi = c2 * slope, q_s = 1 - 2 * t;
    const vec p_xi = d0 * slope + 2 * (s * xi);
    const vec n_xi = (d1 * xi + s * slope) - d0 * one; /* N_xi / 2 */
    const vec g_xi = (gyq * (p_xi - r * q_xi) + 2 * (gln * n_xi)) - 2 * (glq * q_xi);
    const vec g_s = ((gyq * (xi2 - r * q_s) + 2 * (gli * (1 / s))) + 2 * (gln * t)) -
                    2 * (glq * q_s);
    const vec u = gyq * t, glq_t = glq * t;
    const vec g_d0 = ((u - u * r) + gln * (one * one)) - 2 * glq_t;
    const vec g_d1 = (gln * xi2 - u * r) - 2 * glq_t;
    const vec g_xc = g_xi / w, g_sw = g_s / w;
    const vec g_w = -(g_xc * xi + g_sw * s), g_h = g_sw + gy * r;
    st(gxp, sel(inside, g_xc, gz)); /* the identity outside [-B, B] */
    /* knot k's gradient (x: -g_xc - g_w, y: gy - g_h) reaches the sizes before it, knot
       k + 1's (g_w, g_h) those up to it; knots 0 and K are constants */
    const ivec inner = (ivec)(kk < splat((real)(K - 1)));
    const vec ax = -g_xc - g_w, bx = sel(inner, g_w, zero);
    const vec ay = gy - g_h, by = sel(inner, g_h, zero);
    vec dotw = {}, doth = {};
    for (int i = 0; i < K; i++) {
        const ivec lt = (ivec)(splat((real)i) < kk), le = (ivec)(splat((real)i) <= kk);
        xk[i] = c->rw * (sel(lt, ax, zero) + sel(le, bx, zero)); /* the probability's gradient */
        yk[i] = c->rh * (sel(lt, ay, zero) + sel(le, by, zero));
        dotw += xk[i] * pw[i];
        doth += yk[i] * ph[i];
    }
    for (int i = 0; i < K; i++) {
        st(graw + i * ldr, pw[i] * (xk[i] - dotw));
        st(graw + (K + i) * ldr, ph[i] * (yk[i] - doth));
    }
    for (int i = 1; i < K; i++) {
        const vec gd = sel((ivec)(kk == splat((real)i)), g_d0, zero) +
                       sel((ivec)(kk == splat((real)(i - 1))), g_d1, zero);
        st(graw + (2 * K + i - 1) * ldr, gd * sg[i]);
    }
}

/* the layers of one coupling's network, packed for the products */
struct layer {
    const real *wf; /* W (in x outp, padded columns) for the forward product */
    long ldf;
    const real *b;  /* bias (outp), padded */
    real *wb;       /* W^T (out x inp, padded columns) for the input gradient */
    real *gw, *gb;  /* gradient sums: gW (in x ldg) and gb (outp) */
    long ldg;
    real *gw_out, *gb_out; /* where in grad they go */
};

/* dst (cols x ldd) = src (rows x lds)^T, the rows beyond `rows` in dst zero up to `pad` */
static void transpose(const real *src, long lds, int rows, int cols, real *dst, long ldd,
                      int pad) {
    for (int j = 0; j < cols; j++) {
        real *o = dst + j * ldd;
        const real *in = src + j;
        for (int n = 0; n < rows; n++) o[n] = in[n * lds];
        for (int n = rows; n < pad; n++) o[n] = 0;
    }
}

/*
 * Returns 0 on success, 1 if memory could not be allocated, 2 for unsupported sizes.
 * Sizes: L couplings, D features, s = D // 2 passed through, h hidden width, nlin Linear
 * layers, K bins; bound B; the floors min_w, min_h, min_d; the LeakyReLU slope.
 * x: (B, D) row-major. inv_perms: (L - 1, D), the inverse of the permutation after
 * coupling k is row k. logpz, logdet: (B,) outputs. grad: NULL, or the gradient of
 * -mean(logpz + logdet) with respect to theta (theta's layout), overwritten.
 */
int NAME(int L, int D, int s, int h, int nlin, int K, double bound, double min_w, double min_h,
         double min_d, double slope, const real *theta, const real *x, int B,
         const int *inv_perms, real *logpz, real *logdet, real *grad) {
    if (L < 1 || L > LMAX || D < 2 || D > DMAX || s < 1 || s >= D || h < 1 || nlin < 1 ||
        nlin > NLMAX || K < 1 || K > KMAX || !(bound > 0) || B < 1 || !(slope >= 0))
        return 2;
    const int Dr = D - s, R = 3 * K - 1, out = Dr * R;
    const real sl = (real)slope;
    int w[NLMAX + 1], wp[NLMAX + 1];
    w[0] = s;
    for (int i = 1; i < nlin; i++) w[i] = h;
    w[nlin] = out;
    int wmax = 0;
    long per = 0, act_per = 0;
    for (int i = 0; i <= nlin; i++) {
        wp[i] = (int)rup(w[i], VL);
        if (wp[i] > wmax) wmax = wp[i];
        if (i < nlin) per += (long)w[i] * w[i + 1] + w[i + 1], act_per += wp[i];
    }
    const int CH = B < NSF_CHUNK ? B : NSF_CHUNK, CHp = (int)rup(CH, VL);
    const double b2 = 2 * bound;
    const struct spline sp = {K,
                              (real)bound,
                              (real)(b2 * min_w),
                              (real)(b2 - K * b2 * min_w),
                              (real)(b2 * min_h),
                              (real)(b2 - K * b2 * min_h),
                              (real)min_d,
                              (real)log(expm1(1 - min_d))};

    /* scratch: per coupling and layer the packed weights and gradient sums; per coupling
       a chunk's layer inputs, the transposed network output and the new z_r rows; the
       state, its gradient, the output's transposed gradient, two gradients of a layer */
    size_t need = 0;
    for (int i = 0; i < nlin; i++) {
        const int in = w[i], o = w[i + 1], inp = wp[i], op = wp[i + 1];
        need += (o % VL ? (size_t)in * op : 0) + op + (size_t)o * inp;
        if (grad) need += (o % VL ? (size_t)in * op : 0) + op;
    }
    need *= L;
    need += (size_t)L * ((size_t)CH * act_per + (size_t)(out + Dr) * CHp);
    need += (size_t)CH * wp[nlin] + (size_t)(2 * D + 2 + out) * CHp + 2 * (size_t)CH * wmax;
    real *p = get_scratch(need);
    if (!p) return 1;
    struct layer lay[L][nlin];
    const real *th = theta;
    real *gth = grad;
    for (int k = 0; k < L; k++)
        for (int i = 0; i < nlin; i++) {
            const int in = w[i], o = w[i + 1], inp = wp[i], op = wp[i + 1];
            struct layer *ly = &lay[k][i];
            const real *W = th, *b = th + (long)in * o;
            th += (long)in * o + o;
            if (o % VL == 0) {
                ly->wf = W, ly->ldf = o;
            } else {
                for (int a = 0; a < in; a++) {
                    memcpy(p + (long)a * op, W + (long)a * o, sizeof(real) * o);
                    for (int j = o; j < op; j++) p[(long)a * op + j] = 0;
                }
                ly->wf = p, ly->ldf = op;
                p += (long)in * op;
            }
            memcpy(p, b, sizeof(real) * o);
            for (int j = o; j < op; j++) p[j] = 0;
            ly->b = p;
            p += op;
            ly->wb = p;
            p += (long)o * inp;
            for (int j = 0; j < o; j++) {
                for (int a = 0; a < in; a++) ly->wb[(long)j * inp + a] = W[(long)a * o + j];
                for (int a = in; a < inp; a++) ly->wb[(long)j * inp + a] = 0;
            }
            ly->gw = ly->gb = ly->gw_out = ly->gb_out = NULL;
            if (grad) {
                ly->gw_out = gth, ly->gb_out = gth + (long)in * o;
                gth += (long)in * o + o;
                if (o % VL == 0) {
                    ly->gw = ly->gw_out, ly->ldg = o;
                } else {
                    ly->gw = p, ly->ldg = op;
                    p += (long)in * op;
                }
                ly->gb = p;
                p += op;
            }
        }
    real *act[L][nlin], *rawT[L], *zr[L];
    for (int k = 0; k < L; k++) {
        for (int i = 0; i < nlin; i++) act[k][i] = p, p += (long)CH * wp[i];
        rawT[k] = p, p += (long)out * CHp;
        zr[k] = p, p += (long)Dr * CHp;
    }
    real *RAW = p, *state = RAW + (long)CH * wp[nlin], *ldrow = state + (long)D * CHp;
    real *grow = ldrow + CHp, *gl = grow + (long)D * CHp, *GT = gl + CHp;
    real *G0 = GT + (long)out * CHp, *P0 = G0 + (long)CH * wmax;

    real *cur[D], *tmp[D], *in_rows[L][D];
    const real invB = (real)1 / (real)B, half_log_2pi = (real)0.91893853320467274178;
    for (long c0 = 0; c0 < B; c0 += CH) {
        const int nb = B - c0 < CH ? (int)(B - c0) : CH, nbp = (int)rup(nb, VL);
        const int mode = c0 == 0 ? EP_PLAIN : EP_ADD; /* for the gradient sums */
        for (int d = 0; d < D; d++) {
            cur[d] = state + (long)d * CHp;
            for (int n = 0; n < nb; n++) cur[d][n] = x[(c0 + n) * D + d];
            for (int n = nb; n < nbp; n++) cur[d][n] = 0;
        }
        memset(ldrow, 0, sizeof(real) * nbp);
        for (int k = L - 1; k >= 0; k--) {
            if (k < L - 1) { /* undo the permutation that follows coupling k */
                const int *inv = inv_perms + (long)k * D;
                for (int d = 0; d < D; d++) tmp[d] = cur[inv[d]];
                memcpy(cur, tmp, sizeof(cur));
            }
            memcpy(in_rows[k], cur, sizeof(cur));
            real *a0 = act[k][0];
            for (int n = 0; n < nb; n++) {
                for (int d = 0; d < s; d++) a0[(long)n * wp[0] + d] = cur[d][n];
                for (int d = s; d < wp[0]; d++) a0[(long)n * wp[0] + d] = 0;
            }
            for (int i = 0; i < nlin; i++) {
                real *o = i + 1 < nlin ? act[k][i + 1] : RAW;
                gemm(nb, wp[i + 1], w[i], act[k][i], wp[i], 1, lay[k][i].wf, lay[k][i].ldf, o,
                     wp[i + 1], lay[k][i].b, i + 1 < nlin ? EP_LEAKY : EP_PLAIN, NULL, sl);
            }
            transpose(RAW, wp[nlin], nb, out, rawT[k], CHp, nbp);
            for (int j = 0; j < Dr; j++) {
                const real *rj = rawT[k] + (long)j * R * CHp;
                real *z = zr[k] + (long)j * CHp;
                for (int n = 0; n < nbp; n += VL)
                    spline_vec(&sp, rj + n, CHp, cur[s + j] + n, z + n, ldrow + n, NULL, splat(0),
                               NULL, NULL, 0);
                cur[s + j] = z;
            }
        }
        for (int n = 0; n < nb; n++) {
            real acc = 0;
            for (int d = 0; d < D; d++) acc += cur[d][n] * cur[d][n];
            logpz[c0 + n] = -(real)0.5 * acc - D * half_log_2pi;
            logdet[c0 + n] = ldrow[n];
        }
        if (!grad) continue;

        /* ---- backward: the gradient of -mean(logpz + logdet), zero in the padding ---- */
        real *g[D];
        for (int d = 0; d < D; d++) {
            g[d] = grow + (long)d * CHp;
            for (int n = 0; n < nbp; n++) g[d][n] = n < nb ? cur[d][n] * invB : 0;
        }
        for (int n = 0; n < nbp; n++) gl[n] = n < nb ? -invB : 0;
        for (int k = 0; k < L; k++) {
            for (int j = 0; j < Dr; j++) {
                const real *rj = rawT[k] + (long)j * R * CHp;
                real *gj = GT + (long)j * R * CHp;
                for (int n = 0; n < nbp; n += VL)
                    spline_vec(&sp, rj + n, CHp, in_rows[k][s + j] + n, NULL, NULL,
                               g[s + j] + n, ld(gl + n), gj + n, g[s + j] + n, 1);
            }
            real *G = G0, *P = P0;
            transpose(GT, CHp, out, nb, G, wp[nlin], wp[nlin]);
            for (int i = nlin - 1; i >= 0; i--) {
                const struct layer *ly = &lay[k][i];
                const int in = w[i], o = w[i + 1], inp = wp[i], op = wp[i + 1];
                colsum(G, nb, op, ly->gb, mode == EP_ADD);
                /* gW (in x out) = A^T . G: X[r][k] = A[k][r], Y = G */
                gemm(in, op, nb, act[k][i], 1, inp, G, op, ly->gw, ly->ldg, NULL, mode, NULL, sl);
                /* P = (G . W^T) * leaky'(A), the first layer's without the LeakyReLU */
                gemm(nb, inp, o, G, op, 1, ly->wb, inp, P, inp, NULL, i > 0 ? EP_MASK : EP_PLAIN,
                     i > 0 ? act[k][i] : NULL, sl);
                real *t = G;
                G = P, P = t;
            }
            for (int n = 0; n < nb; n++)
                for (int d = 0; d < s; d++) g[d][n] += G[(long)n * wp[0] + d];
            if (k < L - 1) { /* the permutation after coupling k: g_new[inv[d]] = g_old[d] */
                const int *inv = inv_perms + (long)k * D;
                for (int d = 0; d < D; d++) tmp[inv[d]] = g[d];
                memcpy(g, tmp, sizeof(g));
            }
        }
    }
    if (!grad) return 0;
    for (int k = 0; k < L; k++)
        for (int i = 0; i < nlin; i++) {
            const struct layer *ly = &lay[k][i];
            const int in = w[i], o = w[i + 1];
            memcpy(ly->gb_out, ly->gb, sizeof(real) * o);
            if (ly->gw != ly->gw_out)
                for (int a = 0; a < in; a++)
                    memcpy(ly->gw_out + (long)a * o, ly->gw + (long)a * ly->ldg, sizeof(real) * o);
        }
    return 0;
}
