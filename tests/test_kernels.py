"""The fused kernels compute the study's equations: same loss and gradients as a plain
PyTorch computation of Eqs. 4, 6, 9 (normalizing flow), of the spline flow's likelihood
and Eq. 16 (flow matching), and the trainer runs them only where they reproduce the model
and are faster."""

import math
import statistics

import pytest
import torch
import torch.nn.functional as F

import flowscope.kernels as kernels
import flowscope.matching.field
from flowscope import FlowMatching, NormalizingFlow, fit, olympic_rings
from flowscope.flows import Permutation, SplineFlow
from flowscope.kernels import available
from flowscope.kernels.fm import FMKernel
from flowscope.kernels.nsf import SplineKernel
from flowscope.matching import COUPLINGS, PATHS, TIME_SAMPLERS
from flowscope.matching.couplings import drawn_couplings
from flowscope.splines import rational_quadratic, spline_parameters
from flowscope.train import TrainConfig

pytestmark = pytest.mark.skipif(not available(torch.float64), reason="no C compiler here")


@pytest.fixture
def kernel_wins(monkeypatch):
    """The speed check always finds the kernel faster (its decision is tested apart)."""
    monkeypatch.setattr(kernels, "_speed", lambda *a: {"kernel": 0.0, "pytorch": 1.0})


def fused(model, y, labels, seed):
    """The trainer's fast step: the loss, and every .grad written by the kernel."""
    (fp,) = [fp for fp in kernels.FAST_PATHS if isinstance(model, fp.model_class)]
    assert fp.supports(model) is None
    loss = fp.bind(model)(y, labels, torch.Generator().manual_seed(seed))
    return loss, [p.grad.clone() for p in fp.params(model)]


def plain_nf_loss(flow: NormalizingFlow, y: torch.Tensor) -> torch.Tensor:
    """Eq. 9 written out: invert couplings last to first, undoing each swap."""
    log_det = torch.zeros(len(y), dtype=y.dtype)
    couplings = flow.coupling_layers()
    for k in reversed(range(len(couplings))):
        if k < len(couplings) - 1:
            y = y.flip(1)  # the 2D permutation is a swap
        c = couplings[k]
        y_l, y_r = y[:, :1], y[:, 1:]
        outs = []
        for net in range(2):
            a = y_l
            pairs = c.pairs()
            for i, (w, b) in enumerate(pairs):
                a = a @ w[net] + b[net]
                if i < len(pairs) - 1:
                    a = F.leaky_relu(a)
            outs.append(a)
        log_s, shift = outs
        if c.log_scale_bound:
            log_s = c.log_scale_bound * torch.tanh(log_s / c.log_scale_bound)
        y = torch.cat([y_l, (y_r - shift) / torch.exp(log_s)], 1)  # Eq. 4
        log_det = log_det - log_s.sum(1)  # Eq. 6
    log_pz = -0.5 * (y**2).sum(1) - math.log(2 * math.pi)
    return -(log_pz + log_det).mean()


@pytest.mark.parametrize("bound", [None, 2.0])
def test_nf_kernel_matches_the_equations(bound):
    torch.manual_seed(0)
    flow = NormalizingFlow(couplings=5, log_scale_bound=bound).double()
    with torch.no_grad():
        flow.theta.add_(0.1 * torch.randn_like(flow.theta))
    y = torch.randn(300, 2, dtype=torch.float64)
    loss, (grad,) = fused(flow, y, None, 0)
    assert torch.isfinite(loss)
    ref = plain_nf_loss(flow, y)
    (ref_grad,) = torch.autograd.grad(ref, flow.theta)
    assert loss.item() == pytest.approx(ref.item(), rel=1e-12)
    torch.testing.assert_close(grad, ref_grad, rtol=1e-10, atol=1e-12)
    assert flow.validation_terms(y, None)["loss"] == pytest.approx(ref.item(), rel=1e-12)


