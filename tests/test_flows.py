"""Tests of flowscope.flows: coupling and permutation layers and the normalizing flow."""

from __future__ import annotations

import math

import pytest
import torch

from flowscope.base import standard_normal_log_prob
from flowscope.data import olympic_rings
from flowscope.flows import (
    AffineCoupling,
    CouplingFlow,
    NormalizingFlow,
    Permutation,
    SplineCoupling,
    SplineFlow,
)
from flowscope.kernels.nf import NFKernel
from flowscope.kernels.nsf import SplineKernel
from flowscope.train import TrainConfig, fit

F64 = torch.float64


def perturb(module: torch.nn.Module, scale: float = 0.3, seed: int = 0) -> torch.nn.Module:
    """Add N(0, scale^2) noise to every parameter, so that tests do not see only the init."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(scale * torch.randn(p.shape, generator=g, dtype=p.dtype))
    return module


def set_standardization(flow: NormalizingFlow, seed: int = 0) -> None:
    """A non-trivial standardization (loc, scale) so that the data-unit maps are exercised."""
    g = torch.Generator().manual_seed(seed)
    d = flow.features
    with torch.no_grad():
        flow.standardization.loc.copy_(torch.randn(d, generator=g, dtype=F64))
        flow.standardization.scale.copy_(0.5 + torch.rand(d, generator=g, dtype=F64))


def rand(n: int, d: int, seed: int = 1) -> torch.Tensor:
    return torch.randn(n, d, generator=torch.Generator().manual_seed(seed), dtype=F64)


class WithContext(torch.nn.Module):
    """A conditional coupling with one fixed class vector for every point."""

    def __init__(self, layer: torch.nn.Module, context: torch.Tensor):
        super().__init__()
        self.layer, self.context = layer, context

    def forward(self, z):
        return self.layer(z, self.context.expand(len(z), -1))

    def inverse(self, y):
        return self.layer.inverse(y, self.context.expand(len(y), -1))


def make_layer(kind: str, d: int) -> torch.nn.Module:
    torch.manual_seed(d)
    if kind == "coupling":
        return perturb(AffineCoupling(d, hidden=8, linear_layers=3).double(), seed=d)
    if kind == "spline":
        return perturb(SplineCoupling(d, hidden=8, linear_layers=3, bins=5).double(), seed=d)
    if kind == "conditional-spline":
        layer = SplineCoupling(d, hidden=8, linear_layers=3, bins=5, context_features=3)
        context = torch.tensor([[0.5, -1.0, 2.0]], dtype=F64)
        return WithContext(perturb(layer.double(), seed=d), context)
    return Permutation(d).double()


def make_flow(d: int = 2, couplings: int = 3, seed: int = 0, scale: float = 0.3) -> NormalizingFlow:
    torch.manual_seed(seed)
    flow = perturb(NormalizingFlow(d, couplings=couplings).double(), scale, seed)
    set_standardization(flow, seed)
    return flow


KINDS = ("coupling", "spline", "conditional-spline", "permutation")
LAYERS = [(kind, d) for kind in KINDS for d in (2, 3, 5)]
IDS = [f"{k}-D{d}" for k, d in LAYERS]


# --- layers -------------------------------------------------------------------------------


@pytest.mark.parametrize(("kind", "d"), LAYERS, ids=IDS)
def test_layer_round_trip(kind, d):
    layer = make_layer(kind, d)
    z = rand(64, d)
    y, ld_f = layer(z)
    assert y.shape == z.shape and ld_f.shape == (64,)
    z2, ld_i = layer.inverse(y)
    assert torch.allclose(z2, z, atol=1e-6, rtol=0)
    y2, _ = layer(layer.inverse(z)[0])
    assert torch.allclose(y2, z, atol=1e-6, rtol=0)
    # The inverse's log|det| at y = h(z) is minus the forward's at z.
    assert torch.allclose(ld_i, -ld_f, atol=1e-10)


@pytest.mark.parametrize(("kind", "d"), LAYERS, ids=IDS)
def test_layer_log_det_matches_autograd_jacobian(kind, d):
    layer = make_layer(kind, d)
    x = rand(4, d, seed=2)
    _, ld_inv = layer.inverse(x)
    _, ld_fwd = layer(x)
    for i in range(len(x)):
        j_inv = torch.autograd.functional.jacobian(lambda v: layer.inverse(v[None])[0][0], x[i])
        j_fwd = torch.autograd.functional.jacobian(lambda v: layer(v[None])[0][0], x[i])
        assert ld_inv[i].item() == pytest.approx(torch.linalg.slogdet(j_inv)[1].item(), abs=1e-9)
        assert ld_fwd[i].item() == pytest.approx(torch.linalg.slogdet(j_fwd)[1].item(), abs=1e-9)


@pytest.mark.parametrize("kind", ["coupling", "spline", "conditional-spline"])
@pytest.mark.parametrize("d", [2, 3, 5])
def test_coupling_leaves_floor_half_the_coordinates_unchanged(kind, d):
    layer = make_layer(kind, d)
    z = rand(32, d)
    y, _ = layer(z)
    unchanged = (y == z).all(dim=0)
    assert int(unchanged.sum()) == d // 2
    assert unchanged[: d // 2].all()  # z_l is the first floor(D/2) coordinates


def test_permutation_swaps_in_2d():
    z = rand(10, 2)
    y, ld = Permutation(2).double()(z)
    assert torch.equal(y, z.flip(1))
    assert torch.equal(ld, torch.zeros(10, dtype=F64))


@pytest.mark.parametrize("d", [2, 3, 4, 5, 8])
def test_permutation_is_never_the_identity(d):
    p = Permutation(d)
    z = torch.arange(d, dtype=F64)[None]
    y, _ = p(z)
    assert sorted(y[0].tolist()) == z[0].tolist()  # a permutation
    assert not torch.equal(y, z)  # that moves something
    # The coordinates left alone by one coupling are moved into the transformed half.
    moved_in = set(y[0, d // 2 :].long().tolist())
    assert set(range(d // 2)) <= moved_in


def test_explicit_bad_permutations_raise():
    with pytest.raises(ValueError, match="identity"):
        Permutation(2, perm=[0, 1])
    with pytest.raises(ValueError, match="permutation"):
        Permutation(3, perm=[0, 0, 1])


def test_every_permutation_in_a_flow_moves_coordinates():
    for d in (2, 3):
        flow = NormalizingFlow(d, couplings=5)
        perms = [m for m in flow.modules() if isinstance(m, Permutation)]
        couplings = [m for m in flow.modules() if isinstance(m, AffineCoupling)]
        assert len(couplings) == 5 and len(perms) == 4  # none after the last coupling
        z = torch.arange(d, dtype=torch.float32)[None]
        assert all(not torch.equal(p(z)[0], z) for p in perms)


def test_log_scale_bound_keeps_log_s_within_c():
    c = 1.5
    torch.manual_seed(0)
    bounded = perturb(AffineCoupling(2, log_scale_bound=c).double(), scale=3.0)
    free = AffineCoupling(2).double()
    free.load_state_dict(bounded.state_dict())
    z = 10 * rand(2000, 2)
    # In 2D the forward log|det| of one coupling is log s of its single transformed coordinate.
    _, ld_free = free(z)
    _, ld = bounded(z)
    assert ld_free.abs().max() > 2 * c  # the test would catch a missing bound
    assert ld.abs().max() <= c + 1e-12
    assert torch.allclose(ld, c * torch.tanh(ld_free / c))
    y, _ = bounded(z)
    assert torch.allclose(bounded.inverse(y)[0], z, atol=1e-6)


def test_coupling_rejects_bad_arguments():
    with pytest.raises(ValueError):
        AffineCoupling(1)
    with pytest.raises(ValueError):
        AffineCoupling(2, log_scale_bound=0.0)


# --- the whole flow -----------------------------------------------------------------------


def test_default_parameter_count_is_the_study_recipe():
    # 15 couplings x 2 networks of 5 Linear layers 1 -> 8 -> 8 -> 8 -> 8 -> 1.
    per_network = (1 * 8 + 8) + 3 * (8 * 8 + 8) + (8 * 1 + 1)
    flow = NormalizingFlow()
    assert sum(p.numel() for p in flow.parameters()) == 15 * 2 * per_network == 7230
    assert sum(isinstance(m, AffineCoupling) for m in flow.modules()) == 15
    # All of them live in the one flat parameter theta, which every coupling reads views of.
    assert flow.theta.numel() == 7230
    couplings = flow.coupling_layers()
    assert len(couplings) == 15 and all(isinstance(c, AffineCoupling) for c in couplings)
    assert sum(c.num_weights for c in couplings) == 7230


@pytest.mark.parametrize("d", [2, 3])
def test_flow_round_trip(d):
    flow = make_flow(d, couplings=4)
    z = rand(128, d)
    x = flow(z)
    assert torch.equal(x, flow.decode(z))  # calling the model is decode
    z2 = flow.encode(x)
    assert torch.allclose(z2, z, atol=1e-6, rtol=0)
    assert torch.equal(flow.inverse(x).z, z2)  # the latent of inverse is encode's
    x_data = flow.standardization.inverse(rand(128, d, seed=3))
    assert torch.allclose(flow.decode(flow.encode(x_data)), x_data, atol=1e-6, rtol=0)


def data_to_latent(flow: NormalizingFlow, x: torch.Tensor) -> torch.Tensor:
    """phi^{-1} of one point x (D,) in data units, differentiable (the public methods run
    under ``torch.no_grad()``): the standardization, then the flow's inverse hook."""
    return flow._inverse(flow.standardization(x[None]))[0][0]


