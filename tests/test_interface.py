"""One interface, one test body: every registered model type, probability path, coupling and
time sampler passes the same checks, so that a new one is tested by registering it."""

from __future__ import annotations

import math

import pytest
import torch

from flowscope.matching import COUPLINGS, PATHS, TIME_SAMPLERS, FlowMatching
from flowscope.matching.couplings import drawn_couplings
from flowscope.models import MODELS, model_type
from flowscope.runs import RunInfo, load_run, save_run

F64 = torch.float64
CLASSES = 3
# ODE types are integrated with RK4, whose error at these steps is far below the tolerances.
ODE = dict(dt=0.02, solver="rk4")
LIKELIHOOD = dict(solver="rk4", steps=25)


def build(entry, seed: int = 0, conditional: bool | None = None, **args):
    torch.manual_seed(seed)
    if entry.is_conditional(conditional):
        args.setdefault("num_classes", CLASSES)
    model = entry.build(features=2, **{**entry.small, **args}).double()
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():  # away from the initialisation, so that every weight matters
        for p in model.parameters():
            p.add_(0.2 * torch.randn(p.shape, generator=g, dtype=F64))
        st = model.standardization  # (D,) or, per class, (C, D)
        st.loc.copy_(torch.tensor([0.5, -1.0], dtype=F64).expand_as(st.loc))
        st.scale.copy_(torch.tensor([1.5, 0.7], dtype=F64).expand_as(st.scale))
    return model.eval()


def labels_for(entry, n: int, conditional: bool | None = None):
    return torch.arange(n) % CLASSES if entry.is_conditional(conditional) else None


def points(n: int = 40, seed: int = 3) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.tensor([0.5, -1.0], dtype=F64) + torch.randn(n, 2, generator=g, dtype=F64)


def likelihood_options(entry) -> dict:
    return LIKELIHOOD if "solver" in entry.sample_options else {}


def _types():
    """Every registered type, and its other variant where training may choose whether it
    is conditional (``nf`` and ``nf-conditional``, ...)."""
    for entry in MODELS:
        yield pytest.param(entry, entry.conditional, id=entry.name)
        if entry.conditional_option:
            other = not entry.conditional
            yield pytest.param(entry, other, id=f"{entry.name}-{'' if other else 'un'}conditional")


TYPES = list(_types())


@pytest.mark.parametrize("entry, conditional", TYPES)
def test_shapes_and_units(entry, conditional):
    model = build(entry, conditional=conditional)
    n = 7
    lab = labels_for(entry, n, conditional)
    opts = entry.sampling(**ODE)
    x = model.sample(n, labels=lab, generator=torch.Generator().manual_seed(0), **opts)
    assert x.shape == (n, 2) and x.dtype == F64
    assert model.log_prob(x, lab, **likelihood_options(entry)).shape == (n,)
    z = model.encode(x, lab, **opts)
    assert z.shape == (n, 2)
    assert model.decode(z, lab, **opts).shape == (n, 2)
    latent = model.inverse(x, lab, **likelihood_options(entry))
    assert latent.z.shape == (n, 2) and latent.log_det.shape == (n,)
    path = model.trajectory(z, labels=lab, **opts)
    assert path.ndim == 3 and path.shape[1:] == (n, 2) and len(path) >= 2
    torch.testing.assert_close(path[0], model.standardization.inverse(z, lab))
    torch.testing.assert_close(path[-1], model.decode(z, lab, **opts))
    back = model.trajectory(x, labels=lab, inverse=True, units="standardized", **opts)
    torch.testing.assert_close(back[0], model.standardization(x, lab))
    torch.testing.assert_close(back[-1], z)
    assert model_type(model) is entry
    assert isinstance(model.config(), dict)


@pytest.mark.parametrize("entry, conditional", TYPES)
def test_decode_inverts_encode(entry, conditional):
    model = build(entry, conditional=conditional)
    x = points()
    lab = labels_for(entry, len(x), conditional)
    opts = entry.sampling(**ODE)
    torch.testing.assert_close(
        model.decode(model.encode(x, lab, **opts), lab, **opts), x, rtol=0, atol=1e-6
    )