def plain_nsf_loss(flow: SplineFlow, y: torch.Tensor) -> torch.Tensor:
    """The spline flow's negative log-likelihood by autograd of the plain spline
    (``rational_quadratic`` of ``spline_parameters``, not the training path's written-out
    backward pass), couplings last to first with the permutations undone."""
    log_det = torch.zeros(len(y), dtype=y.dtype)
    for layer in reversed(flow.layers):
        if isinstance(layer, Permutation):
            y = y[:, layer.inv]
            continue
        y_l, y_r = y[:, : layer.split], y[:, layer.split :]
        a = y_l
        pairs = layer.pairs()
        for i, (w, b) in enumerate(pairs):
            a = a @ w[0] + b[0]
            if i < len(pairs) - 1:
                a = F.leaky_relu(a)
        raw = a.unflatten(1, (y_r.shape[1], -1))  # (N, D_r, 3K - 1)
        spline = spline_parameters(raw, layer.tail_bound, **layer.floors)
        z_r, ld = rational_quadratic(y_r, *spline, layer.tail_bound)
        y = torch.cat([y_l, z_r], 1)
        log_det = log_det + ld.sum(1)
    log_pz = -0.5 * (y**2).sum(1) - 0.5 * y.shape[1] * math.log(2 * math.pi)
    return -(log_pz + log_det).mean()


def nsf_points(flow: SplineFlow, n: int, seed: int, at_knots: bool = False) -> torch.Tensor:
    """n points (n, D) spread over the first coupling's (the last layer's) [-B, B], with
    some at and just beyond the tail bound and far out; with ``at_knots``, a third of them
    exactly at that coupling's knots."""
    g = torch.Generator().manual_seed(seed)
    c = flow.coupling_layers()[-1]
    y = 1.6 * torch.randn(n, flow.features, generator=g, dtype=torch.float64)
    third = n // 3
    if at_knots:
        with torch.no_grad():
            widths = c.spline(c.conditioner(y[:, : c.split])).widths  # (n, D_r, K)
        inner = widths.cumsum(-1)[..., :-1] - c.tail_bound
        edge = torch.full_like(widths[..., :1], c.tail_bound)
        knots = torch.cat([-edge, inner, edge], -1)  # (n, D_r, K + 1)
        at = torch.arange(n) % knots.shape[-1]
        y[:third, c.split :] = knots[torch.arange(n), :, at][:third]
    far = torch.tensor([c.tail_bound, -c.tail_bound, c.tail_bound + 1e-9, 6.0, -40.0])
    y[third : third + len(far), c.split] = far.to(y.dtype)[: n - third]
    return y


#: (features, couplings, bins, hidden, linear layers, points)
SIZES = [
    (2, 4, 16, 64, 3, 300),  # the defaults
    (2, 2, 16, 64, 3, 600),  # more points than one chunk
    (3, 3, 5, 7, 2, 37),
    (5, 2, 3, 9, 4, 17),
    (2, 3, 1, 5, 1, 1),  # one bin, a linear conditioner, one point
    (2, 1, 2, 3, 3, 8),
]


def perturbed_nsf(features, couplings, bins, hidden, layers) -> SplineFlow:
    torch.manual_seed(6)
    flow = SplineFlow(features, couplings, bins, 3.0, hidden, layers).double()
    with torch.no_grad():
        flow.theta.add_(0.3 * torch.randn_like(flow.theta))
    return flow