def latent_to_data(flow: NormalizingFlow, z: torch.Tensor) -> torch.Tensor:
    """phi of one latent z (D,), data units, differentiable."""
    return flow.standardization.inverse(flow._decode(z[None]))[0]


@pytest.mark.parametrize("d", [2, 3, 5])
def test_flow_log_det_matches_autograd_jacobian(d):
    flow = make_flow(d, couplings=3)
    x = flow.standardization.inverse(rand(3, d, seed=4))
    z, ld = flow.inverse(x)
    for i in range(len(x)):
        # The public maps run under no_grad; the differentiable ones are the same maps.
        torch.testing.assert_close(data_to_latent(flow, x[i]), z[i], rtol=0, atol=1e-12)
        torch.testing.assert_close(latent_to_data(flow, z[i]), flow.decode(z[i : i + 1])[0])
        j_inv = torch.autograd.functional.jacobian(lambda v: data_to_latent(flow, v), x[i])
        assert ld[i].item() == pytest.approx(torch.linalg.slogdet(j_inv)[1].item(), abs=1e-8)
        # Forward direction: log|det dphi/dz| at z is minus the inverse's at x = phi(z).
        j_fwd = torch.autograd.functional.jacobian(lambda v: latent_to_data(flow, v), z[i])
        assert -ld[i].item() == pytest.approx(torch.linalg.slogdet(j_fwd)[1].item(), abs=1e-8)


