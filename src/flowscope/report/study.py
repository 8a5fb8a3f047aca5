"""The state of one report run, shared by its stages, and the held-out data they use.

A :class:`Study` holds the preset, the models and their histories, the document
being written and ``m``, the dictionary that becomes ``metrics.json``. Each stage of the
report (:mod:`.models`, :mod:`.overview`, :mod:`.nf`, :mod:`.fm`, :mod:`.cfm`,
:mod:`.bonus`) is a function of the study; some leave results for later ones (the NF's
paths of Q3, compared with flow matching's in FM Q2 and Q3, for instance), declared below.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any, TextIO

import numpy as np
import torch

from .. import __version__, plots
from ..evaluate import FLOOR_PAIRS, NoiseFloor, data_draw, noise_floor
from ..runs import atomic_write, run_data, train_config
from ..train import History
from .document import Document
from .measures import band_area
from .presets import FIGURE_DPI, PROBE_POINTS, Preset
from .text import pair, pct, pm

__all__ = ["Study", "outside_note", "prepare_data", "zoom_note"]


class Study:
    """State shared by the stages of one report run (models, data, metrics, document).

    Arguments:
        out: the output folder; figures go to ``out/figures``, models to ``out/models``.
        preset: the sizes of the run.
        seed: seeds the data, the training and every experiment.
        retrain: train the models even if saved ones match.
        log: where progress lines go.
    """

    # Left by the stages for later ones (data units unless said otherwise):
    test: torch.Tensor  # (N, 2) the held-out test points, from prepare_data
    val_n: int  # validation points of the loss, from prepare_data
    background: torch.Tensor  # (M, 2) test points drawn as grey context, from prepare_data
    h_std: float  # the data's entropy, nats per standardized point, from prepare_data
    floors: dict[tuple[int, bool], NoiseFloor]  # W2 noise floor per (size, conditional data)
    quality_n: int  # samples per model of the overview's W2, from prepare_data
    probes: torch.Tensor  # (5, 2) the points of PROBE_POINTS, from prepare_data
    z_show: torch.Tensor  # (n_show, 2) latents, standardized units, from prepare_data
    nf_path: np.ndarray  # (L + 1, n_show, 2) z_show through the NF's layers, from NF Q3
    nf_probe_z: torch.Tensor  # (5, 2) the NF latents of the probes, from NF Q5
    fm_path: np.ndarray  # (101, n_show, 2) z_show along the FM flow, from FM Q2
    fm_times: np.ndarray  # (101,) the times of fm_path, from FM Q2

    def __init__(self, out: Path, preset: Preset, seed: int, retrain: bool, log: TextIO):
        self.out = out
        self.preset = preset
        self.seed = seed
        self.retrain = retrain
        self.log = log
        self.fig_dir = out / "figures"
        self.models: dict[str, Any] = {}
        self.infos: dict[str, Any] = {}
        self.histories: dict[str, History] = {}
        self.trained: dict[str, bool] = {}
        self.m: dict[str, Any] = {"preset": asdict(preset), "seed": seed}
        self.timings: dict[str, float] = {}
        self.doc = Document(
            "flowscope: flows on the Olympic rings",
            f"flowscope {__version__}, torch {torch.__version__}; preset <b>{preset.name}</b> "
            f"({preset.n_points:,} training points, {preset.epochs} epochs), seed {seed}. "
            "Every number below was measured in this run and is stored in metrics.json, "
            "except where a benchmark file of the repository is named as the source.",
        )

    # -- plumbing ----------------------------------------------------------------------
    def gen(self, offset: int) -> torch.Generator:
        """A generator seeded from the report's seed and a per-experiment offset."""
        return torch.Generator().manual_seed(1000 * self.seed + offset)

    def say(self, text: str) -> None:
        """A progress line on the log."""
        print(text, file=self.log, flush=True)

    def figure(self, name: str, figure: Any, caption: str) -> None:
        """Save ``figure`` as ``figures/NAME.png`` and add it to the document."""
        path = self.fig_dir / f"{name}.png"
        plots.save(figure, path, dpi=FIGURE_DPI, write=atomic_write)
        self.doc.figure(path, caption)

    def floor(self, n: int, conditional: bool = False) -> NoiseFloor:
        """The W2 noise floor at ``n`` points, computed once by :func:`prepare_data`.

        Raises:
            KeyError: for a size (or data) the study did not prepare a floor for.
        """
        return self.floors[(n, conditional)]

    def floor_text(self, n: int, conditional: bool = False) -> str:
        """``0.186 ± 0.006``: the noise floor at ``n`` points, as every text quotes it."""
        f = self.floor(n, conditional)
        return pm(f.mean, f.std)

    def points_figure(
        self,
        name: str,
        panels: Sequence[tuple[Any, str]],
        caption: str,
        *,
        names: Sequence[str] | None = None,
        **kwargs: Any,
    ) -> None:
        """Point clouds (:func:`~flowscope.plots.point_panels`) with shared limits, saved and
        added as :meth:`figure` does.

        The limits hold all but the outermost 0.1% of the points per side and axis (a few
        far points would shrink the clouds); the caption gets :func:`outside_note`, the
        share of each panel's points left outside, the panels named by ``names`` (default:
        their titles).
        """
        frame = plots.limits([p for p, _ in panels], quantile=0.999)
        fig = plots.point_panels(panels, frame=frame, **kwargs)
        named = [(p, n) for (p, _), n in zip(panels, names or [t for _, t in panels], strict=True)]
        self.figure(name, fig, f"{caption} {outside_note(named, frame)}".rstrip())

    def trajectory_figure(
        self,
        name: str,
        panels: Sequence[Mapping[str, Any]],
        caption: str,
        *,
        time_label: str,
        panel_height: float = 2.6,
        ncols: int | None = None,
        zoom: bool = False,
    ) -> None:
        """Paths over the grey held-out points (:func:`~flowscope.plots.trajectory_panels`),
        saved and added to the document as :meth:`figure` does.

        With ``zoom``, the one panel is drawn by :func:`~flowscope.plots.trajectory_zoom`
        in the region of the data (:func:`~flowscope.plots.zoom_frame`), next to the whole
        extent when something lies outside it, and the caption gets :func:`zoom_note`.

        Raises:
            ValueError: if ``zoom`` is asked for more than one panel.
        """
        if not zoom:
            fig = plots.trajectory_panels(
                panels,
                time_label=time_label,
                background=self.background,
                panel_height=panel_height,
                ncols=ncols,
            )
            self.figure(name, fig, caption)
            return
        if len(panels) != 1:
            raise ValueError(f"zoom draws one panel, got {len(panels)}: split the figure")
        (panel,) = panels
        overlay = panel.get("overlay") or ()
        frame = plots.zoom_frame([panel["path"], *(o[0] for o in overlay)])
        fig = plots.trajectory_zoom(
            panel,
            frame=frame,
            time_label=time_label,
            background=self.background,
            panel_height=panel_height,
        )
        self.figure(name, fig, f"{caption} {zoom_note(panel, frame)}")