@pytest.mark.parametrize("entry, conditional", TYPES)
def test_exact_inverse_says_whether_the_round_trip_is_closed_form(entry, conditional):
    # True: decode inverts encode to rounding, whatever the sampler's options; False: two
    # Euler steps each way leave an error of their own, which `flowscope invert` must not
    # mistake for a squeeze that float32 cannot resolve.
    model = build(entry, conditional=conditional)
    x = points()
    lab = labels_for(entry, len(x), conditional)
    opts = entry.sampling(steps=2, solver="euler")
    err = float((model.decode(model.encode(x, lab, **opts), lab, **opts) - x).abs().max())
    if model.exact_inverse:
        assert err < 1e-12
    else:
        assert err > 1e-6


@pytest.mark.parametrize("entry, conditional", TYPES)
def test_log_prob_is_the_base_density_plus_the_log_det(entry, conditional):
    model = build(entry, conditional=conditional)
    x = points()
    lab = labels_for(entry, len(x), conditional)
    opts = likelihood_options(entry)
    z, log_det = model.inverse(x, lab, **opts)
    lp = model.log_prob(x, lab, **opts)
    torch.testing.assert_close(lp, model.base_log_prob(z) + log_det)
    lp_std = model.log_prob(x, lab, standardized=True, **opts)
    torch.testing.assert_close(lp - lp_std, model.standardization.log_abs_det(lab).expand(len(x)))


@pytest.mark.parametrize("entry, conditional", TYPES)
def test_density_integrates_to_one_on_a_grid(entry, conditional):
    model = build(entry, conditional=conditional)
    k, half = 90, 6.0  # a grid over +-6 standard deviations, in standardized units
    u = torch.linspace(-half, half, k, dtype=F64)
    grid = torch.cartesian_prod(u, u)
    st = model.standardization
    loc, scale = st.loc.reshape(-1, 2)[0], st.scale.reshape(-1, 2)[0]  # the same for every class
    x = loc + scale * grid
    cell = (2 * half / (k - 1)) ** 2 * float(scale.prod())
    opts = likelihood_options(entry)
    for c in range(CLASSES) if conditional else [None]:
        mass = float(model.log_prob(x, c, **opts).exp().sum()) * cell
        assert mass == pytest.approx(1.0, abs=0.02), c


@pytest.mark.parametrize("entry, conditional", TYPES)
def test_a_gradient_reaches_every_parameter_and_the_input(entry, conditional):
    model = build(entry, conditional=conditional).train()
    x = points(64).requires_grad_(True)
    lab = labels_for(entry, len(x), conditional)
    loss = model.loss(x, lab, generator=torch.Generator().manual_seed(0))
    assert loss.ndim == 0 and math.isfinite(loss.item())
    loss.backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


@pytest.mark.parametrize("entry, conditional", TYPES)
def test_save_and_load_through_a_run_folder_gives_identical_outputs(entry, conditional, tmp_path):
    model = build(entry, conditional=conditional).float()
    info = RunInfo(
        kind=model.kind,
        model=model.config(),
        data={"source": "olympic", "n_points": 10, "seed": 0, "conditional": conditional},
        train={},
        extra={"name": entry.name},
    )
    save_run(tmp_path, model, info, None)
    loaded, _ = load_run(tmp_path)
    assert type(loaded) is type(model) and loaded.config() == model.config()
    x = points().float()
    lab = labels_for(entry, len(x), conditional)
    opts = entry.sampling(dt=0.1)
    for m in (model, loaded):
        m.out = (
            m.sample(
                5,
                labels=labels_for(entry, 5, conditional),
                generator=torch.Generator().manual_seed(4),
                **opts,
            ),
            m.log_prob(x, lab, **likelihood_options(entry)),
            m.encode(x, lab, **opts),
        )
    for a, b in zip(model.out, loaded.out, strict=True):
        assert torch.equal(a, b)


@pytest.mark.parametrize("entry, conditional", TYPES)
def test_bad_labels_are_clear_errors(entry, conditional):
    model = build(entry, conditional=conditional)
    x = points(4)
    opts = likelihood_options(entry)
    if not conditional:
        with pytest.raises(ValueError, match="unconditional"):
            model.log_prob(x, torch.zeros(4, dtype=torch.long), **opts)
        with pytest.raises(ValueError, match="unconditional"):
            model.sample(2, labels=0)
        return
    with pytest.raises(ValueError, match="conditional: pass labels"):
        model.log_prob(x, **opts)
    with pytest.raises(ValueError, match="unknown label 3"):
        model.log_prob(x, torch.tensor([0, 1, 2, 3]), **opts)
    with pytest.raises(ValueError, match="integers"):
        model.sample(2, labels=torch.tensor([0.5, 1.0]))
    with pytest.raises(ValueError, match=r"shape \(4,\)"):
        model.log_prob(x, torch.tensor([0, 1]), **opts)