def test_log_prob_is_change_of_variables_in_both_units():
    flow = make_flow(2, couplings=3)
    x = flow.sample(50, generator=torch.Generator().manual_seed(0))
    z, ld = flow.inverse(x)
    lp = flow.log_prob(x)
    assert lp.shape == (50,) and lp.dtype == F64
    assert torch.allclose(lp, standard_normal_log_prob(z) + ld, atol=1e-12)
    lp_std = flow.log_prob(x, standardized=True)
    log_scale = flow.standardization.scale.log().sum()
    assert torch.allclose(lp, lp_std - log_scale, atol=1e-12)


def test_density_integrates_to_one_on_a_grid():
    # Small random flow, standardization at identity: exp(log_prob) over a grid that holds
    # essentially all the mass (bounds from 20k samples plus a margin) must sum to ~1.
    torch.manual_seed(0)
    flow = perturb(NormalizingFlow(2, couplings=3, hidden=8, linear_layers=3).double(), 0.1)
    s = flow.sample(20_000, generator=torch.Generator().manual_seed(1))
    lo, hi = s.min(0).values - 1.5, s.max(0).values + 1.5
    k = 500
    gx = torch.linspace(lo[0].item(), hi[0].item(), k, dtype=F64)
    gy = torch.linspace(lo[1].item(), hi[1].item(), k, dtype=F64)
    grid = torch.cartesian_prod(gx, gy)
    p = flow.log_prob(grid).exp()
    mass = p.sum().item() * (gx[1] - gx[0]).item() * (gy[1] - gy[0]).item()
    assert mass == pytest.approx(1.0, abs=0.01)
    # The flow is not a plain Gaussian (else the test would not exercise the couplings).
    gauss = standard_normal_log_prob(grid).exp()
    assert (p - gauss).abs().max() > 0.02