@pytest.mark.parametrize("sizes", SIZES)
def test_nsf_kernel_matches_autograd_of_the_plain_spline(sizes):
    *shape, n = sizes
    flow = perturbed_nsf(*shape)
    y = nsf_points(flow, n, seed=n)
    flow.theta.grad = torch.full_like(flow.theta, 7.0)  # overwritten, not added to
    loss, (grad,) = fused(flow, y, None, 0)
    ref = plain_nsf_loss(flow, y)
    (ref_grad,) = torch.autograd.grad(ref, flow.theta)
    assert loss.item() == pytest.approx(ref.item(), rel=1e-12)
    # Steep splines make some gradients large (1e4 here) and ill-conditioned: the two
    # float64 computations agree to 1e-9 of the largest.
    scale = ref_grad.abs().max().item()
    torch.testing.assert_close(grad, ref_grad, rtol=1e-9, atol=1e-9 * scale)
    assert loss.item() == pytest.approx(flow.loss(y, standardized=True).item(), rel=1e-12)


@pytest.mark.parametrize("sizes", SIZES)
def test_nsf_kernel_at_the_knots(sizes):
    # At a knot the spline's value and slope are continuous, but the gradient with respect
    # to the weights jumps (moving the knot moves the point into one bin or the other), and
    # which side a point falls on depends on the last bit of the network's output. So the
    # loss is compared here, and the gradients only for being finite.
    *shape, n = sizes
    flow = perturbed_nsf(*shape)
    y = nsf_points(flow, n, seed=n, at_knots=True)
    loss, (grad,) = fused(flow, y, None, 0)
    assert loss.item() == pytest.approx(plain_nsf_loss(flow, y).item(), rel=1e-9)
    assert torch.isfinite(grad).all()


def test_nsf_kernel_at_the_floors_and_the_softplus_threshold():
    # Output biases that push the softmaxes to their floors (one bin takes nearly all the
    # room) and the derivatives' softplus past PyTorch's threshold of 20 and far below 0.
    torch.manual_seed(7)
    flow = SplineFlow(couplings=2, bins=8, hidden=16).double()
    k = 8
    with torch.no_grad():
        for c in flow.coupling_layers():
            w_last, b_last = c.pairs()[-1]
            w_last.mul_(0.1)
            b_last[0, 0, :k] = torch.linspace(-40, 40, k)  # widths
            b_last[0, 0, k : 2 * k] = torch.linspace(30, -30, k)  # heights
            b_last[0, 0, 2 * k :] = torch.tensor([25.0, -25.0, 21.0, 19.0, -60.0, 0.0, 40.0])
    y = nsf_points(flow, 200, seed=1)
    loss, (grad,) = fused(flow, y, None, 0)
    ref = plain_nsf_loss(flow, y)
    (ref_grad,) = torch.autograd.grad(ref, flow.theta)
    assert loss.item() == pytest.approx(ref.item(), rel=1e-12)
    torch.testing.assert_close(grad, ref_grad, rtol=1e-9, atol=1e-12)


def test_nsf_kernel_in_float32_is_as_close_to_float64_as_pytorchs_float32():
    # The float32 build runs its own exp and log series: its loss and gradients are about
    # as close to the float64 values as PyTorch's own float32 computation of the model
    # (the defaults; 300 points: a whole chunk and one that ends inside a vector). One
    # seed's error is a matter of luck for both (0.45x to 6.5x of each other over seeds
    # 8-15), so the median ratio over eight seeds is what is compared.
    ratios = []
    for seed in range(8, 16):
        torch.manual_seed(seed)
        flow = SplineFlow()
        with torch.no_grad():
            flow.theta.add_(0.1 * torch.randn_like(flow.theta))
        y = 1.5 * torch.randn(300, 2)
        loss32, (grad32,) = fused(flow, y, None, 0)
        torch32 = flow.loss(y, standardized=True)
        (torch_grad32,) = torch.autograd.grad(torch32, flow.theta)
        twin = SplineFlow().double()
        twin.load_state_dict(flow.state_dict())
        ref = plain_nsf_loss(twin, y.double())
        (ref_grad,) = torch.autograd.grad(ref, twin.theta)

        kernel, autograd = (
            float((g.double() - ref_grad).norm() / ref_grad.norm()) for g in (grad32, torch_grad32)
        )
        assert loss32.item() == pytest.approx(ref.item(), rel=1e-6)
        assert kernel < 1e-4
        ratios.append(kernel / autograd)
    assert statistics.median(ratios) <= 2


