"""The sampler's fast path (kernels/sampler.py, fm.c's fm_euler): the PyTorch sampler's
Euler steps to rounding, in float64, at every size the network can have; used by
sample, decode, encode and trajectory where it reproduces them, and only there."""

import importlib
import subprocess
import sys

import pytest
import torch

from flowscope.kernels import load
from flowscope.matching import FlowMatching, VelocityField, integrate, time_grid
from flowscope.matching.model import EULER_ACCELERATORS

# Where flowscope.kernels does not import the sampler itself, importing it here must not
# change how the other test modules sample: it is registered for this module's tests only.
_KEPT = list(EULER_ACCELERATORS)
sampler = importlib.import_module("flowscope.kernels.sampler")
_ADDED = [a for a in EULER_ACCELERATORS if a not in _KEPT]
EULER_ACCELERATORS[:] = _KEPT

pytestmark = pytest.mark.skipif(
    load(sampler.KERNEL, torch.float64) is None, reason="no C compiler here"
)


@pytest.fixture(autouse=True)
def registered():
    added = sampler.accelerate not in EULER_ACCELERATORS
    if added:
        EULER_ACCELERATORS.append(sampler.accelerate)
    yield
    if added:
        EULER_ACCELERATORS.remove(sampler.accelerate)


F64 = torch.float64


def model(features=2, hidden=64, layers=5, num_classes=None, skip=True, dtype=F64, **parts):
    """A model whose weights are large enough that the flow bends."""
    torch.manual_seed(0)
    fm = FlowMatching(
        features=features,
        num_classes=num_classes,
        hidden=hidden,
        layers=layers,
        gaussian_skip=skip,
        **parts,
    ).to(dtype)
    with torch.no_grad():
        fm.field.theta.mul_(2.0)
    return fm


def inputs(fm, n, dtype=F64):
    g = torch.Generator().manual_seed(1)
    y = torch.randn(n, fm.features, generator=g, dtype=dtype)
    c = fm.num_classes
    labels = None if c is None else torch.randint(0, c, (n,), generator=g)
    return y, labels


def pytorch_states(fm, y, labels, grid):
    with torch.no_grad():
        return integrate(fm.ode_velocity(labels), y, grid, "euler")


@pytest.fixture
def kernel_wins(monkeypatch):
    """The speed check always finds the kernel faster (its decision is tested apart)."""
    monkeypatch.setattr(sampler, "speed", lambda *a: {"kernel": 0.0, "pytorch": 1.0})


@pytest.fixture
def kernel_calls(monkeypatch, kernel_wins):
    """The number of kernel runs, counted as the model's methods call it."""
    calls = []
    run = sampler.euler

    def counted(*args):
        calls.append(1)
        return run(*args)

    monkeypatch.setattr(sampler, "euler", counted)
    return calls


# (features, hidden, layers, points): widths that are not whole vectors, 2-5 layers; one
# point, part of a chunk, many chunks with a tail that is not a whole register block
SIZES = [
    (1, 3, 2, 1),
    (2, 7, 3, 37),
    (3, 64, 5, 1000),
    (2, 64, 4, 37),
    (3, 7, 5, 1),
    (1, 64, 3, 1000),
]


@pytest.mark.parametrize("features, hidden, layers, n", SIZES)
@pytest.mark.parametrize("num_classes", [None, 3])
@pytest.mark.parametrize("skip", [False, True])
def test_euler_kernel_is_the_pytorch_sampler(features, hidden, layers, n, num_classes, skip):
    fm = model(features, hidden, layers, num_classes, skip)
    y, labels = inputs(fm, n)
    grid = time_grid(0.02)
    ref = pytorch_states(fm, y, labels, grid)
    record = [0, 1, 17, len(grid) - 1]
    out = sampler.euler(fm, y, labels, grid, record)
    assert out.shape == (len(record), n, features)
    assert torch.equal(out[0], y)  # the initial state, exactly
    torch.testing.assert_close(out, ref[record], rtol=1e-10, atol=1e-12)
    assert (out[-1] - y).abs().max() > 0.01  # the flow moved the points
    # every step, and steps asked for in any order and more than once
    torch.testing.assert_close(
        sampler.euler(fm, y, labels, grid, list(range(len(grid)))), ref, rtol=1e-10, atol=1e-12
    )
    some = [50, 3, 3, 0]
    torch.testing.assert_close(
        sampler.euler(fm, y, labels, grid, some), ref[some], rtol=1e-10, atol=1e-12
    )