@pytest.mark.parametrize("dtype", [torch.float32, F64])
@pytest.mark.parametrize("scale", [0.0, 2.0])
def test_far_points_never_give_nan(dtype, scale):
    torch.manual_seed(0)
    flow = perturb(NormalizingFlow(), scale=scale).to(dtype)
    flow.standardization.fit(olympic_rings(2000, seed=0).to(dtype))
    x = torch.tensor([[4.0, 5.0], [1e3, -1e3], [-1e30, 1e30], [2.0, -0.4]], dtype=dtype)
    lp = flow.log_prob(x)
    assert not torch.isnan(lp).any()
    assert (torch.isfinite(lp) | (lp == -math.inf)).all()
    if scale == 0.0:
        # At initialisation (4, 5) and a point in the data have finite densities; at
        # (1e3, -1e3) z overflows, so -inf is the honest answer (log p < -1e308).
        assert torch.isfinite(lp[0]) and torch.isfinite(lp[-1])


@pytest.mark.parametrize("inverse", [False, True])
@pytest.mark.parametrize("units", ["standardized", "data"])
def test_trajectory_shape_and_ends(inverse, units):
    # Three couplings in 2D: two swaps, so the input and output share their coordinate order.
    flow = make_flow(2, couplings=3)
    std = flow.standardization
    z = rand(20, 2)
    x = flow(z)
    path = flow.trajectory(x if inverse else z, inverse=inverse, units=units)
    assert path.shape == (4, 20, 2)
    start_std, end_std = (std(x), z) if inverse else (z, std(x))
    show = (lambda s: s) if units == "standardized" else std.inverse
    assert torch.allclose(path[0], show(start_std), atol=1e-10)
    assert torch.allclose(path[-1], show(end_std), atol=1e-10)
    # Each coupling changes the points: no two consecutive states are equal.
    assert all(not torch.allclose(path[i], path[i + 1]) for i in range(3))


# Ends must be exact even where the permutations do not compose to the identity
# (2D with an even number of couplings; D = 3 with 15).
@pytest.mark.parametrize(("d", "couplings"), [(2, 4), (3, 15)])
def test_trajectory_ends_when_permutations_do_not_cancel(d, couplings):
    flow = make_flow(d, couplings=couplings, scale=0.05)
    z = rand(10, d)
    x = flow(z)
    fwd = flow.trajectory(z, units="standardized")
    inv = flow.trajectory(x, inverse=True, units="standardized")
    assert fwd.shape == inv.shape == (couplings + 1, 10, d)
    assert torch.allclose(fwd[-1], flow.standardization(x), atol=1e-8)
    assert torch.allclose(inv[0], flow.standardization(x), atol=1e-8)
    assert torch.allclose(fwd[0], z), "forward trajectory must start at the input z"
    assert torch.allclose(inv[-1], z, atol=1e-6), "inverse trajectory must end at z"