@pytest.mark.parametrize("entry, conditional", [t for t in TYPES if t.values[1]])
def test_class_names_work_as_labels_in_any_case(entry, conditional, tmp_path):
    model = build(entry, conditional=conditional)
    x, opts = points(3), likelihood_options(entry)
    with pytest.raises(ValueError, match=r"unknown class 'blue'.*no class names"):
        model.sample(2, labels="blue")
    model.class_names = ["red", "Green", "blue"]
    assert model.class_id("GREEN") == 1 and model.class_id("2") == 2

    def draw(labels):
        return model.sample(4, labels=labels, generator=torch.Generator().manual_seed(1))

    assert torch.equal(draw(" Blue"), draw(2))
    by_name = model.log_prob(x, ["green", "RED", "blue"], **opts)
    assert torch.equal(by_name, model.log_prob(x, torch.tensor([1, 0, 2]), **opts))
    with pytest.raises(ValueError, match=r"unknown class 'purple': the classes are 0 red, 1 Gr"):
        model.sample(2, labels="purple")
    with pytest.raises(ValueError, match="integers"):
        model.sample(3, labels=torch.tensor([True, False, True]))
    with pytest.raises(ValueError, match="all 3 classes"):
        model.class_names = ["red", "green"]
    with pytest.raises(ValueError, match="distinct"):
        model.class_names = ["red", "RED", "blue"]
    info = RunInfo(
        kind=model.kind,
        model=model.config(),
        data={"source": "olympic", "class_names": list(model.class_names)},
        train={},
        extra={"name": entry.name},
    )
    save_run(tmp_path, model, info, None)
    assert load_run(tmp_path)[0].class_names == ("red", "Green", "blue")


@pytest.mark.parametrize("entry, conditional", TYPES)
def test_log_prob_is_differentiable_in_the_input_when_it_requires_grad(entry, conditional):
    model = build(entry, conditional=conditional)
    x, opts = points(6), likelihood_options(entry)
    lab = labels_for(entry, len(x), conditional)
    assert not model.log_prob(x, lab, **opts).requires_grad  # no graph unless asked for
    xg = x.clone().requires_grad_(True)
    lp = model.log_prob(xg, lab, **opts)
    (grad,) = torch.autograd.grad(lp.sum(), xg)
    h = 1e-6
    fd = torch.stack(
        [
            (model.log_prob(x + h * e, lab, **opts) - model.log_prob(x - h * e, lab, **opts))
            / (2 * h)
            for e in torch.eye(2, dtype=F64)
        ],
        dim=1,
    )
    torch.testing.assert_close(grad, fd, rtol=1e-6, atol=1e-6)
    if list(model.parameters()):
        model.zero_grad()
        model.log_prob(xg, lab, **opts).sum().backward()
        assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())


@pytest.mark.parametrize("entry, conditional", TYPES)
def test_far_points_give_a_number_or_minus_infinity_never_nan(entry, conditional):
    model = build(entry, conditional=conditional).float()
    far = torch.tensor([[1e3, -1e3], [4.0, 5.0], [1e30, 0.0], [-3e38, 3e38]])
    lab = labels_for(entry, len(far), conditional)
    lp = model.log_prob(far, lab, **likelihood_options(entry))
    assert not torch.isnan(lp).any(), lp
    assert bool(((lp < 0) | torch.isinf(lp)).all())


# -- flow matching from parts: every path, coupling and time sampler ----------------------
# (the fixed coupling of reflow's pairs, which needs its own file, is tests/test_reflow.py's)

PARTS = [
    pytest.param(path, coupling, times, id=f"{path}-{coupling}-{times}")
    for path in PATHS.names()
    for coupling in drawn_couplings()
    for times in TIME_SAMPLERS.names()
]