def test_nsf_kernel_steps_aside_for_what_it_does_not_compute():
    fp = SplineKernel()
    assert fp.supports(SplineFlow(couplings=2)) is None
    assert "class-conditional" in fp.supports(SplineFlow(couplings=2, num_classes=3))
    assert "at most 64 bins" in fp.supports(SplineFlow(couplings=2, bins=65))
    assert "at most 16 Linear layers" in fp.supports(SplineFlow(couplings=1, linear_layers=17))
    assert "without couplings" in fp.supports(SplineFlow(couplings=0))
    mixed = SplineFlow(couplings=2)
    mixed.coupling_layers()[1].tail_bound = 3.0
    assert "same shape" in fp.supports(mixed)

    class Tempered(SplineFlow):
        def _loss(self, y, labels, generator):
            return 0.5 * super()._loss(y, labels, generator)

    assert "overrides _loss" in fp.supports(Tempered(couplings=2))


def plain_fm_loss(fm, x1, labels, generator):
    """Eq. 16 written out with the model's own layers; with label dropout p, each label
    replaced by the null class (the embedding's last row) where a uniform draw is < p
    (Ho and Salimans 2022, Algorithm 1)."""
    x0 = torch.randn(x1.shape, generator=generator, dtype=x1.dtype)
    # t ~ Beta(alpha, 1) by inversion of its CDF t^alpha (the study's U[0, 1] for alpha = 1).
    t = torch.rand(len(x1), 1, generator=generator, dtype=x1.dtype) ** (1 / fm.times.alpha)
    if fm.label_dropout > 0:
        drop = torch.rand(len(x1), generator=generator) < fm.label_dropout
        labels = torch.where(drop, fm.num_classes, labels)
    y = t * x1 + (1 - t) * x0
    parts = [y, t] + ([] if labels is None else [fm.field.embedding(labels)])
    a = torch.cat(parts, 1)
    pairs = fm.field.pairs()
    for i, (w, b) in enumerate(pairs):
        a = a @ w.T + b
        if i < len(pairs) - 1:
            a = F.leaky_relu(a)
    if fm.gaussian_skip:  # + the exact field of N(0, I) data
        a = a + (2 * t - 1) / (t**2 + (1 - t) ** 2) * y
    return ((a - (x1 - x0)) ** 2).sum(1).mean()


@pytest.mark.parametrize(("num_classes", "dropout"), [(None, 0.0), (5, 0.0), (5, 0.3)])
@pytest.mark.parametrize("n", [128, 37])  # a batch that is not a multiple of the vector length
@pytest.mark.parametrize("alpha", [1.0, 5.0])
@pytest.mark.parametrize("skip", [False, True])
def test_fm_kernel_matches_the_equations(num_classes, dropout, n, alpha, skip):
    torch.manual_seed(1)
    fm = FlowMatching(
        num_classes=num_classes,
        hidden=24,
        layers=4,
        times={"name": "beta", "alpha": alpha},
        gaussian_skip=skip,
        label_dropout=dropout,
    ).double()
    x1 = torch.randn(n, 2, dtype=torch.float64)
    labels = None if num_classes is None else torch.randint(0, 5, (n,))
    loss, grads = fused(fm, x1, labels, 7)
    ref = plain_fm_loss(fm, x1, labels, torch.Generator().manual_seed(7))
    ref_grads = torch.autograd.grad(ref, list(fm.parameters()))
    assert loss.item() == pytest.approx(ref.item(), rel=1e-12)
    for g, r in zip(grads, ref_grads, strict=True):
        torch.testing.assert_close(g, r, rtol=1e-10, atol=1e-12)
    # The model's own loss (the autograd path) is the same equation.
    own = fm.loss(x1, labels, generator=torch.Generator().manual_seed(7), standardized=True)
    assert own.item() == pytest.approx(ref.item(), rel=1e-12)
    if dropout:  # the null class's row is trained: some label of this batch was dropped
        assert grads[1][num_classes].abs().sum() > 0