def test_loss_is_eq9_and_every_parameter_gets_a_gradient():
    flow = make_flow(2, couplings=3)
    x = flow.standardization.inverse(rand(256, 2, seed=5))
    loss = flow.loss(x)
    assert loss.ndim == 0
    expected = -flow.log_prob(x, standardized=True).mean()
    assert loss.item() == pytest.approx(expected.item(), abs=1e-10)
    terms = flow.validation_terms(flow.standardization(x), None, torch.Generator())
    assert terms["loss"] == pytest.approx(expected.item(), abs=1e-10)
    assert terms["loss"] == pytest.approx(-(terms["log_pz"] + terms["log_det"]), abs=1e-10)
    loss.backward()
    for name, p in flow.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_sample_is_seeded_and_in_data_units():
    flow = make_flow(2, couplings=3)
    a = flow.sample(100, generator=torch.Generator().manual_seed(0))
    b = flow.sample(100, generator=torch.Generator().manual_seed(0))
    c = flow.sample(100, generator=torch.Generator().manual_seed(1))
    assert a.shape == (100, 2) and torch.equal(a, b) and not torch.equal(a, c)
    z = torch.randn(100, 2, generator=torch.Generator().manual_seed(0), dtype=F64)
    assert torch.allclose(a, flow(z))
    with pytest.raises(ValueError):
        flow.sample(0)


def test_save_load_round_trip():
    flow = make_flow(2, couplings=3)
    again = NormalizingFlow(**flow.config()).double()
    again.load_state_dict(flow.state_dict())
    x = rand(20, 2)
    assert torch.equal(again.log_prob(x), flow.log_prob(x))
    assert torch.equal(again.standardization.scale, flow.standardization.scale)


def test_wrong_shapes_raise():
    flow = NormalizingFlow(2, couplings=2)
    with pytest.raises(ValueError, match=r"\(N, 2\)"):
        flow.log_prob(torch.zeros(5, 3))
    with pytest.raises(ValueError, match=r"target must have shape \(N, 2\)"):
        flow.check(torch.zeros(5, 3), name="target")
    with pytest.raises(ValueError):
        flow(torch.zeros(5))
    with pytest.raises(ValueError):
        flow.log_prob(torch.zeros(5, 2), labels=torch.zeros(5, dtype=torch.long))


# --- spline flows and class-conditional flows -----------------------------------------------

FLOWS = {
    "nf": lambda **a: NormalizingFlow(couplings=3, **a),
    "nsf": lambda **a: SplineFlow(couplings=3, bins=5, hidden=16, **a),
}
VARIANTS = [(name, classes) for name in FLOWS for classes in (None, 3)]
VARIANT_IDS = [f"{n}{'' if c is None else '-conditional'}" for n, c in VARIANTS]


def make_variant(name: str, classes: int | None, seed: int = 0, scale: float = 0.3):
    torch.manual_seed(seed)
    flow = perturb(FLOWS[name](num_classes=classes).double(), scale, seed)
    st = flow.standardization  # (D,) or, per class, (C, D)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        st.loc.copy_(torch.randn(st.loc.shape, generator=g, dtype=F64))
        st.scale.copy_(0.5 + torch.rand(st.scale.shape, generator=g, dtype=F64))
    return flow.eval()


@pytest.mark.parametrize(("name", "classes"), VARIANTS, ids=VARIANT_IDS)
def test_every_flows_log_det_is_the_autograd_jacobians(name, classes):
    flow = make_variant(name, classes)
    x = flow.standardization.inverse(rand(6, 2, seed=4), None if classes is None else 1)
    labels = None if classes is None else torch.full((6,), 1)
    z, ld = flow.inverse(x, labels)

    def to_latent(v):
        one = None if labels is None else labels[:1]
        return flow._inverse(flow.standardization(v[None], one), one)[0][0]

    for i in range(len(x)):
        j = torch.autograd.functional.jacobian(to_latent, x[i])
        assert ld[i].item() == pytest.approx(torch.linalg.slogdet(j)[1].item(), abs=1e-8)


@pytest.mark.parametrize(("name", "classes"), VARIANTS, ids=VARIANT_IDS)
def test_every_flows_trajectory_ends_at_its_maps(name, classes):
    flow = make_variant(name, classes)
    labels = None if classes is None else torch.arange(10) % classes
    z = rand(10, 2)
    x = flow.decode(z, labels)
    path = flow.trajectory(z, labels=labels)
    back = flow.trajectory(x, labels=labels, inverse=True, units="standardized")
    assert path.shape == back.shape == (4, 10, 2)
    torch.testing.assert_close(path[-1], x)
    torch.testing.assert_close(back[-1], z, rtol=0, atol=1e-8)


