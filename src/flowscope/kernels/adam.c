/*
 * One step of Adam (Kingma and Ba, Adam: A Method for Stochastic Optimization, 2015,
 * arXiv:1412.6980) on one flat parameter, as torch.optim.Adam computes it without weight
 * decay or amsgrad:
 *
 *     step += 1
 *     m = beta1 m + (1 - beta1) g
 *     v = beta2 v + (1 - beta2) g^2
 *     p -= lr / (1 - beta1^step) * m / (sqrt(v) / sqrt(1 - beta2^step) + eps)
 *
 * The moments m, v and the step counter are the tensors of the optimizer's own state,
 * updated in place, so its state_dict (checkpoints, resuming) stays what PyTorch writes.
 * For the trainer's fast path: one call instead of the optimizer's per-step Python.
 *
 * Compiled twice by kernels/build.py, with REAL = float and REAL = double; the step
 * counter is a float32 scalar, as PyTorch keeps it.
 */
#include <math.h>

#ifndef REAL
#define REAL double
#endif
#ifndef NAME
#define NAME adam_step_f64
#endif

typedef REAL real;

static inline real root(real x) { return sizeof(real) == 4 ? sqrtf(x) : sqrt(x); }

int NAME(long n, real *param, const real *grad, real *m, real *v, float *step, double lr,
         double beta1, double beta2, double eps) {
    if (n < 0) return 2;
    *step += 1.0f;
    const double k = *step;
    const real b1 = (real)beta1, b2 = (real)beta2, c1 = (real)(1 - beta1), c2 = (real)(1 - beta2);
    const real step_size = (real)(lr / (1 - pow(beta1, k)));
    const real root2 = (real)sqrt(1 - pow(beta2, k));
    const real e = (real)eps;
#pragma omp simd
    for (long i = 0; i < n; i++) {
        const real g = grad[i];
        const real mi = b1 * m[i] + c1 * g;
        const real vi = b2 * v[i] + c2 * g * g;
        m[i] = mi;
        v[i] = vi;
        param[i] -= step_size * mi / (root(vi) / root2 + e);
    }
    return 0;
}