def outside_note(panels: Sequence[tuple[Any, str]], frame: plots.Frame) -> str:
    """What share of each panel's points (N, 2) lies outside ``frame`` (data units), for
    the panels that have any, given as (points, name): ``Outside the frame (not shown):
    0.4% of “t = 0”.``"""
    items = []
    for points, title in panels:
        share = float(plots.outside(points, frame).mean())
        if share > 0:
            items.append(f"{pct(share)} of “{title}”")
    if not items:
        return ""
    return f"Outside the frame (not shown): {', '.join(items)}."


def zoom_note(panel: Mapping[str, Any], frame: plots.Frame) -> str:
    """What the panels of :func:`~flowscope.plots.trajectory_zoom` show, and what of
    ``panel`` (its paths' states and ends, its overlay points) lies outside ``frame``.

    Overlay points are named after the paths' ``annotate`` labels, one per path, with their
    legend label: ``the NF latent of E at (7.1, 28.4)``.
    """
    path = np.asarray(panel["path"], dtype=np.float64)
    names = [str(n) for n in panel.get("annotate") or ()]
    names += [f"#{n + 1}" for n in range(len(names), path.shape[1])]
    items = []
    for n in range(path.shape[1]):
        out = plots.outside(path[:, n], frame)
        if out.any():
            what = "the path" if out.all() else "part of the path"
            end = f" with its end at {pair(path[-1, n], 1)}" if out[-1] else ""
            items.append(f"{what} of {names[n]}{end}")
    for points, label, *_ in panel.get("overlay") or ():
        points = np.asarray(points, dtype=np.float64).reshape(-1, 2)
        for i in np.flatnonzero(plots.outside(points, frame)):
            who = f" of {names[i]}" if len(points) == path.shape[1] else ""
            items.append(f"the {label}{who} at {pair(points[i], 1)}")
    if not items:
        return ""
    return (
        "Left: the region of the data; paths are cut at its edge, where a black triangle "
        "marks each exit. Right: the whole extent, the left frame dashed. Outside the left "
        f"frame: {'; '.join(items)}."
    )


def prepare_data(study: Study) -> None:
    """The stage that sets the held-out points, a background subsample, the data's
    entropy floor (the log of the area of the rings' bands, :func:`~.measures.band_area`)
    and the W2 noise floor at each sample size the study quotes W2 for.

    The noise floors (:func:`~flowscope.evaluate.noise_floor`): ``n_show`` points of the
    unconditional data (NF Q2, FM Q2, FM Q4), and the overview's sample size of the
    unconditional data (NF, FM) and of the conditional data (CFM, whose test points are
    drawn as it was trained), each the mean and spread over pairs of fresh draws whose
    seeds start at ``1000 * seed + 100``, never the models' own data seeds.
    """
    p = study.preset
    nf, info = study.models["nf"], study.infos["nf"]
    study.test = run_data(info, "test").x
    study.quality_n = min(p.n_quality, len(study.test), len(run_data(study.infos["cfm"], "test").x))
    sizes = {(p.n_show, False), (study.quality_n, False), (study.quality_n, True)}
    study.floors = {
        (n, cond): noise_floor(
            data_draw("olympic", cond), n, seed=1000 * study.seed + 100, pairs=FLOOR_PAIRS
        )
        for n, cond in sorted(sizes)
    }
    study.m["w2_noise_floors"] = [
        {"n": n, "conditional": cond, "mean": f.mean, "std": f.std, "values": list(f.values)}
        for (n, cond), f in study.floors.items()
    ]
    trained_on = train_config(info).val_size_for(int(info.data["n_points"]))
    study.val_n = min(len(run_data(info, "val").x), trained_on)
    study.background = study.test[: p.background]
    area = band_area(p.entropy_points, seed=12_345)
    scale = nf.standardization.scale.double()
    h_data = math.log(area)
    h_std = h_data - float(scale.log().sum())
    study.h_std = h_std
    study.m["data"] = {
        "band_area": area,
        "entropy_data_units": h_data,
        "entropy_standardized": h_std,
        "std": scale.tolist(),
        "entropy_monte_carlo_points": p.entropy_points,
        "test_points": len(study.test),
    }
    study.probes = torch.tensor([xy for _, xy in PROBE_POINTS])
    study.z_show = torch.randn(p.n_show, 2, generator=study.gen(3))