def test_the_class_is_fed_to_every_coupling_and_changes_the_density():
    flow = make_variant("nsf", 3, scale=0.5)
    assert flow.config()["standardize"] == "class"  # the default of a conditional flow
    assert all(c.dims[0] == c.split + flow.embedding.embedding_dim for c in flow.coupling_layers())
    x = flow.standardization.inverse(rand(50, 2), 0)
    lp = [flow.log_prob(x, c, standardized=True) for c in range(3)]
    assert (lp[0] - lp[1]).abs().min() > 0 and (lp[1] - lp[2]).abs().min() > 0
    g = torch.Generator().manual_seed(0)
    per_class = [
        flow.sample(5, labels=c, generator=torch.Generator().manual_seed(0)) for c in range(3)
    ]
    assert not torch.allclose(per_class[0], per_class[1])
    mixed = flow.sample(6, labels=torch.tensor([0, 1, 2, 0, 1, 2]), generator=g)
    assert mixed.shape == (6, 2)
    again = type(flow)(**flow.config()).double()
    again.load_state_dict(flow.state_dict())
    torch.testing.assert_close(again.log_prob(x, 2), flow.log_prob(x, 2))
    glob = SplineFlow(couplings=2, num_classes=3, standardize="global")
    assert not glob.standardization.per_class and glob.config()["standardize"] == "global"


def test_the_flow_kernels_step_aside_for_a_conditional_flow_and_say_why():
    for flow, kernel in ((NormalizingFlow, NFKernel()), (SplineFlow, SplineKernel())):
        assert kernel.supports(flow(couplings=2)) is None
        reason = kernel.supports(flow(couplings=2, num_classes=5))
        assert reason is not None and "class-conditional" in reason
    assert not isinstance(SplineFlow(), NormalizingFlow)  # the nf kernel is not tried for splines
    assert isinstance(SplineFlow(), CouplingFlow) and isinstance(NormalizingFlow(), CouplingFlow)
    x, labels = olympic_rings(600, conditional=True, seed=0)
    torch.manual_seed(0)
    config = TrainConfig(epochs=1, batch_size=200)
    for flow in (NormalizingFlow(couplings=2, num_classes=5), SplineFlow(2, 2, 4, num_classes=5)):
        history = fit(flow, x, labels, config=config)
        assert history.fast_path == "pytorch" and "class-conditional" in history.fast_path_note


def test_a_spline_flows_float32_round_trip_over_ten_thousand_points():
    torch.manual_seed(0)
    flow = perturb(SplineFlow(couplings=4, bins=8, hidden=16), scale=0.2)
    x = olympic_rings(10_000, seed=0)
    flow.standardization.fit(x)
    bound = flow.coupling_layers()[0].tail_bound
    st = flow.standardization
    corners = torch.tensor([[bound, bound], [-bound, bound], [bound, 0.0], [0.0, -bound]])
    x[: len(corners)] = st.inverse(corners)  # the tail bound of the first coupling's input
    back = flow.decode(flow.encode(x))
    assert float((back - x).abs().max()) <= 1e-5


@pytest.mark.parametrize("dtype", [torch.float32, F64])
def test_a_spline_flows_tails_keep_far_points_finite(dtype):
    torch.manual_seed(0)
    flow = perturb(SplineFlow(couplings=4, bins=8, hidden=16), scale=0.5).to(dtype)
    flow.standardization.fit(olympic_rings(2000, seed=0).to(dtype))
    far = torch.tensor([[4.0, 5.0], [1e3, -1e3], [1e30, 0.0]], dtype=dtype)
    lp = flow.log_prob(far)
    assert not torch.isnan(lp).any()
    assert torch.isfinite(lp[:2]).all()  # the linear tails: no overflow of z
    if dtype == F64:
        assert torch.isfinite(lp).all()  # z^2 ~ 4e59 still fits; in float32 it is -inf