@pytest.mark.parametrize("path, coupling, times", PARTS)
def test_every_combination_of_parts_trains_and_inverts(path, coupling, times):
    # A coupling that pairs within classes is for the conditional type.
    entry = MODELS.get("cfm" if COUPLINGS.get(coupling).needs_labels else "fm")
    fm = build(entry, path=path, coupling=coupling, times=times)
    assert fm.config()["path"]["name"] == path
    x = points(64)
    labels = labels_for(entry, 64)
    loss = fm.train().loss(x, labels, generator=torch.Generator().manual_seed(0))
    loss.backward()
    assert all(p.grad.abs().sum() > 0 for p in fm.parameters())
    fm.eval()
    z = fm.encode(x, labels, **ODE)
    torch.testing.assert_close(fm.decode(z, labels, **ODE), x, rtol=0, atol=1e-6)
    rebuilt = FlowMatching(**fm.config())
    assert rebuilt.path == fm.path and rebuilt.coupling == fm.coupling
    assert rebuilt.times == fm.times and rebuilt.source == fm.source


@pytest.mark.parametrize("path", PATHS.names())
def test_every_path_runs_from_the_noise_to_the_data(path):
    p = PATHS.build(path)
    g = torch.Generator().manual_seed(0)
    x0, x1 = torch.randn(50, 3, generator=g, dtype=F64), torch.randn(50, 3, generator=g, dtype=F64)
    ends = p.sample(x0, x1, torch.zeros(50, 1, dtype=F64))
    torch.testing.assert_close(ends.x_t, x0)
    t = torch.rand(50, 1, generator=g, dtype=F64)
    h = 1e-6  # the velocity is the time derivative of the point
    ahead = p.sample(x0, x1, t + h).x_t
    behind = p.sample(x0, x1, t - h).x_t
    torch.testing.assert_close(
        p.sample(x0, x1, t).dx_t, (ahead - behind) / (2 * h), rtol=1e-6, atol=1e-8
    )


@pytest.mark.parametrize("path", PATHS.names())
def test_every_paths_gaussian_velocity_is_the_regression_on_gaussian_data(path):
    # E[dx_t | x_t] for x0, x1 ~ N(0, I): estimate the slope by least squares per time.
    p = PATHS.build(path)
    g = torch.Generator().manual_seed(1)
    n = 200_000
    for t0 in (0.1, 0.5, 0.8):
        x0, x1 = (
            torch.randn(n, 1, generator=g, dtype=F64),
            torch.randn(n, 1, generator=g, dtype=F64),
        )
        s = p.sample(x0, x1, torch.full((n, 1), t0, dtype=F64))
        slope = float((s.x_t * s.dx_t).sum() / (s.x_t * s.x_t).sum())
        assert slope == pytest.approx(float(p.gaussian_rate(t0)), abs=0.01)


@pytest.mark.parametrize("times", TIME_SAMPLERS.names())
def test_every_time_sampler_draws_times_in_the_unit_interval(times):
    sampler = TIME_SAMPLERS.build(times)
    t = sampler.sample(5000, torch.Generator().manual_seed(0), F64)
    assert t.shape == (5000, 1) and bool(((t >= 0) & (t <= 1)).all())
    again = sampler.sample(5000, torch.Generator().manual_seed(0), F64)
    assert torch.equal(t, again)
    assert TIME_SAMPLERS.build(sampler.config()) == sampler
    assert isinstance(sampler.describe(), str)


@pytest.mark.parametrize("coupling", drawn_couplings())
def test_every_coupling_pairs_a_permutation_of_the_noise(coupling):
    c = COUPLINGS.build(coupling)
    g = torch.Generator().manual_seed(0)
    x0, x1 = torch.randn(32, 2, generator=g), torch.randn(32, 2, generator=g)
    labels = torch.arange(32) % 4
    paired = c.pair(x0, x1, labels)
    assert paired.shape == x0.shape
    # The same noise points, reordered: the data and labels stay where they are.
    torch.testing.assert_close(
        paired[torch.argsort(paired[:, 0])], x0[torch.argsort(x0[:, 0])], rtol=0, atol=0
    )


@pytest.mark.parametrize("entry, conditional", TYPES)
def test_nan_infinite_and_boolean_points_are_clear_errors(entry, conditional):
    model = build(entry, conditional=conditional)
    lab = labels_for(entry, 2)
    opts = likelihood_options(entry)
    for bad in (math.nan, math.inf, -math.inf):
        x = points(2)
        x[1, 0] = bad
        with pytest.raises(ValueError, match="row 1 is .* must be finite"):
            model.log_prob(x, lab, **opts)
        with pytest.raises(ValueError, match="row 1 is"):
            model.encode(x, lab, **entry.sampling(dt=0.1))
    with pytest.raises(TypeError, match="real numbers, got dtype torch.bool"):
        model.log_prob(torch.ones(2, 2, dtype=torch.bool), lab, **opts)
