"""The report run: the stages in order, their wall times, and the files they write."""

from __future__ import annotations

import json
import math
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import numpy as np
import torch

from ..data import check_int
from ..errors import MissingDependency
from ..runs import atomic_write
from . import beyond, bonus, cfm, fm, models, nf, overview
from .document import write_html, write_pdf
from .measures import as_numpy
from .presets import PRESETS, PROBE_POINTS, STUDY_MODELS, Preset
from .study import Study, prepare_data

__all__ = ["ReportResult", "build_report"]

MAX_PAGES = 12  # the study's limit on the PDF
#: Sizes of the explorer pages by preset (the smoke preset's are a seconds-long check).
EXPLORER_SIZES: dict[str, dict[str, int]] = {"smoke": {"n": 200, "grid": 12, "frame_grid": 8}}


@dataclass
class ReportResult:
    """What :func:`build_report` wrote.

    Attributes:
        out: the output folder.
        pdf, html, metrics: paths of ``report.pdf``, ``report.html``, ``metrics.json``.
        pages: pages of the PDF.
        timings: wall time of each stage, in seconds, in order.
        trained: per model, ``True`` if it was trained in this run, ``False`` if reused.
    """

    out: Path
    pdf: Path
    html: Path
    metrics: Path
    pages: int
    timings: dict[str, float]
    trained: dict[str, bool]


def jsonable(x: Any) -> Any:
    """Plain JSON values; inf and NaN become None."""
    if isinstance(x, dict):
        return {str(k): jsonable(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [jsonable(v) for v in x]
    if isinstance(x, torch.Tensor | np.ndarray):
        return jsonable(as_numpy(x).tolist())
    if isinstance(x, np.generic):
        x = x.item()
    if isinstance(x, float):
        return x if math.isfinite(x) else None
    if isinstance(x, Path):
        return str(x)
    return x


def write_explorers(study: Study, html_path: Path) -> None:
    """The explorer page of each study model, ``explore_NAME.html`` beside the report,
    linked from the top of ``report.html``."""
    from ..explore import explore_run

    sizes = EXPLORER_SIZES.get(study.preset.name, {})
    links = []
    for name in STUDY_MODELS:
        page = explore_run(
            study.out / "models" / name,
            html_path.parent / f"explore_{name}.html",
            points=PROBE_POINTS,  # the report's probe points, in the page's point list
            **sizes,
        )
        links.append(f'<a href="{page.name}">{name.upper()}</a>')
    note = (
        '<p class="sub">Interactive explorers (offline pages): '
        + ", ".join(links)
        + ": drag through the layers or times, click a point to follow it to the latent.</p>"
    )
    text = html_path.read_text()
    atomic_write(html_path, text.replace("<nav>", note + "<nav>", 1))


def build_report(
    out: str | Path = "runs/olympic",
    *,
    preset: str | Preset = "full",
    seed: int = 0,
    retrain: bool = False,
    log: TextIO | None = None,
) -> ReportResult:
    """Train or reuse the study's three models and every other registered model type, run
    the whole study and write the report.

    Arguments:
        out: output folder (created if needed).
        preset: ``"full"`` (the study's recipe: 250,000 points, 20 epochs), ``"quick"``
            (7 epochs), ``"smoke"`` (tiny, for tests) or a :class:`Preset`.
        seed: seeds the data, the training and every experiment.
        retrain: train the models even if ``out/models`` holds them with the same config.
        log: where progress lines go (default: stderr).

    Returns:
        a :class:`ReportResult`.

    Raises:
        ValueError: for an unknown preset or a bad seed.
        RunError: if a model folder cannot be written or read.
        MissingDependency: if reportlab (the ``report`` extra) is not installed.
    """
    if isinstance(preset, str):
        if preset not in PRESETS:
            raise ValueError(f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}")
        preset = PRESETS[preset]
    if not isinstance(preset, Preset):
        raise TypeError(f"preset must be a name or a Preset, got {type(preset).__name__}")
    seed = check_int(seed, "seed", minimum=0)
    try:
        import reportlab  # noqa: F401 - an optional dependency, checked before hours of work
    except ModuleNotFoundError:
        raise MissingDependency(
            "flowscope report needs reportlab for the PDF: pip install 'flowscope[report]'"
        ) from None
    log = log or sys.stderr
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "figures").mkdir(exist_ok=True)
    study = Study(out, preset, seed, retrain, log)
    paths = {"pdf": out / "report.pdf", "html": out / "report.html"}
    pages = 0

    def write_documents(study: Study) -> None:
        nonlocal pages
        pages = write_pdf(study.doc, paths["pdf"])
        if pages > MAX_PAGES:
            study.say(f"    warning: the PDF has {pages} pages, more than {MAX_PAGES}")

    stages: list[tuple[str, Callable[[Study], None]]] = [
        *models.STAGES,
        ("held-out data, entropy and W2 noise floors", prepare_data),
        *overview.STAGES,
        *nf.STAGES,
        *fm.STAGES,
        *cfm.STAGES,
        *beyond.training_stages(),  # before the Bonus, which steers their guided model too
        *bonus.STAGES,
        beyond.PAGE,
        ("write report.pdf", write_documents),
        ("write report.html", lambda study: write_html(study.doc, paths["html"])),
        ("write the explorer pages", lambda study: write_explorers(study, paths["html"])),
    ]
    for i, (title, fn) in enumerate(stages, start=1):
        study.say(f"flowscope report [{i:2d}/{len(stages)}] {title}")
        t0 = time.perf_counter()
        fn(study)
        study.timings[title] = time.perf_counter() - t0
    study.m["timings_seconds"] = study.timings
    study.m["pdf_pages"] = pages
    metrics_path = out / "metrics.json"
    atomic_write(metrics_path, json.dumps(jsonable(study.m), indent=1) + "\n")
    return ReportResult(
        out=out,
        pdf=paths["pdf"],
        html=paths["html"],
        metrics=metrics_path,
        pages=pages,
        timings=dict(study.timings),
        trained=dict(study.trained),
    )