@pytest.mark.parametrize("path", [*PATHS.names(), {"name": "linear", "sigma_min": 0.1}])
@pytest.mark.parametrize("coupling", drawn_couplings())
@pytest.mark.parametrize("times", TIME_SAMPLERS.names())
@pytest.mark.parametrize("skip", [False, True])
def test_fm_kernel_keeps_every_path_coupling_and_time_sampler(path, coupling, times, skip):
    # The kernel takes its inputs and targets from the model's parts.
    torch.manual_seed(2)
    # A coupling that pairs within classes is for a conditional model.
    classes = 3 if COUPLINGS.get(coupling).needs_labels else None
    fm = FlowMatching(
        num_classes=classes,
        hidden=8,
        layers=3,
        path=path,
        coupling=coupling,
        times=times,
        gaussian_skip=skip,
    ).double()
    x1 = torch.randn(37, 2, dtype=torch.float64)
    labels = None if classes is None else torch.arange(37) % classes
    loss, grads = fused(fm, x1, labels, 3)
    ref = fm.loss(x1, labels, generator=torch.Generator().manual_seed(3), standardized=True)
    ref_grads = torch.autograd.grad(ref, list(fm.parameters()))
    assert loss.item() == pytest.approx(ref.item(), rel=1e-12)
    for g, r in zip(grads, ref_grads, strict=True):
        torch.testing.assert_close(g, r, rtol=1e-10, atol=1e-12)


MODELS = {
    "nf": lambda: NormalizingFlow(couplings=4),
    "nsf": lambda: SplineFlow(couplings=3, bins=5, hidden=12),
    "fm": lambda: FlowMatching(hidden=16, layers=3),
    "cfm": lambda: FlowMatching(num_classes=5, hidden=16, layers=3),
    "cfm-dropout": lambda: FlowMatching(num_classes=5, hidden=16, layers=3, label_dropout=0.2),
}


@pytest.mark.parametrize("grad_clip", [None, 0.05])
def test_training_without_the_kernels_gives_the_same_losses(monkeypatch, kernel_wins, grad_clip):
    x, labels = olympic_rings(640, conditional=True, seed=0)
    config = TrainConfig(epochs=2, batch_size=64, seed=3, grad_clip=grad_clip)

    def run(name):
        torch.manual_seed(0)
        model = MODELS[name]().double()
        lb = labels if name.startswith("cfm") else None
        return fit(model, x.double(), lb, config=config, progress=False)

    fast = {name: run(name) for name in MODELS}
    assert all(h.fast_path.endswith("kernel") for h in fast.values())
    monkeypatch.setenv("FLOWSCOPE_NO_KERNEL", "1")
    assert not available(torch.float64)
    for name, history in fast.items():
        slow = run(name)
        assert slow.fast_path == "pytorch" and "FLOWSCOPE_NO_KERNEL" in slow.fast_path_note
        assert slow.batch_loss == pytest.approx(history.batch_loss, rel=1e-9), name


