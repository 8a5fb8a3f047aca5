"""Exploration for issue 20 (not a feature): does a normalizing flow whose base is the
BIC Gaussian mixture beat that mixture on the small real files?

The flow of ``flowscope train nf`` with its small-data defaults, except that its base
distribution N(0, I) is replaced, for the whole run (loss, validation and scoring), by
the Gaussian mixture that BIC chooses (1 to 10 components, scikit-learn, as
:func:`flowscope.baseline.mixture_baseline`) on the run's standardized training points.
The replacement patches ``standard_normal_log_prob`` where the flows use it and turns
the fused kernels off (they compute the Gaussian base themselves), so it is for
measuring only. ``--identity`` zeroes each coupling network's last layer before training,
so that the flow starts as the identity and the model as the mixture itself.

Run: ``python benchmarks/explore_mixture_base.py faithful,geyser [--identity]``; 5 folds
of ``bench_small.py`` (the same seeds), the held-out NLL in data units beside the
mixture's of ``bench_small.py`` (fitted on all four folds).
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ["FLOWSCOPE_NO_KERNEL"] = "1"  # before flowscope reads it

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
import bench_small  # noqa: E402

import flowscope.base  # noqa: E402
import flowscope.flows  # noqa: E402
import flowscope.runs  # noqa: E402
import flowscope.standardize  # noqa: E402
from flowscope.baseline import fit_mixture, mixture_baseline  # noqa: E402
from flowscope.metrics import heldout_nll  # noqa: E402

BASE: dict = {}


def _fit_standardization(original):
    def fit(self, x, labels=None):
        out = original(self, x, labels)
        g = fit_mixture(((x - self.loc) / self.scale).double().numpy(), 10, 0)
        BASE.update(
            log_w=torch.tensor(np.log(g.weights_)),
            mu=torch.tensor(g.means_),
            chol=torch.linalg.cholesky(torch.tensor(g.covariances_)),
            k=g.n_components,
        )
        return out

    return fit


def mixture_log_prob(z: torch.Tensor) -> torch.Tensor:
    """log of the fitted mixture at standardized points z (N, D), (N,)."""
    diff = z.double()[:, None, :] - BASE["mu"]  # (N, K, D)
    chol = BASE["chol"].expand(len(z), -1, -1, -1)
    white = torch.linalg.solve_triangular(chol, diff[..., None], upper=False)[..., 0]
    log_det = BASE["chol"].diagonal(dim1=-2, dim2=-1).log().sum(-1)
    d = z.shape[1]
    terms = BASE["log_w"] - 0.5 * (white**2).sum(-1) - log_det - 0.5 * d * math.log(2 * math.pi)
    return torch.logsumexp(terms, dim=1).to(z.dtype)


def _identity_start(original):
    def fit(model, *args, **kwargs):
        with torch.no_grad():
            for pairs in model.weights():
                if pairs:
                    weight, bias = pairs[-1]
                    weight.zero_()
                    bias.zero_()
        return original(model, *args, **kwargs)

    return fit


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("files", help="comma-separated names of benchmarks/data/*.csv")
    p.add_argument("--identity", action="store_true", help="start the flow at the identity")
    args = p.parse_args()
    st = flowscope.standardize.Standardization
    st.fit = _fit_standardization(st.fit)
    flowscope.flows.standard_normal_log_prob = mixture_log_prob
    flowscope.base.standard_normal_log_prob = mixture_log_prob
    if args.identity:
        flowscope.runs.fit = _identity_start(flowscope.runs.fit)
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.files.split(","):
            header, x = bench_small.read(name)
            flows, mixtures = [], []
            for k, test_idx in enumerate(bench_small.folds(len(x), 5, 0)):
                train_idx = np.setdiff1d(np.arange(len(x)), test_idx)
                csv = Path(tmp) / "train.csv"
                np.savetxt(csv, x[train_idx], delimiter=",", header=",".join(header), comments="")
                test = torch.tensor(x[test_idx], dtype=torch.float32)
                t0 = time.perf_counter()
                model, _, history = flowscope.runs.train_run(
                    "nf", Path(tmp) / "run", data=str(csv), overwrite=True, progress=False
                )
                flows.append(heldout_nll(model, test).data)
                train = torch.tensor(x[train_idx], dtype=torch.float32)
                mixtures.append(mixture_baseline(train, test).nll_data)
                print(
                    f"{name} fold {k}: flow on a {BASE['k']}-component base {flows[-1]:.3f}, "
                    f"mixture {mixtures[-1]:.3f} ({time.perf_counter() - t0:.0f} s, best "
                    f"epoch {history.best_epoch})",
                    flush=True,
                )
            print(f"{name}: flow {np.mean(flows):.3f}, mixture {np.mean(mixtures):.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