# the cosine path's rate is 0; sigma_min changes the linear path's
@pytest.mark.parametrize("path", ["cosine", {"name": "linear", "sigma_min": 0.1}])
def test_euler_kernel_takes_the_skip_rate_from_the_path(path):
    fm = model(path=path, num_classes=4)
    y, labels = inputs(fm, 37)
    grid = time_grid(0.01, 1.0, 0.0)  # backwards: negative steps
    ref = pytorch_states(fm, y, labels, grid)
    torch.testing.assert_close(
        sampler.euler(fm, y, labels, grid, [len(grid) - 1])[0], ref[-1], rtol=1e-10, atol=1e-12
    )


def test_float32_kernel_is_the_float32_sampler_to_rounding():
    fm = model(num_classes=3, dtype=torch.float32)
    y, labels = inputs(fm, 100, torch.float32)
    grid = time_grid(0.01)
    ref = pytorch_states(fm, y, labels, grid)[-1]
    out = sampler.euler(fm, y, labels, grid, [len(grid) - 1])[0]
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-4)


def test_euler_kernel_rejects_labels_outside_the_classes():
    fm = model(num_classes=3, hidden=8, layers=2)
    y, _ = inputs(fm, 5)
    with pytest.raises(ValueError, match="outside 0..2"):
        sampler.euler(fm, y, torch.tensor([0, 1, 2, 3, 0]), time_grid(0.5), [2])


@pytest.mark.parametrize("num_classes", [None, 4])
def test_the_model_samples_encodes_and_records_with_the_kernel(
    num_classes, kernel_calls, monkeypatch
):
    fm = model(num_classes=num_classes)
    z, labels = inputs(fm, 37)
    gen = lambda: torch.Generator().manual_seed(3)  # noqa: E731
    times = [0.5, 0.0, 0.25, 1.0, 0.333, 0.5]  # any order, on and off the grid, repeated

    def run():
        return {
            "sample": fm.sample(37, labels=labels, generator=gen(), dt=0.01),
            "decode": fm.decode(z, labels, dt=0.01),
            "encode": fm.encode(z, labels, dt=0.01),
            "times": fm.trajectory(z, labels=labels, dt=0.01, times=times),
            "inverse": fm.trajectory(z, labels=labels, dt=0.05, times=times, inverse=True),
            "every": fm.trajectory(z, labels=labels, dt=0.05, units="standardized"),
        }

    fast = run()
    assert len(kernel_calls) == len(fast)
    monkeypatch.setenv("FLOWSCOPE_NO_KERNEL", "1")
    plain = run()
    assert len(kernel_calls) == len(fast)  # stepped aside
    for name, ref in plain.items():
        torch.testing.assert_close(fast[name], ref, rtol=1e-10, atol=1e-12, msg=name)
    assert torch.equal(fast["every"][0], z)
    # other solvers are not Euler's
    fm.decode(z, labels, dt=0.1, solver="midpoint")
    assert len(kernel_calls) == len(fast)


class ScaledField(VelocityField):
    """Twice the built-in network: a field the kernel does not compute."""

    def forward(self, y, t, labels=None):
        return 2 * super().forward(y, t, labels)


class SlowerSampler(FlowMatching):
    """Half the velocity, by the sampler's own field."""

    def ode_velocity(self, labels=None):
        v = super().ode_velocity(labels)
        return lambda y, t: 0.5 * v(y, t)


def test_the_kernel_steps_aside_where_it_would_compute_something_else(kernel_calls):
    z = torch.randn(20, 2, dtype=F64)
    custom = model(hidden=8, layers=3)
    custom.field = ScaledField(2, 8, 3).double()
    overridden = SlowerSampler(hidden=8, layers=3).double()
    for fm, why in [(custom, "VelocityField"), (overridden, "ode_velocity")]:
        with torch.no_grad():
            assert why in sampler.reason(fm, z, None)
        ref = pytorch_states(fm, z, None, time_grid(0.1))[-1]
        torch.testing.assert_close(fm.decode(z, dt=0.1), ref, rtol=1e-12, atol=1e-12)
    fm = model(hidden=8, layers=3)
    assert "gradients" in sampler.reason(fm, z.requires_grad_(), None)
    with torch.no_grad():
        assert sampler.reason(fm, z, None) is None
        assert "no points" in sampler.reason(fm, z[:0], None)
        assert "CPU" in sampler.reason(fm, z.to("meta"), None)
        assert "float16" in sampler.reason(fm.half(), z.half(), None)
    assert kernel_calls == []