@pytest.mark.parametrize("name", sorted(MODELS))
def test_fused_step_fills_the_gradients_autograd_gives(name):
    # The trainer's path: loss and every .grad from one kernel call, no autograd graph.
    torch.manual_seed(4)
    model = MODELS[name]().double()
    params = list(model.parameters())
    y = torch.randn(37, 2, dtype=torch.float64)
    labels = torch.randint(0, 5, (37,)) if name.startswith("cfm") else None
    for p in params:
        p.grad = torch.full_like(p, 7.0)  # stale values must be overwritten, not added to
    loss, grads = fused(model, y, labels, 5)
    ref = model.loss(y, labels, generator=torch.Generator().manual_seed(5), standardized=True)
    ref_grads = torch.autograd.grad(ref, params)
    assert loss.item() == pytest.approx(ref.item(), rel=1e-12)
    for g, r in zip(grads, ref_grads, strict=True):
        torch.testing.assert_close(g, r, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_fit_takes_the_fused_path_when_it_can(name, kernel_wins, monkeypatch):
    model = MODELS[name]().double()
    x, labels = olympic_rings(256, conditional=True, seed=0)
    lb = labels if name.startswith("cfm") else None
    selected = kernels.select(model, x.double(), lb, 64)
    assert selected.step is not None and selected.reason is None

    def no_autograd_step(*args, **kwargs):
        raise AssertionError("fit used the autograd path")

    history = fit(
        model, x.double(), lb, config=TrainConfig(epochs=1, batch_size=64), progress=False
    )
    assert history.fast_path == selected.name and history.fast_path_note is None
    # With the checks done, no step calls the model's autograd loss.
    monkeypatch.setattr(kernels, "_check_numbers", lambda *args: None)
    monkeypatch.setattr(model, "loss", no_autograd_step)
    fit(model, x.double(), lb, config=TrainConfig(epochs=1, batch_size=64), progress=False)


def test_fused_path_steps_aside_for_overrides_hooks_and_frozen_weights(kernel_wins, caplog):
    x, labels = olympic_rings(256, conditional=True, seed=0)
    config = TrainConfig(epochs=1, batch_size=64)

    # The check of meaning is kept per model: a new instance attribute is checked again.
    flow = NormalizingFlow(couplings=2).double()
    fit(flow, x.double(), config=config, progress=False)
    flow.loss = lambda *a, **k: NormalizingFlow.loss(flow, *a, **k) * 2
    assert "differs" in fit(flow, x.double(), config=config, progress=False).fast_path_note

    # A subclass's own loss is what trains, not the kernel's.
    class Penalised(NormalizingFlow):
        calls = 0

        def _loss(self, y, labels, generator):
            Penalised.calls += 1
            return super()._loss(y, labels, generator) + 1e-3 * self.theta.square().sum()

    with caplog.at_level("INFO", logger="flowscope"):
        h = fit(Penalised(couplings=2).double(), x.double(), config=config, progress=False)
    assert Penalised.calls == 4  # 256 points, batches of 64
    assert h.fast_path == "pytorch" and "overrides _loss" in h.fast_path_note
    said = [r.getMessage() for r in caplog.records if "PyTorch operations" in r.getMessage()]
    assert len(said) == 1 and "overrides _loss" in said[0]  # once per fit, with the reason

    # A gradient hook runs, as autograd would run it.
    flow = NormalizingFlow(couplings=2).double()
    seen = []
    flow.theta.register_hook(lambda g: seen.append(1))
    h = fit(flow, x.double(), config=config, progress=False)
    assert len(seen) == 4 and "hook" in h.fast_path_note

    # A frozen weight stays as it is and the others train.
    cfm = MODELS["cfm"]().double()
    cfm.field.theta.requires_grad_(False)
    theta, emb = cfm.field.theta.clone(), cfm.field.embedding.weight.clone()
    h = fit(cfm, x.double(), labels, config=config, progress=False)
    assert torch.equal(cfm.field.theta, theta)
    assert not torch.equal(cfm.field.embedding.weight, emb)
    assert "frozen" in h.fast_path_note

    # Called under no_grad, fit still trains.
    flow = NormalizingFlow(couplings=2).double()
    before = flow.theta.clone()
    with torch.no_grad():
        fit(flow, x.double(), config=config, progress=False)
        assert not torch.is_grad_enabled()  # the caller's mode is restored
    assert not torch.equal(flow.theta, before)


def test_the_kernel_steps_aside_when_the_model_computes_something_else(kernel_wins, monkeypatch):
    # Sizes alone would pass: the check of meaning compares the numbers on a float64 copy.
    fm = MODELS["fm"]()
    y = torch.randn(64, 2)
    assert kernels.select(fm, y, None, 32).step is not None
    monkeypatch.setattr(flowscope.matching.field, "LEAKY_SLOPE", 0.2)
    fm = MODELS["fm"]()  # a new model: the check of one is kept while it lives
    selected = kernels.select(fm, y, None, 32)
    assert selected.step is None and "differs" in selected.reason
    # A network the kernel does not compute.
    other = FlowMatching(hidden=16, layers=3)
    other.field = torch.nn.Module()
    assert "VelocityField" in FMKernel().supports(other)


def test_a_kernel_slower_than_pytorch_does_not_run(monkeypatch, tmp_path):
    monkeypatch.setenv("FLOWSCOPE_CACHE", str(tmp_path))  # no kept measurement
    times = iter([5.0, 1.0])  # the kernel step, then the autograd step, in ms
    monkeypatch.setattr(kernels, "_time", lambda step: next(times))
    flow = MODELS["nf"]()
    x = olympic_rings(256, seed=0)
    history = fit(flow, x, config=TrainConfig(epochs=1, batch_size=64), progress=False)
    assert history.fast_path == "pytorch"
    assert "measured 5.000 ms per step and PyTorch 1.000 ms" in history.fast_path_note
    # The measurement is kept for the machine: the next fit does not time again.
    monkeypatch.setattr(kernels, "_time", lambda step: pytest.fail("timed again"))
    assert fit(flow, x, config=TrainConfig(epochs=1, batch_size=64), progress=False).fast_path == (
        "pytorch"
    )


@pytest.mark.parametrize(
    ("features", "hidden", "layers", "n"),
    [(3, 3, 1, 1), (5, 7, 3, 17), (2, 8, 5, 130), (9, 5, 2, 3), (2, 5, 5, 37), (2, 3, 4, 1)],
)
def test_nf_kernel_at_unusual_sizes(features, hidden, layers, n):
    torch.manual_seed(2)
    flow = NormalizingFlow(features, couplings=4, hidden=hidden, linear_layers=layers).double()
    with torch.no_grad():
        flow.theta.add_(0.1 * torch.randn_like(flow.theta))
    y = torch.randn(n, features, dtype=torch.float64)
    loss, (grad,) = fused(flow, y, None, 0)
    ref = flow.loss(y, standardized=True)
    (ref_grad,) = torch.autograd.grad(ref, flow.theta)
    torch.testing.assert_close(loss, ref, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(grad, ref_grad, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize(
    ("features", "hidden", "layers", "n", "classes"),
    [
        (3, 5, 2, 1, None),
        (2, 7, 3, 19, 3),
        (5, 64, 5, 33, None),
        (1, 4, 4, 8, 2),
        (2, 3, 5, 130, None),
        (2, 5, 5, 37, 5),
        (2, 7, 4, 1, 5),
        (2, 64, 5, 130, 5),
    ],
)
def test_fm_kernel_at_unusual_sizes(features, hidden, layers, n, classes):
    torch.manual_seed(3)
    fm = FlowMatching(features, num_classes=classes, hidden=hidden, layers=layers).double()
    x1 = torch.randn(n, features, dtype=torch.float64)
    labels = None if classes is None else torch.randint(0, classes, (n,))
    loss, grads = fused(fm, x1, labels, 1)
    params = list(fm.parameters())
    ref = fm.loss(x1, labels, generator=torch.Generator().manual_seed(1), standardized=True)
    ref_grads = torch.autograd.grad(ref, params)
    torch.testing.assert_close(loss, ref, rtol=1e-12, atol=1e-12)
    for g, r in zip(grads, ref_grads, strict=True):
        torch.testing.assert_close(g, r, rtol=1e-10, atol=1e-12)


def test_fm_kernel_with_one_label_for_all_and_strided_labels():
    torch.manual_seed(4)
    fm = FlowMatching(num_classes=5, hidden=16, layers=3).double()
    x = torch.randn(64, 2, dtype=torch.float64)
    one, _ = fused(fm, x, torch.tensor(3).expand(64), 0)  # an expanded view
    full, _ = fused(fm, x, torch.full((64,), 3), 0)
    assert one.item() == full.item()
    strided = torch.arange(128) % 5
    a, _ = fused(fm, x, strided[::2], 0)
    b, _ = fused(fm, x, strided[::2].clone(), 0)
    assert a.item() == b.item()
    assert torch.isfinite(a)
    with pytest.raises(ValueError, match="label is outside"):
        fused(fm, x, torch.full((64,), 9), 0)


def test_fm_validation_rejects_labels_outside_the_classes():
    fm = FlowMatching(num_classes=5, hidden=16, layers=3)
    y = torch.randn(16, 2)
    with pytest.raises(ValueError, match="unknown label 9"):
        fm.validation_terms(y, torch.full((16,), 9), torch.Generator())


@pytest.mark.parametrize("num_classes", [None, 5])
@pytest.mark.parametrize("skip", [False, True])
def test_the_sampler_velocity_equals_the_velocity(num_classes, skip):
    torch.manual_seed(5)
    fm = FlowMatching(num_classes=num_classes, gaussian_skip=skip).double()
    y = torch.randn(40, 2, dtype=torch.float64)
    labels = None if num_classes is None else torch.arange(40) % 5
    t = torch.tensor(0.37, dtype=torch.float64)
    torch.testing.assert_close(
        fm.ode_velocity(labels)(y, t), fm.velocity(y, t, labels), rtol=1e-12, atol=1e-12
    )


def test_the_c_adam_step_is_torch_adams(monkeypatch):
    g = torch.Generator().manual_seed(0)
    a = [torch.nn.Parameter(torch.randn(300, generator=g, dtype=torch.float64)) for _ in range(2)]
    b = [torch.nn.Parameter(p.detach().clone()) for p in a]
    ref = torch.optim.Adam(a, lr=1e-2, fused=True)  # as the trainer builds it (train._adam)
    ours = torch.optim.Adam(b, lr=1e-2, fused=True)
    assert kernels.FusedAdam.supports(ours) is None
    fast = kernels.FusedAdam(ours)
    for k in range(6):
        for p, q in zip(a, b, strict=True):
            p.grad = torch.randn(p.shape, generator=g, dtype=torch.float64)
            q.grad = p.grad.clone()
        for opt in (ref, ours):
            opt.param_groups[0]["lr"] = 1e-2 / (k + 1)  # as a scheduler changes it
        ref.step()
        fast.step()
        for p, q in zip(a, b, strict=True):
            torch.testing.assert_close(q, p, rtol=1e-13, atol=1e-15)
    # The optimizer's own state holds the moments and the step: checkpoints see them.
    mine, theirs = ours.state_dict()["state"], ref.state_dict()["state"]
    for i in (0, 1):
        # a fresh optimizer's state, as torch.optim.Adam's first step makes it
        assert {k: (v.dtype, v.shape, v.device) for k, v in mine[i].items()} == {
            k: (v.dtype, v.shape, v.device) for k, v in theirs[i].items()
        }
        assert float(mine[i]["step"]) == float(theirs[i]["step"]) == 6
        torch.testing.assert_close(
            mine[i]["exp_avg_sq"], theirs[i]["exp_avg_sq"], rtol=1e-13, atol=0
        )
    assert ours._opt_called  # as optimizer.step() marks it: no scheduler warning
    # Options it does not compute are refused, with the reason.
    assert "weight decay" in kernels.FusedAdam.supports(torch.optim.Adam(a, weight_decay=0.1))
    assert "Adam" in kernels.FusedAdam.supports(torch.optim.SGD(a, lr=0.1))
