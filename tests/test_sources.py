"""Sources of flow matching: densities that integrate to 1 and match their generator,
units shared with the data, sample-only sources that sample but refuse a density, files
recorded and reloaded."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from flowscope import FlowMatching, TrainConfig, fit
from flowscope.data import DATASETS
from flowscope.matching import SOURCES, NoDensity, source_from_text
from flowscope.runs import RunInfo, load_run, save_run

F64 = torch.float64
NAMED = [n for n in SOURCES.names() if n != "file"]


def model(source, **kw):
    fm = FlowMatching(hidden=8, layers=2, source=source, **kw).double()
    st = fm.standardization
    st.loc.copy_(torch.tensor([0.5, -1.0], dtype=F64))
    st.scale.copy_(torch.tensor([1.5, 0.7], dtype=F64))
    return fm.eval()


@pytest.fixture
def source_file(tmp_path):
    path = tmp_path / "src.npy"
    np.save(path, DATASETS["circles"](500, np.random.default_rng(0)))
    return path


def every_source(tmp_path):
    path = tmp_path / "s.npy"
    np.save(path, DATASETS["circles"](200, np.random.default_rng(0)))
    return [*NAMED, {"name": "file", "path": str(path)}]


@pytest.mark.parametrize("i", range(len(NAMED) + 1))
def test_every_source_samples_reverses_and_reloads(i, tmp_path):
    source = every_source(tmp_path)[i]
    fm = model(source)
    g = lambda: torch.Generator().manual_seed(0)  # noqa: E731
    x = fm.sample(20, generator=g(), dt=0.1)
    assert x.shape == (20, 2) and torch.isfinite(x).all()
    torch.testing.assert_close(fm.sample(20, generator=g(), dt=0.1), x)
    z = fm.encode(x, dt=0.05, solver="rk4")
    torch.testing.assert_close(fm.decode(z, dt=0.05, solver="rk4"), x, atol=1e-4, rtol=0)
    path = fm.trajectory(fm.base_sample(5, g()), dt=0.25)
    assert path.shape == (5, 5, 2)
    info = RunInfo(kind="fm", model=fm.config(), data={"source": "moons"}, train={}, extra={})
    save_run(tmp_path / "run", fm.float(), info, None)
    loaded, _ = load_run(tmp_path / "run")
    assert loaded.source == fm.source
    torch.testing.assert_close(loaded.base_sample(7, g()), fm.base_sample(7, g()))
    if fm.source.has_density:
        assert torch.isfinite(loaded.log_prob(x, steps=5)).all()
    else:
        with pytest.raises(NoDensity, match="only by its samples"):
            loaded.log_prob(x, steps=5)


def test_a_source_in_data_units_is_mapped_by_the_datas_standardization():
    fm = model("8gaussians")
    y0 = fm.base_sample(4000, torch.Generator().manual_seed(0))
    x0 = fm.standardization.inverse(y0)  # back in data units: the toy set's own points
    radius = x0.norm(dim=1)
    assert radius.mean().item() == pytest.approx(2.0, abs=0.02)
    # Decoded with dt = 1 of a zero field, the data-unit trajectory starts at the source.
    start = fm.trajectory(y0[:3], dt=0.5)[0]
    torch.testing.assert_close(start, x0[:3])


@pytest.mark.parametrize("name", [n for n in NAMED if SOURCES.get(n).has_density])
def test_a_source_density_integrates_to_one_in_standardized_units(name):
    fm = model(name)
    k, half = 400, 8.0
    u = torch.linspace(-half, half, k, dtype=F64)
    grid = torch.cartesian_prod(u, u)
    mass = float(fm.base_log_prob(grid).exp().sum()) * (2 * half / (k - 1)) ** 2
    assert mass == pytest.approx(1.0, abs=2e-3)


def test_the_8gaussians_density_is_that_of_its_generator():
    # The average log-density of the generator's points is the mixture's cross-entropy,
    # nearly its entropy: log 8 + log(2 pi e 0.1^2) with well separated components.
    src = SOURCES.build("8gaussians")
    x = torch.from_numpy(DATASETS["8gaussians"](20000, np.random.default_rng(1)))
    entropy = math.log(8) + math.log(2 * math.pi * math.e * 0.01)
    assert -float(src._log_prob(x).mean()) == pytest.approx(entropy, abs=0.03)


@pytest.mark.parametrize("columns", [1, 3, 4])
def test_a_source_file_of_another_dimension_names_both(tmp_path, columns):
    # Three columns could be 2D points with labels: not when the third is not labels.
    path = tmp_path / "other.npy"
    np.save(path, np.random.default_rng(0).standard_normal((50, columns)))
    with pytest.raises(ValueError, match=f"dimension {columns}, but the data have dimension 2"):
        FlowMatching(source={"name": "file", "path": str(path)})


def test_a_changed_source_file_is_refused(source_file):
    fm = FlowMatching(source={"name": "file", "path": str(source_file)})
    np.save(source_file, np.zeros((10, 2)))
    with pytest.raises(ValueError, match="has changed"):
        FlowMatching(**fm.config())


def test_source_names_and_files_from_the_command_line(source_file):
    assert source_from_text("8gaussians") == {"name": "8gaussians"}
    assert source_from_text(str(source_file))["path"] == str(source_file)
    with pytest.raises(ValueError, match="choose one of: normal, 8gaussians"):
        source_from_text("nine-gaussians")


def test_per_class_standardization_with_a_data_unit_source_is_refused():
    assert FlowMatching(num_classes=2, source="8gaussians").config()["standardize"] == "global"
    with pytest.raises(ValueError, match="global"):
        FlowMatching(num_classes=2, source="8gaussians", standardize="class")


def test_flow_from_8gaussians_to_moons_trains_with_ot():
    x = torch.from_numpy(DATASETS["moons"](3000, np.random.default_rng(0))).float()
    fm = FlowMatching(hidden=32, layers=3, source="8gaussians", coupling="ot", times="uniform")
    fit(fm, x, config=TrainConfig(epochs=20, batch_size=128), progress=False)
    out = fm.sample(500, generator=torch.Generator().manual_seed(0), dt=0.05)
    # Most samples land near the moons (which lie within [-1, 2] x [-0.6, 1.1]).
    inside = (out[:, 0] > -1.3) & (out[:, 0] < 2.3) & (out[:, 1] > -0.9) & (out[:, 1] < 1.4)
    assert inside.float().mean() > 0.9