def test_the_kernel_steps_aside_with_flowscope_no_kernel(monkeypatch, kernel_calls):
    fm = model(hidden=8, layers=3)
    z = torch.randn(20, 2, dtype=F64)
    monkeypatch.setenv("FLOWSCOPE_NO_KERNEL", "1")
    with torch.no_grad():
        assert "FLOWSCOPE_NO_KERNEL" in sampler.reason(fm, z, None)
        assert sampler.accelerate(fm, z, None, time_grid(0.1), [10]) is None
    fm.sample(20, dt=0.1)
    assert kernel_calls == []


def test_a_kernel_slower_than_pytorch_does_not_run(monkeypatch, tmp_path):
    monkeypatch.setenv("FLOWSCOPE_CACHE", str(tmp_path))  # no kept measurement
    monkeypatch.setattr(sampler, "_SPEEDS", {})
    times = iter([5.0, 1.0])  # the kernel 5 ms, PyTorch 1 ms
    monkeypatch.setattr(sampler, "_time", lambda call: next(times))
    fm = model(hidden=8, layers=3)
    z = torch.randn(300, 2, dtype=F64)
    with torch.no_grad():
        assert "PyTorch" in sampler.reason(fm, z, None)
        assert sampler.accelerate(fm, z, None, time_grid(0.1), [10]) is None
    # Kept per batch bucket, in memory and beside the built kernels: not timed again.
    monkeypatch.setattr(sampler, "_time", lambda call: pytest.fail("timed again"))
    with torch.no_grad():
        assert "PyTorch" in sampler.reason(fm, z[:257], None)
    monkeypatch.setattr(sampler, "_SPEEDS", {})
    assert (tmp_path / "sampler_speeds.json").exists()
    with torch.no_grad():
        assert "PyTorch" in sampler.reason(fm, z, None)
    assert [sampler.bucket(n) for n in (1, 2, 3, 1000, 10**6)] == [1, 2, 4, 1024, 4096]


def test_importing_the_sampler_registers_it_once():
    assert (_KEPT + _ADDED).count(sampler.accelerate) == 1


@pytest.mark.parametrize("w", [0.0, 1.0, 2.5])
def test_guided_sampling_takes_the_kernel_one_step_at_a_time(w, kernel_calls, monkeypatch):
    # Each guided Euler step is y_null + w (y_class - y_null) of one kernel step of each
    # field; w = 0 and w = 1 are one field, one kernel run for the whole grid.
    fm = model(hidden=8, layers=3, num_classes=3, label_dropout=0.2)
    z, labels = inputs(fm, 21)
    fast = fm.decode(z, labels, dt=0.1, guidance=w)
    assert len(kernel_calls) == (1 if w in (0.0, 1.0) else 10)
    steps = fm.trajectory(z, labels=labels, dt=0.1, times=[0.3, 1.0], guidance=w)
    torch.testing.assert_close(steps[1], fast, rtol=0, atol=0)
    monkeypatch.setenv("FLOWSCOPE_NO_KERNEL", "1")
    calls = len(kernel_calls)
    plain = fm.decode(z, labels, dt=0.1, guidance=w)
    assert len(kernel_calls) == calls  # stepped aside: PyTorch's guided field
    torch.testing.assert_close(fast, plain, rtol=1e-10, atol=1e-12)
    null = fm.decode(z, torch.full_like(labels, 0), dt=0.1)  # some other field
    assert not torch.allclose(plain, null)


def test_importing_flow_matching_alone_registers_the_fused_sampler():
    code = (
        "import flowscope.matching; from flowscope.matching.model import EULER_ACCELERATORS;"
        "print(len(EULER_ACCELERATORS))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert int(out.stdout) >= 1
