"""``flowscope report``: the whole Olympic-rings study, written as a PDF and an HTML report.

:func:`build_report` trains (or reuses) the three models of the study, a normalizing flow
(``nf``), unconditional flow matching (``fm``) and class-conditional flow matching
(``cfm``), runs every experiment of the seed's sections 3.3 and 4.3 and the Bonus, and
writes into one folder:

- ``report.pdf`` (reportlab) and ``report.html`` (one self-contained file, figures
  embedded as base64 PNG), with the same content: a heading per question;
- ``figures/*.png`` (matplotlib, see :mod:`flowscope.plots`);
- ``metrics.json``: every number the text quotes, and the wall time of every stage;
- ``models/{nf,fm,cfm}/``: the run folders (:mod:`flowscope.runs`). A model whose saved
  configuration equals the requested one is loaded instead of trained again.

The text is generated from the measured numbers: where a statement could go either way
(which model is closer to the data, whether an error shrinks with the step), the sentence
is chosen by comparing the numbers, never written in advance.

Example:
    ``flowscope report --preset quick --out runs/olympic``
"""

from __future__ import annotations

import argparse
import base64
import copy
import html
import io
import json
import math
import re
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, TextIO

import numpy as np
import torch
from PIL import Image as PILImage

from . import __version__, metrics, plots, steer
from .cli import CommandError, add_command
from .data import OLYMPIC_BOX, RING_NAMES, ring_distance
from .evaluate import evaluate_run
from .runs import (
    MODEL_PRESETS,
    RunError,
    atomic_write,
    build_model,
    load_run,
    read_history,
    read_info,
    run_data,
    train_run,
)
from .train import History, TrainConfig

__all__ = ["PRESETS", "Preset", "ReportResult", "add_commands", "build_report"]

MODELS = ("nf", "fm", "cfm")
MODEL_TITLES = {
    "nf": "normalizing flow",
    "fm": "flow matching",
    "cfm": "conditional flow matching",
}
DTS = (0.002, 0.02, 0.05, 0.1, 0.2)  # seed section 4.3, FM Q4
FM_TIMES = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)  # seed section 4.3, FM Q2
BONUS_TARGET = (4.0, 5.0)  # data units
BONUS_REACHED = 0.05  # data units: a landing error below this counts as reaching the target
BONUS_LR = 0.5  # Adam's step on the noise, standardized units (the target's noise is far out)
HALF_BAND = 0.125  # half the rings' band width, data units
_C45 = math.cos(math.pi / 4)
# NF Q5 / FM Q5: three points on the rings' centre lines, two off the rings (data units).
PROBE_POINTS = (
    ("A", (-_C45, _C45)),  # blue ring, upper left
    ("B", (1.0 - _C45, -1.0 - _C45)),  # yellow ring, lower left
    ("C", (4.0 + _C45, _C45)),  # red ring, upper right
    ("D", (0.0, 0.0)),  # the centre of the blue ring
    ("E", (2.0, 2.5)),  # above the logo
)
FIGURE_DPI = 150  # PNG resolution; figures are drawn at their printed size in inches
NORMAL_ENTROPY_2D = math.log(2 * math.pi) + 1.0  # E[-log N(z; 0, I)] in 2D, nats


@dataclass(frozen=True)
class Preset:
    """Sizes of one report run.

    Attributes:
        name: the preset's name.
        n_points: training points per model (seed: 250,000).
        epochs: training epochs (seed: 20).
        holdout_points: validation and test points each (10,000).
        n_show: points per point-cloud figure (seed: 1000).
        n_quality: samples for W2 and the ring metrics of the summary.
        nll_steps: RK4 steps of the flow-matching likelihood.
        dt: Euler step of the flow-matching sampler (seed: 1/1000).
        cfm_samples: conditional samples of CFM Q3 (seed: at least 3000).
        bonus_steps: gradient steps of the Bonus optimisation.
        bonus_dt: Euler step of the sampler the Bonus optimisation differentiates through.
        bonus_pool: samples drawn by the Bonus's best-of-n baseline.
        background: data points drawn as grey context behind trajectories.
        entropy_points: Monte Carlo points for the area of the rings' bands.
    """

    name: str
    n_points: int = 250_000
    epochs: int = 20
    holdout_points: int = 10_000
    n_show: int = 1000
    n_quality: int = 2000
    nll_steps: int = 100
    dt: float = 1e-3
    cfm_samples: int = 3000
    bonus_steps: int = 300
    bonus_dt: float = 1e-2
    bonus_pool: int = 100_000
    background: int = 4000
    entropy_points: int = 4_000_000


PRESETS: dict[str, Preset] = {
    "full": Preset("full"),
    "quick": Preset("quick", epochs=7),
    "smoke": Preset(
        "smoke",
        n_points=3000,
        epochs=2,
        holdout_points=2000,
        n_show=400,
        n_quality=300,
        nll_steps=8,
        dt=1e-2,
        cfm_samples=3000,
        bonus_steps=20,
        bonus_pool=2000,
        background=1500,
        entropy_points=200_000,
    ),
}


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


# -- number formatting (the text's numbers) ---------------------------------------------


def num(x: float | None, digits: int = 3) -> str:
    """A number with a fixed number of decimals and a true minus sign."""
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "n/a"
    if math.isinf(x):
        return "∞" if x > 0 else "−∞"
    return f"{x:.{digits}f}".replace("-", "−")


def sci(x: float | None, digits: int = 2) -> str:
    """A number in scientific notation, ``1.2×10<sup>−7</sup>`` (markup for both outputs)."""
    if x is None or not math.isfinite(x):
        return num(x)
    if x == 0:
        return "0"
    exp = math.floor(math.log10(abs(x)))
    if -2 <= exp <= 3:
        return num(x, max(0, digits - 1 - exp))
    mant = x / 10**exp
    return f"{mant:.{digits - 1}f}×10<sup>{str(exp).replace('-', '−')}</sup>"


def pct(x: float, digits: int = 1) -> str:
    return f"{100 * x:.{digits}f}%"


# -- the document model, rendered to PDF and HTML ----------------------------------------


@dataclass
class Block:
    """One element of the report: a heading, paragraph, figure or table.

    Text uses a small markup understood by both outputs: ``<b>``, ``<i>``, ``<sub>``,
    ``<sup>`` and the entities ``&lt;``, ``&gt;``, ``&amp;``.
    """

    kind: str  # "h1", "h2", "p", "figure", "table"
    text: str = ""
    anchor: str = ""
    path: Path | None = None
    header: tuple[str, ...] = ()
    rows: tuple[tuple[str, ...], ...] = ()
    width: float = 1.0


class Document:
    """An ordered list of blocks with a title; :func:`write_pdf` and :func:`write_html`."""

    def __init__(self, title: str, subtitle: str):
        self.title = title
        self.subtitle = subtitle
        self.blocks: list[Block] = []

    def section(self, text: str) -> None:
        self.blocks.append(Block("h1", text))

    def question(self, anchor: str, text: str) -> None:
        self.blocks.append(Block("h2", text, anchor=anchor))

    def para(self, text: str) -> None:
        self.blocks.append(Block("p", text))

    def figure(self, path: Path, caption: str, width: float = 1.0) -> None:
        self.blocks.append(Block("figure", caption, path=Path(path), width=width))

    def table(self, header: Sequence[str], rows: Sequence[Sequence[str]], caption: str) -> None:
        self.blocks.append(
            Block("table", caption, header=tuple(header), rows=tuple(tuple(r) for r in rows))
        )

    def headings(self) -> list[str]:
        return [b.text for b in self.blocks if b.kind in ("h1", "h2")]


def _register_fonts() -> str:
    """Register matplotlib's DejaVu Sans with reportlab (Unicode: −, ≤, φ, subscripts)."""
    import matplotlib
    from reportlab.lib.fonts import addMapping
    from reportlab.pdfbase import pdfmetrics
    from reportlab.pdfbase.ttfonts import TTFont

    name = "DejaVuSans"
    if name in pdfmetrics.getRegisteredFontNames():
        return name
    ttf = Path(matplotlib.get_data_path()) / "fonts" / "ttf"
    faces = {
        (0, 0): "DejaVuSans.ttf",
        (1, 0): "DejaVuSans-Bold.ttf",
        (0, 1): "DejaVuSans-Oblique.ttf",
        (1, 1): "DejaVuSans-BoldOblique.ttf",
    }
    for (bold, italic), file in faces.items():
        face = (
            name
            + {(0, 0): "", (1, 0): "-Bold", (0, 1): "-Oblique", (1, 1): "-BoldOblique"}[
                (bold, italic)
            ]
        )
        pdfmetrics.registerFont(TTFont(face, str(ttf / file)))
        addMapping(name, bold, italic, face)
    return name


def _col_widths(block: Block, total: float) -> list[float]:
    """Column widths (points) proportional to each column's longest visible text."""
    weight = []
    for head, *cells in zip(block.header, *block.rows, strict=True):
        longest_word = max(len(w) for w in re.sub(r"<[^>]+>", "", head).split())
        longest_cell = max((len(re.sub(r"<[^>]+>", "", c)) for c in cells), default=0)
        weight.append(min(max(longest_word, longest_cell, 5), 34))
    return [total * w / sum(weight) for w in weight]


def write_pdf(doc: Document, path: Path) -> int:
    """Render ``doc`` to an A4 PDF at ``path`` (written atomically); returns the page count."""
    from reportlab.lib import colors
    from reportlab.lib.pagesizes import A4
    from reportlab.lib.styles import ParagraphStyle
    from reportlab.lib.units import cm, inch
    from reportlab.lib.utils import ImageReader
    from reportlab.platypus import (
        Image,
        KeepTogether,
        Paragraph,
        SimpleDocTemplate,
        Spacer,
        Table,
        TableStyle,
    )

    font = _register_fonts()
    body = ParagraphStyle("body", fontName=font, fontSize=8.6, leading=11.2, spaceAfter=4)
    small = ParagraphStyle("small", parent=body, fontSize=7.3, leading=8.8, spaceAfter=0)
    caption = ParagraphStyle(
        "caption", parent=body, fontSize=7.6, leading=9.4, textColor=colors.HexColor("#333333")
    )
    h1 = ParagraphStyle(
        "h1", parent=body, fontName=font + "-Bold", fontSize=13, leading=16, spaceBefore=6,
        spaceAfter=4, keepWithNext=1, textColor=colors.HexColor("#0b3d66"),
    )  # fmt: skip
    h2 = ParagraphStyle(
        "h2", parent=body, fontName=font + "-Bold", fontSize=10, leading=12.5, spaceBefore=5,
        spaceAfter=2.5, keepWithNext=1,
    )  # fmt: skip
    title = ParagraphStyle("title", parent=h1, fontSize=17, leading=21, spaceAfter=2)
    margin = 1.6 * cm
    buf = io.BytesIO()
    pdf = SimpleDocTemplate(
        buf,
        pagesize=A4,
        leftMargin=margin,
        rightMargin=margin,
        topMargin=1.3 * cm,
        bottomMargin=1.4 * cm,
        title=doc.title,
        author=f"flowscope {__version__}",
    )
    width = A4[0] - 2 * margin

    def footer(canvas, _doc) -> None:
        canvas.saveState()
        canvas.setFont(font, 7)
        canvas.setFillColor(colors.grey)
        canvas.drawString(margin, 0.8 * cm, doc.title)
        canvas.drawRightString(A4[0] - margin, 0.8 * cm, f"page {canvas.getPageNumber()}")
        canvas.restoreState()

    story: list[Any] = [Paragraph(doc.title, title), Paragraph(doc.subtitle, caption)]
    story.append(Spacer(1, 4))
    pending: list[Any] = []  # headings wait for the block after them: never orphaned

    def emit(*flowables: Any) -> None:
        story.append(KeepTogether([*pending, *flowables]))
        pending.clear()

    for b in doc.blocks:
        if b.kind in ("h1", "h2"):
            pending.append(Paragraph(b.text, h1 if b.kind == "h1" else h2))
        elif b.kind == "p":
            emit(Paragraph(b.text, body))
        elif b.kind == "figure":
            iw, ih = ImageReader(str(b.path)).getSize()
            w = min(width, b.width * iw / FIGURE_DPI * inch)
            img = Image(str(b.path), width=w, height=w * ih / iw)
            emit(img, Paragraph(b.text, caption), Spacer(1, 3))
        elif b.kind == "table":
            head = [Paragraph(f"<b>{h}</b>", small) for h in b.header]
            rows = [[Paragraph(c, small) for c in r] for r in b.rows]
            t = Table([head, *rows], colWidths=_col_widths(b, width), repeatRows=1, hAlign="LEFT")
            t.setStyle(
                TableStyle(
                    [
                        ("BACKGROUND", (0, 0), (-1, 0), colors.HexColor("#e4ecf4")),
                        ("LINEBELOW", (0, 0), (-1, 0), 0.6, colors.HexColor("#0b3d66")),
                        ("LINEBELOW", (0, -1), (-1, -1), 0.4, colors.grey),
                        ("VALIGN", (0, 0), (-1, -1), "TOP"),
                        ("TOPPADDING", (0, 0), (-1, -1), 1.5),
                        ("BOTTOMPADDING", (0, 0), (-1, -1), 1.5),
                        ("LEFTPADDING", (0, 0), (-1, -1), 3),
                        ("RIGHTPADDING", (0, 0), (-1, -1), 3),
                    ]
                    + [
                        ("BACKGROUND", (0, i), (-1, i), colors.HexColor("#f6f8fa"))
                        for i in range(2, len(rows) + 1, 2)
                    ]
                )
            )
            emit(t, Paragraph(b.text, caption), Spacer(1, 3))
        else:
            raise ValueError(f"unknown block kind {b.kind!r}")
    if pending:
        emit()
    pdf.build(story, onFirstPage=footer, onLaterPages=footer)
    atomic_write(path, buf.getvalue())
    return int(pdf.page)


_HTML_STYLE = """
body { font-family: "DejaVu Sans", Helvetica, Arial, sans-serif; max-width: 52em;
       margin: 2em auto; padding: 0 1em; line-height: 1.45; color: #111; font-size: 15px; }
h1 { color: #0b3d66; font-size: 1.7em; margin-bottom: 0.2em; }
h2 { color: #0b3d66; border-bottom: 1px solid #c8d6e4; margin-top: 1.8em; }
h3 { margin-top: 1.4em; }
figure { margin: 1em 0; }
figure img { max-width: 100%; height: auto; display: block; }
figcaption, caption { font-size: 0.88em; color: #333; text-align: left; }
table { border-collapse: collapse; font-size: 0.85em; margin: 0.6em 0; }
caption { caption-side: bottom; padding-top: 0.3em; }
th { background: #e4ecf4; border-bottom: 2px solid #0b3d66; text-align: left; }
th, td { padding: 0.15em 0.5em; vertical-align: top; }
tr:nth-child(even) td { background: #f6f8fa; }
nav ul { columns: 2; font-size: 0.9em; }
.sub { color: #444; font-size: 0.9em; }
"""


def write_html(doc: Document, path: Path) -> None:
    """Render ``doc`` to one self-contained HTML file (figures inlined as base64 PNG)."""
    out = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{html.escape(doc.title)}</title>",
        f"<style>{_HTML_STYLE}</style></head><body>",
        f"<h1>{html.escape(doc.title)}</h1>",
        f'<p class="sub">{doc.subtitle}</p>',
        "<nav><ul>",
    ]
    for b in doc.blocks:
        if b.kind == "h2":
            out.append(f'<li><a href="#{b.anchor}">{b.text}</a></li>')
    out.append("</ul></nav>")
    for b in doc.blocks:
        if b.kind == "h1":
            out.append(f"<h2>{b.text}</h2>")
        elif b.kind == "h2":
            out.append(f'<h3 id="{b.anchor}">{b.text}</h3>')
        elif b.kind == "p":
            out.append(f"<p>{b.text}</p>")
        elif b.kind == "figure":
            raw = Path(b.path).read_bytes()
            with PILImage.open(io.BytesIO(raw)) as im:
                px = round(im.width / FIGURE_DPI * 96 * b.width)  # CSS pixels: 96 per inch
            alt = html.escape(Path(b.path).stem.replace("_", " "))
            out.append(
                f'<figure><img alt="{alt}" style="width:{px}px" '
                f'src="data:image/png;base64,{base64.b64encode(raw).decode("ascii")}">'
                f"<figcaption>{b.text}</figcaption></figure>"
            )
        elif b.kind == "table":
            head = "".join(f"<th>{h}</th>" for h in b.header)
            rows = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in r) + "</tr>" for r in b.rows)
            out.append(
                f"<table><caption>{b.text}</caption><thead><tr>{head}</tr></thead>"
                f"<tbody>{rows}</tbody></table>"
            )
    out.append("</body></html>\n")
    atomic_write(path, "\n".join(out))


# -- helpers of the experiments ------------------------------------------------------------


def _np(x: Any) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().double().numpy()
    return np.asarray(x, dtype=np.float64)


def _jsonable(x: Any) -> Any:
    """Plain JSON values; inf and NaN become None."""
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [_jsonable(v) for v in x]
    if isinstance(x, torch.Tensor | np.ndarray):
        return _jsonable(_np(x).tolist())
    if isinstance(x, np.generic):
        x = x.item()
    if isinstance(x, float):
        return x if math.isfinite(x) else None
    if isinstance(x, Path):
        return str(x)
    return x


def _step_lengths(path: np.ndarray) -> np.ndarray:
    """(T, N, 2) -> (T - 1, N) length of each step, data units."""
    return np.linalg.norm(np.diff(path, axis=0), axis=-1)


def _straightness(path: np.ndarray) -> float:
    """Mean over points of |end - start| / path length (1 for a straight path)."""
    length = _step_lengths(path).sum(axis=0)
    chord = np.linalg.norm(path[-1] - path[0], axis=-1)
    ok = length > 0
    return float((chord[ok] / length[ok]).mean()) if ok.any() else 1.0


def _fifth_shares(path: np.ndarray) -> list[float]:
    """Share of the total movement (sum of step lengths, all points) in each fifth of the
    steps; the number of steps must be a multiple of 5."""
    steps = _step_lengths(path).sum(axis=1)
    if len(steps) % 5:
        raise ValueError(f"{len(steps)} steps do not split into fifths")
    parts = steps.reshape(5, -1).sum(axis=1)
    return (parts / parts.sum()).tolist()


def _fifth_turning(path: np.ndarray) -> list[float]:
    """Share of the total change of velocity (all points) in each fifth of the time.

    ``path`` (T, N, 2) holds states at equally spaced times from 0 to 1 with T - 1 a
    multiple of 5; the velocity of each step is its displacement over its duration, and a
    change between consecutive steps is counted in the fifth of the time where it happens.
    """
    steps = len(path) - 1
    if steps % 5:
        raise ValueError(f"{steps} steps do not split into fifths")
    vel = np.diff(path, axis=0) * steps  # (T - 1, N, 2)
    change = np.linalg.norm(np.diff(vel, axis=0), axis=-1).sum(axis=1)  # (T - 2,)
    fifth = np.minimum(np.arange(1, steps) * 5 // steps, 4)  # the time of change k is (k+1)/steps
    parts = np.bincount(fifth, weights=change, minlength=5)
    return (parts / max(parts.sum(), 1e-300)).tolist()


def _successive_cosine(path: np.ndarray) -> float:
    """Mean cosine between the directions of successive steps of paths (T, N, 2)."""
    d = np.diff(path, axis=0)  # (T - 1, N, 2)
    a, b = d[:-1], d[1:]
    na, nb = np.linalg.norm(a, axis=-1), np.linalg.norm(b, axis=-1)
    ok = (na > 0) & (nb > 0)
    cos = (a * b).sum(axis=-1)[ok] / (na[ok] * nb[ok])
    return float(cos.mean()) if cos.size else 1.0


def _axis_aligned_share(path: np.ndarray, tol: float = 1e-6) -> float:
    """Share of the steps of all points that leave one coordinate unchanged (to ``tol``)."""
    d = np.abs(np.diff(path, axis=0))  # (T - 1, N, 2)
    return float((d.min(axis=-1) <= tol * (1 + np.abs(path[1:]).max(axis=-1))).mean())


def _where(point: Sequence[float]) -> tuple[bool, int, float]:
    """(inside a band, nearest ring id, distance to that ring's centre line) of a point."""
    d = ring_distance(torch.tensor([point], dtype=torch.float64))[0]
    k = int(d.argmin())
    return bool(d[k] <= HALF_BAND), k, float(d[k])


def _band_area(n: int, seed: int) -> float:
    """Area of the union of the rings' bands, in squared data units, by Monte Carlo.

    The Olympic data is uniform on that union (clipped by the generator's box), so its
    differential entropy is the log of this area.
    """
    x0, x1, y0, y1 = OLYMPIC_BOX
    gen = torch.Generator().manual_seed(seed)
    inside = 0
    for start in range(0, n, 1_000_000):
        m = min(1_000_000, n - start)
        u = torch.rand(m, 2, generator=gen, dtype=torch.float64)
        pts = torch.stack([x0 + (x1 - x0) * u[:, 0], y0 + (y1 - y0) * u[:, 1]], dim=1)
        inside += int((ring_distance(pts).min(dim=1).values <= HALF_BAND).sum())
    return inside / n * (x1 - x0) * (y1 - y0)


# -- the study --------------------------------------------------------------------------


class Study:
    """State shared by the stages of one report run (models, data, metrics, document)."""

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
            "Every number below was measured in this run and is stored in metrics.json.",
        )

    # -- plumbing ----------------------------------------------------------------------
    def gen(self, offset: int) -> torch.Generator:
        """A generator seeded from the report's seed and a per-experiment offset."""
        return torch.Generator().manual_seed(1000 * self.seed + offset)

    def fig(self, name: str, figure: Any) -> Path:
        path = plots.save(figure, self.fig_dir / f"{name}.png", dpi=FIGURE_DPI)
        return path

    def say(self, text: str) -> None:
        print(text, file=self.log, flush=True)

    # -- training -------------------------------------------------------------------------
    def requested(self, name: str) -> tuple[dict[str, Any], dict[str, Any], TrainConfig]:
        p = self.preset
        config = TrainConfig(epochs=p.epochs, seed=self.seed)
        kind, args, conditional = MODEL_PRESETS[name]
        data = {
            "source": "olympic",
            "n_points": p.n_points,
            "holdout_points": p.holdout_points,
            "seed": self.seed,
            "conditional": conditional,
        }
        model_args = {"features": 2, **args}
        if conditional:
            model_args["num_classes"] = len(RING_NAMES)
        return data, build_model(kind, model_args).config(), config

    def reusable(self, name: str, run_dir: Path) -> bool:
        """Whether ``run_dir`` holds a finished run with exactly the requested config."""
        if not (run_dir / "model.safetensors").is_file():
            return False
        try:
            info = read_info(run_dir)
        except RunError:
            return False
        data, model_cfg, config = self.requested(name)
        saved_data = {k: v for k, v in info.data.items() if k != "class_names"}
        history = read_history(run_dir)
        return (
            info.kind == MODEL_PRESETS[name][0]
            and saved_data == data
            and info.model == model_cfg
            and info.train == asdict(config)
            and len(history.epochs) == config.epochs
            and "train_seconds" in info.extra
        )

    def train(self, name: str) -> None:
        run_dir = self.out / "models" / name
        run_dir.parent.mkdir(parents=True, exist_ok=True)
        if not self.retrain and self.reusable(name, run_dir):
            model, info = load_run(run_dir)
            history = read_history(run_dir)
            self.trained[name] = False
            self.say(f"    reusing {run_dir} (same configuration)")
        else:
            data, _, config = self.requested(name)
            model, info, history = train_run(
                name,
                run_dir,
                data="olympic",
                n_points=data["n_points"],
                holdout_points=data["holdout_points"],
                config=config,
                overwrite=True,
                progress=None,
            )
            self.trained[name] = True
        self.models[name], self.infos[name], self.histories[name] = model, info, history
        steps = len(history.batch_loss)
        secs = float(info.extra.get("train_seconds", history.seconds))
        self.m.setdefault("training", {})[name] = {
            "seconds": secs,
            "epochs": len(history.epochs),
            "steps": steps,
            "ms_per_step": 1000 * secs / max(1, steps),
            "parameters": sum(p.numel() for p in model.parameters()),
            "final_val_loss": history.epochs[-1].get("val_loss"),
            "trained_in_this_run": self.trained[name],
        }

    # -- shared data ------------------------------------------------------------------------
    def data(self) -> None:
        """Held-out points, a background subsample, and the data's entropy floor."""
        p = self.preset
        nf, info = self.models["nf"], self.infos["nf"]
        self.test = run_data(info, "test").x
        self.val_n = min(len(run_data(info, "val").x), TrainConfig().val_size)
        self.background = self.test[: p.background]
        area = _band_area(p.entropy_points, seed=12_345)
        scale = nf.standardization.scale.double()
        h_data = math.log(area)
        h_std = h_data - float(scale.log().sum())
        self.h_std = h_std
        self.m["data"] = {
            "band_area": area,
            "entropy_data_units": h_data,
            "entropy_standardized": h_std,
            "std": scale.tolist(),
            "entropy_monte_carlo_points": p.entropy_points,
            "test_points": len(self.test),
        }
        self.probes = torch.tensor([xy for _, xy in PROBE_POINTS])
        self.z_show = torch.randn(p.n_show, 2, generator=self.gen(3))

    # -- overview ---------------------------------------------------------------------------
    def overview(self) -> None:
        p, doc = self.preset, self.doc
        ev = {}
        for name in MODELS:
            ev[name] = evaluate_run(
                self.out / "models" / name,
                n=p.n_quality,
                seed=self.seed,
                dt=p.dt,
                nll_kwargs={"steps": p.nll_steps},
            )
        self.m["evaluation"] = ev
        tr = self.m["training"]
        dm = self.m["data"]
        doc.section("Overview")
        doc.para(
            "flowscope trained the three models of the study on points drawn uniformly from "
            "the five bands of the Olympic rings (radius 1, width 0.25): a <b>normalizing flow"
            "</b> (NF) of 15 affine couplings with permutations between them, trained by "
            "maximum likelihood (Eq. 9), an unconditional <b>flow-matching</b> model (FM) and "
            "a class-conditional one (CFM), whose velocity networks (5 linear layers, width "
            "64) were fitted to the linear-path objective (Eq. 16). All three used Adam at "
            "10<sup>−3</sup> with cosine decay and batches of 128 points, on "
            f"{p.n_points:,} points for {p.epochs} epochs. Flow-matching samples integrate "
            f"Eq. 17 with Euler steps of Δt = {p.dt:g} unless a section says otherwise. "
            "Likelihoods are in nats per point."
        )
        rows = []
        for name in MODELS:
            t = tr[name]
            rows.append(
                (
                    name.upper(),
                    f"{t['parameters']:,}",
                    f"{t['epochs']}",
                    f"{t['steps']:,}",
                    num(t["seconds"], 1),
                    num(t["ms_per_step"], 2),
                    num(t["final_val_loss"]),
                    "trained now" if t["trained_in_this_run"] else "reused (same config)",
                )
            )
        doc.table(
            (
                "model",
                "parameters",
                "epochs",
                "steps",
                "training time (s)",
                "ms / step",
                "last val. loss",
                "this run",
            ),
            rows,
            "Table 1. Training. The validation loss is Eq. 9 for the NF (nats per "
            "standardized point) and Eq. 16 for FM and CFM, on the held-out validation set.",
        )
        # evaluate_run reports an infinite NLL (a point of zero density) as None.
        nll = {k: ev[k]["nll_standardized"] for k in ("nf", "fm")}
        nll = {k: math.inf if v is None else v for k, v in nll.items()}
        gap = {k: nll[k] - dm["entropy_standardized"] for k in ("nf", "fm")}
        rows = [
            (
                MODEL_TITLES[k].capitalize() + f" ({k.upper()})",
                num(ev[k]["nll_standardized"]),
                num(gap[k]),
                num(ev[k]["nll_data"]),
                ev[k]["nll_method"],
            )
            for k in ("nf", "fm")
        ]
        rows.append(
            (
                "data entropy (floor)",
                num(dm["entropy_standardized"]),
                num(0.0),
                num(dm["entropy_data_units"]),
                f"log of the bands' area, {dm['band_area']:.3f} (Monte Carlo)",
            )
        )
        doc.table(
            ("model", "NLL, standardized", "above floor", "NLL, data units", "how"),
            rows,
            f"Table 2. Held-out negative log-likelihood on {ev['nf']['nll_points']:,} test "
            "points never used in training (nats per point; lower is better). Standardized "
            "units are those of the training losses; data units add "
            f"log σ<sub>1</sub> + log σ<sub>2</sub> = {num(sum(math.log(v) for v in dm['std']))}"
            f", with σ = ({num(dm['std'][0])}, {num(dm['std'][1])}) the data's standard "
            "deviations.",
        )
        better = "NF" if gap["nf"] < gap["fm"] else "FM"
        other = "FM" if better == "NF" else "NF"
        doc.para(
            "Because the data are uniform on the bands, no density can score below their "
            f"differential entropy, log(area) = {num(dm['entropy_data_units'])} nats in data "
            f"units or {num(dm['entropy_standardized'])} nats per standardized point. The "
            f"{better} comes closer to this floor ({num(gap[better.lower()])} nats above it) "
            f"than the {other} ({num(gap[other.lower()])} nats above it)."
        )
        rows = []
        for k in MODELS:
            e = ev[k]
            rows.append(
                (
                    k.upper(),
                    num(e["w2"]),
                    num(e["w2_noise_floor"]),
                    pct(e["ring_precision"]),
                    num(e["ring_mean_offset"]),
                    pct(e["ring_coverage"]),
                    pct(e["class_accuracy"]) if e.get("class_accuracy") is not None else "—",
                    sci(e["round_trip_mean"]),
                )
            )
        doc.table(
            (
                "model",
                "W2",
                "W2 noise floor",
                "in a band",
                "offset of the rest",
                "coverage",
                "class accuracy",
                "round-trip error",
            ),
            rows,
            f"Table 3. Sample quality, {ev['nf']['w2_points']:,} samples per model (CFM: "
            "balanced classes). W2: exact 2-Wasserstein distance to as many test points, in "
            "data units; its noise floor is W2 between two draws of the data itself. In a "
            "band: share of samples inside a ring's band; offset: mean distance of the others "
            "to the nearest band (data units); coverage: share of the 5 × 36 (ring, angle) "
            "cells that received a sample. Round trip: mean distance between a test point "
            f"and its image after inverse then forward (FM, CFM: Euler, Δt = {p.dt:g}).",
        )

    # -- normalizing flow ---------------------------------------------------------------------
    def nf_q1(self) -> None:
        doc, h = self.doc, self.histories["nf"].epochs
        doc.section("Normalizing flow")
        doc.question("nf-q1", "NF Q1 · Validation loss and its two parts")
        first, last = h[0], h[-1]
        d_pz = -(last["val_log_pz"] - first["val_log_pz"])
        d_det = -(last["val_log_det"] - first["val_log_det"])
        m = {
            "epochs": len(h),
            "val_loss": [r["val_loss"] for r in h],
            "minus_log_pz": [-r["val_log_pz"] for r in h],
            "minus_log_det": [-r["val_log_det"] for r in h],
            "change_minus_log_pz": d_pz,
            "change_minus_log_det": d_det,
            "normal_entropy": NORMAL_ENTROPY_2D,
            "best_log_det_part": self.h_std - NORMAL_ENTROPY_2D,
            "validation_points": self.val_n,
        }
        self.m["nf_q1"] = m
        path = self.fig("nf_q1_loss", plots.loss_curves(h, title="NF validation loss per epoch"))
        doc.figure(
            path,
            "NF Q1. Validation loss (Eq. 9) after each epoch and its two parts, each with the "
            "sign it has in the loss, so that the two coloured lines add up to the black one.",
        )
        mover = "log-det" if abs(d_det) > abs(d_pz) else "log p<sub>z</sub>"
        doc.para(
            f"On {self.val_n:,} validation points the loss went from {num(first['val_loss'])} "
            f"after epoch 1 to {num(last['val_loss'])} after epoch {len(h)} (nats per "
            "standardized point). In the last epoch the −E[log p<sub>z</sub>(φ<sup>−1</sup>(x))] "
            f"part was {num(-last['val_log_pz'])} and the −E[log |det ∂φ<sup>−1</sup>/∂x|] part "
            f"{num(-last['val_log_det'])}. If φ<sup>−1</sup> mapped the data exactly onto "
            "N(0, I), the first part would equal the entropy of a 2D standard normal, "
            f"log 2π + 1 = {num(NORMAL_ENTROPY_2D)}; as the total cannot go below the data's "
            f"entropy ({num(self.h_std)}), the volume part can at best reach "
            f"{num(self.h_std - NORMAL_ENTROPY_2D)}: the inverse flow must stretch the thin "
            "bands to fill the Gaussian, and stretching (a positive log-det) is rewarded. "
            f"Between the first and last epoch the log p<sub>z</sub> part changed by "
            f"{num(d_pz)} and the log-det part by {num(d_det)}, so the {mover} term carried "
            "most of the change."
        )

    def nf_q2(self) -> None:
        doc, p, nf = self.doc, self.preset, self.models["nf"]
        doc.question("nf-q2", f"NF Q2 · Three samplings of {p.n_show:,} points")
        panels, rows = [], []
        ref = self.test[: p.n_show]
        floor = metrics.w2_noise_floor(_olympic_draw, n=len(ref), seed=self.seed + 50)
        for i in range(3):
            seed = 1000 * self.seed + 20 + i
            x = nf.sample(p.n_show, generator=torch.Generator().manual_seed(seed))
            q = metrics.sample_quality(x, ref)
            rows.append({"generator_seed": seed, **q})
            panels.append((x, f"seed {seed}: {pct(q['ring_precision'], 0)} in a band"))
        self.m["nf_q2"] = {"samplings": rows, "w2_noise_floor": floor, "n": p.n_show}
        path = self.fig(
            "nf_q2_samples",
            plots.point_panels(
                panels,
                ncols=3,
                rings=True,
                suptitle=f"NF: {p.n_show} samples with three generator seeds",
            ),
        )
        doc.figure(
            path,
            "NF Q2. Samples of the normalizing flow for three seeds of the latent noise; "
            "dotted: the rings' centre lines, for reference.",
        )
        prec = [r["ring_precision"] for r in rows]
        doc.para(
            f"Share of the {p.n_show} points inside a ring's band: "
            + ", ".join(pct(v) for v in prec)
            + "; mean distance of the others to the nearest band: "
            + ", ".join(num(r["ring_mean_offset"]) for r in rows)
            + " data units; W2 to as many held-out points: "
            + ", ".join(num(r["w2"]) for r in rows)
            + f" (two draws of the data itself give {num(floor)}). The spread between seeds, "
            f"{pct(max(prec) - min(prec))} in the share, is the sampling noise of these "
            "numbers at this size. A flow is a continuous bijection of the plane, so its "
            "density is positive everywhere, between and inside the rings too: it can make "
            "that density small, never zero."
        )

    def nf_q3(self) -> None:
        doc, nf = self.doc, self.models["nf"]
        doc.question("nf-q3", "NF Q3 · The distribution after selected layers")
        path = _np(nf.trajectory(self.z_show))  # (L + 1, N, 2)
        L = path.shape[0] - 1
        layers = sorted({int(round(v)) for v in np.linspace(0, L, 6)})
        prec = {k: metrics.ring_precision(path[k]).precision for k in layers}
        self.nf_path = path
        m = {
            "layers": layers,
            "ring_precision": {str(k): v for k, v in prec.items()},
            "axis_aligned_share": _axis_aligned_share(path),
            "fifth_shares": _fifth_shares(path) if L % 5 == 0 else None,
            "straightness": _straightness(path),
            "n": path.shape[1],
        }
        self.m["nf_q3"] = m
        panels = [
            (path[k], "input z" if k == 0 else f"after coupling {k}" + (" (output)" * (k == L)))
            for k in layers
        ]
        fig = plots.point_panels(
            panels, ncols=3, suptitle=f"NF: {path.shape[1]} points through the {L} couplings"
        )
        doc.figure(
            self.fig("nf_q3_layers", fig),
            "NF Q3. The same latent points after 0, 3, …, 15 couplings. Every state is shown "
            "in data units (passed through the model's fixed destandardization) and in the "
            "output's coordinate order, so all panels share axes.",
        )
        seq = ", ".join(f"{pct(prec[k], 0)} (layer {k})" for k in layers)
        doc.para(
            f"Share of the points inside a ring's band: {seq}. Each coupling rescales and "
            "shifts one coordinate given the other (Eq. 3) and the permutation swaps their "
            "roles, so a layer moves every point parallel to one axis: "
            f"{pct(m['axis_aligned_share'])} of the {L * path.shape[1]:,} single-layer moves "
            "leave one coordinate unchanged. The layers are not ordered in time: each is a "
            "separate function, and nothing asks the intermediate clouds to resemble anything."
        )

    def nf_q4(self) -> None:
        doc = self.doc
        doc.question("nf-q4", "NF Q4 · Trajectories of 10 points through the layers")
        path = self.nf_path[:, :10]
        L = path.shape[0] - 1
        times = np.linspace(0, 1, L + 1)
        steps = _step_lengths(self.nf_path)  # (L, N)
        share = steps.sum(axis=1) / steps.sum()
        m = {
            "straightness_10": _straightness(path),
            "straightness_all": self.m["nf_q3"]["straightness"],
            "layer_shares": share.tolist(),
            "largest_layer": int(share.argmax()) + 1,
            "axis_aligned_share_10": _axis_aligned_share(path),
        }
        self.m["nf_q4"] = m
        fig = plots.trajectory_panels(
            [{"path": path, "times": times, "title": "NF: 10 samples, layer by layer"}],
            time_label="t = k / 15 after k couplings",
            background=self.background,
            panel_height=2.6,
        )
        doc.figure(
            self.fig("nf_q4_trajectories", fig),
            "NF Q4. Ten latent points (hollow circles) and their states after each coupling, "
            "coloured by t = k/15; crosses: the samples. Grey: held-out data.",
        )
        doc.para(
            "The paths are staircases of axis-parallel jumps of very different lengths: the "
            f"layers' shares of the total movement range from {pct(share.min())} to "
            f"{pct(share.max())} (coupling {m['largest_layer']} moves the points most). The "
            "straightness of a path, its start-to-end distance over its length (1 for a "
            f"straight line), averages {num(m['straightness_10'], 2)} for these ten points and "
            f"{num(m['straightness_all'], 2)} over all {self.nf_path.shape[1]} points of Q3."
        )

    def nf_q5(self) -> None:
        doc, nf, fm, p = self.doc, self.models["nf"], self.models["fm"], self.preset
        doc.question("nf-q5", "NF Q5 · Inverse trajectories and log p(x) of 5 points")
        x = self.probes
        path = _np(nf.trajectory(x, inverse=True))
        with torch.no_grad():
            z, log_det = nf.inverse(x)
        log_pz = -0.5 * (z**2).sum(dim=1) - math.log(2 * math.pi)
        lp = nf.log_prob(x)
        lp_fm = fm.log_prob(x, steps=p.nll_steps)
        rows, info = [], []
        for i, (name, xy) in enumerate(PROBE_POINTS):
            inside, ring, dist = _where(xy)
            info.append(
                {
                    "name": name,
                    "x": list(xy),
                    "inside": inside,
                    "nearest_ring": RING_NAMES[ring],
                    "distance_to_centre_line": dist,
                    "log_p_nf": float(lp[i]),
                    "log_pz": float(log_pz[i]),
                    "log_det": float(log_det[i]),
                    "z_norm": float(z[i].norm()),
                    "log_p_fm": float(lp_fm[i]),
                }
            )
            where = (
                f"on the {RING_NAMES[ring]} ring"
                if inside
                else f"{num(dist - HALF_BAND, 2)} off the {RING_NAMES[ring]} band"
            )
            rows.append(
                (
                    name,
                    f"({num(xy[0], 2)}, {num(xy[1], 2)})",
                    where,
                    num(float(lp[i]), 2),
                    num(float(log_pz[i]), 2),
                    num(float(log_det[i]), 2),
                    num(float(z[i].norm()), 2),
                    num(float(lp_fm[i]), 2),
                )
            )
        area = self.m["data"]["band_area"]
        ins = [r for r in info if r["inside"]]
        outs = [r for r in info if not r["inside"]]
        mean = lambda rs, k: float(np.mean([r[k] for r in rs]))  # noqa: E731
        gap = mean(ins, "log_p_nf") - mean(outs, "log_p_nf")
        gap_pz = mean(ins, "log_pz") - mean(outs, "log_pz")
        gap_det = mean(ins, "log_det") - mean(outs, "log_det")
        separated = min(r["log_p_nf"] for r in ins) > max(r["log_p_nf"] for r in outs)
        z_in, z_out = mean(ins, "z_norm"), mean(outs, "z_norm")
        self.m["nf_q5"] = {
            "points": info,
            "uniform_log_density": -math.log(area),
            "mean_gap": gap,
            "gap_from_log_pz": gap_pz,
            "gap_from_log_det": gap_det,
            "inside_all_more_likely": separated,
            "mean_z_norm_inside": z_in,
            "mean_z_norm_outside": z_out,
        }
        self.nf_probe_z = z
        fig = plots.trajectory_panels(
            [
                {
                    "path": path,
                    "times": np.linspace(1, 0, path.shape[0]),
                    "title": "NF: inverse process of 5 points",
                    "annotate": [n for n, _ in PROBE_POINTS],
                }
            ],
            time_label="t (1: data, 0: latent), k / 15",
            background=self.background,
            panel_height=2.6,
        )
        doc.figure(
            self.fig("nf_q5_inverse", fig),
            "NF Q5. φ<sup>−1</sup> applied layer by layer to A, B, C (on the rings) and D, E "
            "(off them), from the data (hollow circle, t = 1) to the latent (cross, t = 0), "
            "shown in data units.",
        )
        doc.table(
            (
                "point",
                "x (data units)",
                "where",
                "log p(x)",
                "log p<sub>z</sub>(z)",
                "log |det|",
                "|z|",
                "FM log p(x)",
            ),  # fmt: skip
            rows,
            "NF Q5. log p(x) = log p<sub>z</sub>(z) + log |det ∂φ<sup>−1</sup>/∂x| in nats, "
            "data units (z in standardized units); last column: the FM model's exact "
            f"log-density of the same point (RK4, {p.nll_steps} steps), for comparison.",
        )
        verdict = (
            "All three points on the rings are more likely than both points off them"
            if separated
            else "The ordering is not clean in this run: not every point on the rings beats "
            "every point off them"
        )
        main = "the latent density" if abs(gap_pz) > abs(gap_det) else "the volume change"
        far = "farther from" if gap_pz > 0 else "closer to"
        doc.para(
            f"{verdict}; on average the inside points have log p(x) higher by {num(gap, 2)} "
            f"nats, a density ratio of about e<sup>{num(gap, 1)}</sup>. A perfect model would "
            f"give log p = −log(area) = {num(-math.log(area), 2)} on every point of the bands "
            "and −∞ elsewhere. The reason is the objective: maximum likelihood raises the "
            "density where the training points are, and since the density integrates to 1, "
            "mass given to the bands is taken from everywhere else. In the flow this happens "
            f"through both terms of the change of variables: of the gap, {num(gap_pz, 2)} "
            f"nats come from log p<sub>z</sub> (the outside points land {far} the origin of "
            f"the latent space: mean |z| {num(z_out, 2)} against {num(z_in, 2)}) and "
            f"{num(gap_det, 2)} from the log-det (how much φ<sup>−1</sup> stretches a "
            f"neighbourhood of the point), so {main} dominates here."
        )

    # -- flow matching -------------------------------------------------------------------------
    def fm_q1(self) -> None:
        doc, h = self.doc, self.histories["fm"]
        doc.section("Flow matching")
        doc.question("fm-q1", "FM Q1 · Loss over the training batches")
        losses = np.asarray(h.batch_loss)
        spe = len(losses) // max(1, len(h.epochs))
        k = min(100, len(losses))
        last = losses[-spe:]
        m = {
            "steps": len(losses),
            "steps_per_epoch": spe,
            "first_100_mean": float(losses[:k].mean()),
            "last_epoch_mean": float(last.mean()),
            "last_epoch_std": float(last.std()),
            "val_loss_first": h.epochs[0]["val_loss"],
            "val_loss_last": h.epochs[-1]["val_loss"],
        }
        self.m["fm_q1"] = m
        fig = plots.batch_loss(h.batch_loss, spe, title="FM training loss per batch")
        doc.figure(
            self.fig("fm_q1_batch_loss", fig),
            "FM Q1. The Eq. 16 loss of every training batch (standardized units) and its "
            "running mean.",
        )
        doc.para(
            f"Over {len(losses):,} batches the loss fell from {num(m['first_100_mean'])} (mean "
            f"of the first {k}) to {num(m['last_epoch_mean'])} (mean of the last epoch), and "
            f"the validation loss from {num(m['val_loss_first'])} to {num(m['val_loss_last'])}. "
            f"It stays noisy (standard deviation {num(m['last_epoch_std'])} within the last "
            "epoch) and far from 0, because every batch draws new times and noise, and the "
            "target x<sub>1</sub> − x<sub>0</sub> is random given (y<sub>t</sub>, t): the best "
            "field predicts its mean, and the loss keeps its variance."
        )

    def fm_q2(self) -> None:
        doc, p, fm = self.doc, self.preset, self.models["fm"]
        doc.question("fm-q2", "FM Q2 · The distribution at t = 0, 0.2, …, 1")
        times = np.linspace(0, 1, 101)
        path = _np(fm.trajectory(self.z_show, dt=p.dt, times=times.tolist()))
        self.fm_path, self.fm_times = path, times
        idx = [int(round(t * 100)) for t in FM_TIMES]
        prec = [metrics.ring_precision(path[i]).precision for i in idx]
        # The path the model was fitted to: y_t = t x1 + (1 - t) x0, drawn afresh.
        ref = self.test[: path.shape[1]]
        noise = fm.standardization.inverse(
            torch.randn(path.shape[1], 2, generator=self.gen(9), dtype=ref.dtype)
        )
        w2_path = [metrics.wasserstein2(path[i], t * ref + (1 - t) * noise) for i, t in
                   zip(idx, FM_TIMES, strict=True)]  # fmt: skip
        floor = metrics.w2_noise_floor(_olympic_draw, n=path.shape[1], seed=self.seed + 70)
        fm_share = _fifth_shares(path)
        nf_share = self.m["nf_q3"]["fifth_shares"]
        turn = _fifth_turning(path)
        m = {
            "times": list(FM_TIMES),
            "ring_precision": prec,
            "w2_to_interpolation": w2_path,
            "w2_noise_floor": floor,
            "fifth_shares": fm_share,
            "nf_fifth_shares": nf_share,
            "fifth_velocity_change": turn,
            "straightness": _straightness(path),
            "axis_aligned_share": _axis_aligned_share(path),
        }
        self.m["fm_q2"] = m
        panels = [(path[i], f"t = {t:g}") for i, t in zip(idx, FM_TIMES, strict=True)]
        fig = plots.point_panels(
            panels, ncols=3, suptitle=f"FM: {path.shape[1]} points along the flow"
        )
        doc.figure(
            self.fig("fm_q2_times", fig),
            "FM Q2. The same latent points as NF Q3, integrated with Euler steps of "
            f"Δt = {p.dt:g} and shown at six times (data units).",
        )
        spread_fm = max(fm_share) - min(fm_share)
        text = (
            "The intermediate clouds of flow matching have a prescribed meaning: the model was "
            "fitted to the path y<sub>t</sub> = t x<sub>1</sub> + (1 − t) x<sub>0</sub>, so "
            "at time t the cloud should look like the data shrunk by t towards its mean and "
            "blurred by Gaussian noise of 1 − t times its spread. Measured: the W2 "
            "distance between the cloud and a fresh draw of that mixture is "
            + ", ".join(f"{num(w, 2)} (t = {t:g})" for w, t in zip(w2_path, FM_TIMES, strict=True))
            + f", against {num(floor, 2)} between two draws of the data at this size. Only "
            f"at t = 1 do the points reach the bands ({pct(prec[-1], 0)} inside one, "
            f"{pct(prec[0], 0)} of the noise at t = 0). "
        )
        if nf_share is not None:
            spread_nf = max(nf_share) - min(nf_share)
            even = "more evenly" if spread_fm < spread_nf else "less evenly"
            text += (
                "Measured as the share of all movement made in each fifth of the way, the FM "
                "flow moves "
                + ", ".join(pct(s, 0) for s in fm_share)
                + " and the NF (three couplings per fifth) "
                + ", ".join(pct(s, 0) for s in nf_share)
                + f"; flow matching spreads its transport {even} over time. "
            )
        text += (
            "The NF's intermediate clouds have no target at all: each coupling stretches and "
            "shifts the cloud along one axis, and nothing asks a layer's output to resemble "
            "the data, the noise or a mixture of the two; only the output is trained."
        )
        doc.para(text)

    def fm_q3(self) -> None:
        doc, p, fm = self.doc, self.preset, self.models["fm"]
        doc.question("fm-q3", "FM Q3 · Trajectories of 10 points")
        path = self.fm_path[:, :10]
        # Successive moves compared at the NF's resolution: 15 equal steps of the flow.
        steps = self.nf_path.shape[0] - 1
        fm_coarse = _np(
            fm.trajectory(self.z_show, dt=p.dt, times=np.linspace(0, 1, steps + 1).tolist())
        )
        m = {
            "straightness_10": _straightness(path),
            "straightness_all": self.m["fm_q2"]["straightness"],
            "nf_straightness_all": self.m["nf_q3"]["straightness"],
            "axis_aligned_share": self.m["fm_q2"]["axis_aligned_share"],
            "successive_cosine": _successive_cosine(fm_coarse),
            "nf_successive_cosine": _successive_cosine(self.nf_path),
        }
        self.m["fm_q3"] = m
        fig = plots.trajectory_panels(
            [{"path": path, "times": self.fm_times, "title": "FM: 10 samples", "markers": False}],
            time_label="t",
            background=self.background,
            panel_height=2.6,
        )
        doc.figure(
            self.fig("fm_q3_trajectories", fig),
            "FM Q3. The same ten latent points as NF Q4, integrated from t = 0 (hollow "
            "circles) to t = 1 (crosses), coloured by t.",
        )
        fm_more = m["successive_cosine"] > m["nf_successive_cosine"]
        straighter = "FM" if m["straightness_all"] > m["nf_straightness_all"] else "NF"
        doc.para(
            "The flow-matching paths are smooth curves"
            + (", close to straight lines" if m["straightness_all"] > 0.8 else "")
            + f"; {pct(m['axis_aligned_share'])} of their steps are parallel to an axis, "
            f"against {pct(self.m['nf_q3']['axis_aligned_share'])} of the NF's. Splitting "
            "both flows into 15 equal stages (the NF's layers, FM's t = k/15), the cosine "
            "between the directions of successive moves "
            f"averages {num(m['successive_cosine'], 2)} for FM and "
            f"{num(m['nf_successive_cosine'], 2)} for the NF (1: the point keeps its "
            "direction, 0: it turns at right angles), so the "
            + ("flow-matching" if fm_more else "normalizing")
            + " flow is the more consistent over time. The mean straightness, start-to-end "
            f"distance over path length, is {num(m['straightness_all'], 2)} for FM and "
            f"{num(m['nf_straightness_all'], 2)} for the NF ({straighter} straighter). "
            + (
                "FM paths are not straight lines, because only the conditional paths of "
                "training are (Eq. 15) and the learnt field averages them: at t = 0 the "
                "ideal field is E[x<sub>1</sub>] − y, which sends every point towards the "
                "data's mean, and only later does it turn each one towards a ring. "
                if m["straightness_all"] < 0.9
                else "FM paths are nearly straight, like the conditional paths of training "
                "(Eq. 15). "
            )
            + (
                "The reason for the difference is structural: FM integrates one velocity "
                "field that varies continuously in t, so successive steps can only turn "
                "gradually; the NF's 15 layers are unrelated functions, each free to move the "
                "points anywhere along its own axis."
                if fm_more
                else "In this run the FM field turns the points as sharply as the NF's layers "
                "do, although its velocity varies continuously in t."
            )
        )

    def fm_q4(self) -> None:
        doc, p, fm = self.doc, self.preset, self.models["fm"]
        doc.question("fm-q4", "FM Q4 · Time quantization: Δt = 0.002 … 0.2")
        z = torch.randn(p.n_show, 2, generator=self.gen(4))
        ref = self.test[: p.n_show]
        floor = metrics.w2_noise_floor(_olympic_draw, n=len(ref), seed=self.seed + 60)
        samples = {dt: fm(z, dt=dt) for dt in DTS}
        rows, table, panels = [], [], []
        base = samples[DTS[0]]
        for dt in DTS:
            x = samples[dt]
            q = metrics.sample_quality(x, ref)
            drift = float((x - base).norm(dim=1).mean())
            rows.append({"dt": dt, "steps": round(1 / dt), **q, "drift": drift})
            panels.append((x, f"Δt = {dt:g} ({round(1 / dt)} steps)"))
            table.append(
                (
                    f"{dt:g}",
                    f"{round(1 / dt)}",
                    pct(q["ring_precision"]),
                    num(q["ring_mean_offset"]),
                    pct(q["ring_coverage"]),
                    num(q["w2"]),
                    num(drift),
                )
            )
        self.m["fm_q4"] = {"rows": rows, "w2_noise_floor": floor, "n": p.n_show}
        fig = plots.point_panels(
            panels, ncols=3, rings=True, suptitle=f"FM: the same {p.n_show} noise points"
        )
        doc.figure(
            self.fig("fm_q4_dt", fig),
            "FM Q4. Euler sampling of the same noise with five step sizes; dotted: the rings' "
            "centre lines.",
        )
        doc.table(
            ("Δt", "steps", "in a band", "offset of the rest", "coverage", "W2", "moved vs 0.002"),
            table,
            f"FM Q4. Quality per step size ({p.n_show} samples, W2 to as many test points; "
            f"noise floor {num(floor)}). Last column: mean distance from where the same noise "
            "lands with Δt = 0.002, data units.",
        )
        a, b = rows[0], rows[-1]
        prec = [r["ring_precision"] for r in rows]
        mono = all(x >= y for x, y in zip(prec, prec[1:], strict=False))
        trend = (
            "falls steadily"
            if mono and a["ring_precision"] > b["ring_precision"]
            else ("rises" if b["ring_precision"] > a["ring_precision"] else "changes unevenly")
        )
        turn = self.m["fm_q2"]["fifth_velocity_change"]
        k = int(np.argmax(turn))
        text = (
            f"From Δt = {DTS[0]:g} to {DTS[-1]:g} the share of samples inside a band {trend} "
            f"(from {pct(a['ring_precision'])} to {pct(b['ring_precision'])}), W2 goes from "
            f"{num(a['w2'])} to {num(b['w2'])}, and the same noise lands on average "
            f"{num(b['drift'])} data units away from its fine-step destination. Euler keeps "
            "the velocity of the start of a step for the whole step, so it is exact only "
            "where the paths are straight; where they bend, a large step cuts the corner. "
            "Along the paths of FM Q2 the velocity changes most between "
            f"t = {k / 5:g} and {(k + 1) / 5:g} ({pct(turn[k], 0)} of all its change), "
            "so that is where coarse steps lose most. "
        )
        if b["ring_precision"] < a["ring_precision"] - 0.02:
            text += (
                f"With {round(1 / DTS[-1])} steps fewer points reach the thin bands and the "
                "rings come out thicker and blurred; the points outside sit on average "
                f"{num(b['ring_mean_offset'])} from a band, against "
                f"{num(a['ring_mean_offset'])} with the finest step. "
            )
        else:
            text += (
                "In this run the coarse steps move the points without lowering the share "
                "inside the bands much; the damage shows in W2 and in the distance moved. "
            )
        if rows[1]["drift"] < 0.25 * b["drift"]:
            text += (
                f"Between Δt = {DTS[0]:g} and {DTS[1]:g} the points move only "
                f"{num(rows[1]['drift'])} on average: below some step size the samples stop "
                "changing, and smaller steps only cost time."
            )
        doc.para(text)

    def fm_q5(self) -> None:
        doc, p = self.doc, self.preset
        nf, fm = self.models["nf"], self.models["fm"]
        doc.question("fm-q5", "FM Q5 · Reversing the flow")
        x = self.probes
        times = np.linspace(1, 0, 101)
        path = _np(fm.trajectory(x, inverse=True, dt=p.dt, times=times.tolist()))
        z_fm = fm.reverse(x, dt=p.dt)
        z_nf = self.nf_probe_z
        back = fm(z_fm, dt=p.dt)
        dist = (z_fm - z_nf).norm(dim=1)
        err = (back - x).norm(dim=1)
        pts = self.test[: min(1000, p.n_quality)]
        nf64 = copy.deepcopy(nf).double()
        rt = {
            "NF float32": metrics.round_trip_error(nf, pts),
            "NF float64": metrics.round_trip_error(nf64, pts.double()),
        }
        fm_dts = (0.1, 0.01, 0.001)
        for dt in fm_dts:
            rt[f"FM Euler Δt={dt:g}"] = metrics.round_trip_error(fm, pts, dt=dt)
        rt["FM RK4 Δt=0.01"] = metrics.round_trip_error(fm, pts, dt=0.01, solver="rk4")
        info = []
        rows = []
        for i, (name, _) in enumerate(PROBE_POINTS):
            info.append(
                {
                    "name": name,
                    "z_nf": z_nf[i].tolist(),
                    "z_fm": z_fm[i].tolist(),
                    "latent_distance": float(dist[i]),
                    "round_trip_error": float(err[i]),
                }
            )
            rows.append(
                (
                    name,
                    f"({num(float(z_nf[i, 0]), 2)}, {num(float(z_nf[i, 1]), 2)})",
                    f"({num(float(z_fm[i, 0]), 2)}, {num(float(z_fm[i, 1]), 2)})",
                    num(float(dist[i]), 2),
                    sci(float(err[i])),
                )
            )
        self.m["fm_q5"] = {
            "points": info,
            "dt": p.dt,
            "round_trip_points": len(pts),
            "round_trip": {k: {"mean": v.mean, "max": v.max} for k, v in rt.items()},
        }
        nf_lat = _np(nf.standardization.inverse(z_nf))
        # NF latents far outside the FM paths' frame would shrink the figure: list them.
        lo, hi = path.reshape(-1, 2).min(axis=0) - 2.0, path.reshape(-1, 2).max(axis=0) + 2.0
        shown = ((nf_lat >= lo) & (nf_lat <= hi)).all(axis=1)
        hidden = [
            f"{PROBE_POINTS[i][0]} at ({num(nf_lat[i, 0], 1)}, {num(nf_lat[i, 1], 1)})"
            for i in np.flatnonzero(~shown)
        ]
        fig = plots.trajectory_panels(
            [
                {
                    "path": path,
                    "times": times,
                    "title": "FM: reverse process of the 5 points of NF Q5",
                    "markers": False,
                    "annotate": [n for n, _ in PROBE_POINTS],
                    "overlay": [(nf_lat[shown], "NF latent of the point", "s", "#EE334E")],
                }
            ],
            time_label="t (1: data, 0: noise)",
            background=self.background,
            panel_height=2.6,
        )
        doc.figure(
            self.fig("fm_q5_reverse", fig),
            f"FM Q5. Eq. 18 with Δt = {p.dt:g} from the points (hollow circles, t = 1) to "
            "their noise (crosses, t = 0); red squares: where the NF sends the same points "
            "(all in data units)"
            + (f"; outside the frame: the NF latent of {', '.join(hidden)}." if hidden else "."),
        )
        doc.table(
            ("point", "NF latent z", "FM latent z", "distance", "FM round-trip error"),
            rows,
            "FM Q5. Latents in standardized units. Round trip: the FM latent integrated "
            f"forward again with Δt = {p.dt:g}; distance to the original point, data units.",
        )
        labels = list(rt)
        fig = plots.bars(
            {k: rt[k].mean for k in labels},
            title=f"Round trip x → latent → x, mean over {len(pts):,} test points",
            ylabel="mean error (data units)",
            colors=["#0081C8" if k.startswith("NF") else "#00A651" for k in labels],
            height=1.9,
        )
        doc.figure(
            self.fig("fm_q5_round_trip", fig),
            "FM Q5. Round-trip error of the NF (inverse then forward) and of FM (reverse then "
            "forward) for several solvers and steps.",
        )
        same = float(dist.max()) < 0.05
        e = {dt: rt[f"FM Euler Δt={dt:g}"].mean for dt in fm_dts}
        order = math.log10(e[0.1] / e[0.001]) / 2 if e[0.001] > 0 and e[0.1] > 0 else float("nan")
        shrinking = e[0.1] > e[0.01] > e[0.001]
        nf32, nf64e = rt["NF float32"].mean, rt["NF float64"].mean
        fm_here = rt[f"FM Euler Δt={p.dt:g}"].mean if p.dt in fm_dts else float(err.mean())
        doc.para(
            ("<b>Same outputs?</b> Nearly: " if same else "<b>Same outputs?</b> No: ")
            + f"the FM latents lie {num(float(dist.min()), 2)} to {num(float(dist.max()), 2)} "
            "standardized units from the NF latents of the same points. Both models push "
            "N(0, I) onto the rings, but infinitely many invertible maps do that; maximum "
            "likelihood through 15 couplings and regression onto straight-line velocities "
            "pick different ones, and nothing ties a data point to one particular latent."
        )
        doc.para(
            "<b>Forward again.</b> Integrating the FM latents forward does not return exactly "
            f"the same points: with Euler at Δt = {p.dt:g} the five points come back "
            f"{sci(float(err.min()))} to {sci(float(err.max()))} data units away "
            f"(mean {sci(fm_here)} over {len(pts):,} test points). Euler going back "
            "(Eq. 18) uses the velocity at the late end of each step, going forward (Eq. 17) "
            "the velocity at its early end; the two disagree wherever the field changes "
            "along the path, and their local errors add up instead of cancelling. "
            + (
                f"The error shrinks with the step: {sci(e[0.1])}, {sci(e[0.01])} and "
                f"{sci(e[0.001])} at Δt = 0.1, 0.01 and 0.001 (about Δt<sup>"
                f"{num(order, 1)}</sup>), and RK4 at Δt = 0.01 gives "
                f"{sci(rt['FM RK4 Δt=0.01'].mean)}."
                if shrinking
                else f"Measured at Δt = 0.1, 0.01, 0.001: {sci(e[0.1])}, {sci(e[0.01])}, "
                f"{sci(e[0.001])}; RK4 at Δt = 0.01: {sci(rt['FM RK4 Δt=0.01'].mean)}."
            )
        )
        exact = nf64e < 1e-9
        ratio = fm_here / max(nf32, 1e-300)
        self.m["fm_q5"].update(fm_error_at_dt=fm_here, fm_over_nf_float32=ratio, euler_order=order)
        doc.para(
            "<b>And the normalizing flow?</b> "
            + ("Yes, up to rounding: " if exact else "In exact arithmetic, yes: ")
            + "each coupling is inverted in closed form (Eq. 4), with no discretization, so "
            "φ(φ<sup>−1</sup>(x)) = x exactly in exact arithmetic. Measured: "
            f"{sci(nf32)} data units in float32 and {sci(nf64e)} in float64"
            + (
                ", so what remains is floating-point rounding; "
                if exact
                else " (larger than float64 rounding alone would give: the layers amplify it); "
            )
            + (
                f"in float32 that is {sci(ratio)} times smaller than the FM Euler round trip."
                if ratio > 1
                else f"in float32 that is not smaller than the FM Euler round trip "
                f"({sci(fm_here)})."
            )
        )

    # -- conditional flow matching ---------------------------------------------------------------
    def cfm_q1(self) -> None:
        doc, p = self.doc, self.preset
        doc.section("Conditional flow matching")
        doc.question("cfm-q1", "CFM Q1 · The training input, coloured by class")
        train = run_data(self.infos["cfm"], "train")
        n = min(len(train.x), max(p.n_show, 3000))
        counts = torch.bincount(train.labels, minlength=len(RING_NAMES)).tolist()
        self.m["cfm_q1"] = {"class_counts": counts, "shown": n}
        fig = plots.class_scatter(
            [(train.x[:n], train.labels[:n], f"CFM training input ({n:,} of {len(train.x):,})")],
            size=1.5,
        )
        doc.figure(
            self.fig("cfm_q1_input", fig),
            "CFM Q1. Training points coloured by their ring (class).",
        )
        doc.para(
            "The training set holds "
            + ", ".join(f"{c:,} {name}" for c, name in zip(counts, RING_NAMES, strict=True))
            + " points. The condition enters the <b>objective, Eq. 16</b>: the network becomes "
            "v(y<sub>t</sub>, t, c) and is regressed onto x<sub>1</sub> − x<sub>0</sub> with c "
            "the class of x<sub>1</sub>; the sampler (Eq. 17) then uses v(y, t, c) for the "
            "class asked for. In flowscope the class goes through an nn.Embedding (5 classes, "
            "16 numbers each) whose vector is concatenated with (y, t) at the input of the "
            "first fully connected layer, which mixes the three."
        )

    def cfm_q2(self) -> None:
        doc, p, cfm = self.doc, self.preset, self.models["cfm"]
        doc.question("cfm-q2", "CFM Q2 · One point per class")
        k = len(RING_NAMES)
        labels = torch.arange(k)
        z = torch.randn(k, 2, generator=self.gen(5))
        times = np.linspace(0, 1, 101)
        path = _np(cfm.trajectory(z, dt=p.dt, times=times.tolist(), labels=labels))
        end = path[-1]
        d = ring_distance(torch.from_numpy(end))  # (K, 5)
        rows, info = [], []
        for c in range(k):
            own = float(d[c, c])
            nearest = int(d[c].argmin())
            ok = own <= HALF_BAND + metrics.BAND_TOLERANCE
            info.append(
                {
                    "class": RING_NAMES[c],
                    "end": end[c].tolist(),
                    "distance_to_own_centre_line": own,
                    "nearest_ring": RING_NAMES[nearest],
                    "in_own_band": ok,
                }
            )
            rows.append(
                (
                    RING_NAMES[c],
                    f"({num(end[c, 0], 2)}, {num(end[c, 1], 2)})",
                    num(own),
                    RING_NAMES[nearest],
                    "yes" if ok else "no",
                )
            )
            self.say(
                f"    CFM Q2 check: class {RING_NAMES[c]:6s} ends at ({end[c, 0]:.3f}, "
                f"{end[c, 1]:.3f}), {own:.3f} from its ring's centre line: "
                + ("in its band" if ok else "NOT in its band")
            )
        hits = sum(r["in_own_band"] for r in info)
        self.m["cfm_q2"] = {"points": info, "in_own_band": hits}
        bg = run_data(self.infos["cfm"], "test")
        fig = plots.class_trajectories(
            path,
            labels,
            times,
            title="CFM: one sample per class",
            background=bg.x[: p.background],
            background_labels=bg.labels[: p.background],
        )
        doc.figure(
            self.fig("cfm_q2_trajectories", fig),
            "CFM Q2. One noise point per class integrated to t = 1, each path in its class's "
            "colour; faint: held-out points of each class.",
        )
        doc.table(
            ("class", "end point", "distance to own centre line", "nearest ring", "in own band"),
            rows,
            "CFM Q2. The check (also printed while the report runs): a point is in its band "
            "when it is within 0.125 data units of its ring's centre line.",
        )
        doc.para(
            f"{hits} of the {k} points end inside the band of their own ring"
            + (
                "."
                if hits == k
                else "; the others are listed above with their distance to the centre line."
            )
        )

    def cfm_q3(self) -> None:
        doc, p, cfm = self.doc, self.preset, self.models["cfm"]
        doc.question("cfm-q3", f"CFM Q3 · {p.cfm_samples:,} conditional samples")
        k = len(RING_NAMES)
        labels = torch.arange(p.cfm_samples) % k
        x = cfm.sample(p.cfm_samples, dt=p.dt, labels=labels, generator=self.gen(6))
        acc = metrics.class_accuracy(x, labels)
        prec = metrics.ring_precision(x)
        nearest_own = float((ring_distance(x.double()).argmin(dim=1) == labels).double().mean())
        self.m["cfm_q3"] = {
            "n": p.cfm_samples,
            "class_accuracy": dict(zip(RING_NAMES, acc.per_class, strict=True)),
            "overall": acc.overall,
            "ring_precision": prec.precision,
            "nearest_ring_is_own": nearest_own,
        }
        fig = plots.class_scatter(
            [(x, labels, f"CFM: {p.cfm_samples:,} samples, {p.cfm_samples // k} per class")],
            size=1.5,
        )
        doc.figure(
            self.fig("cfm_q3_samples", fig),
            f"CFM Q3. Samples of the conditional model (Euler, Δt = {p.dt:g}), each coloured "
            "by the class it was generated for.",
        )
        worst = int(np.argmin(acc.per_class))
        doc.para(
            f"{pct(acc.overall)} of the samples lie in the band of the ring they were asked "
            "for (per class: "
            + ", ".join(
                f"{name} {pct(v)}" for name, v in zip(RING_NAMES, acc.per_class, strict=True)
            )
            + f"; lowest: {RING_NAMES[worst]}), and {pct(prec.precision)} lie in some band; "
            f"{pct(nearest_own)} are closer to their own ring's centre line than to any other. "
            + (
                "Each class's samples form its own ring, including where rings overlap: "
                "there the class, not the position, decides which ring a point belongs to."
                if acc.overall >= 0.8
                else "The classes are placed by the condition, but at this stage of training "
                "many samples miss the thin bands."
            )
        )

    # -- bonus ------------------------------------------------------------------------------
    def bonus(self) -> None:
        doc, p, fm = self.doc, self.preset, self.models["fm"]
        doc.section("Bonus")
        doc.question("bonus", "Bonus · Making flow matching output (4, 5)")
        target = torch.tensor([BONUS_TARGET])
        z0 = torch.randn(1, 2, generator=self.gen(7))
        pool = steer.nearest_sample(
            fm, target, n=p.bonus_pool, dt=p.bonus_dt, generator=self.gen(8)
        )
        rev = steer.reverse_start(fm, target, dt=p.dt)
        rk4 = steer.reverse_start(fm, target, dt=0.01, solver="rk4")
        gd = steer.optimize_start(
            fm, target, z_init=z0, dt=p.bonus_dt, steps=p.bonus_steps, lr=BONUS_LR
        )
        g5 = steer.guided_sample(fm, target, weight=0.5, z=z0, dt=p.dt)
        g1 = steer.guided_sample(fm, target, weight=1.0, z=z0, dt=p.dt)
        methods = [
            ("best of n samples", f"best of {p.bonus_pool:,} samples", pool),
            (f"reverse + forward, Euler Δt={p.dt:g}", "reverse, then forward (Euler)", rev),
            ("reverse + forward, RK4 Δt=0.01", "reverse, then forward (RK4)", rk4),
            (f"gradient descent on z, Euler Δt={p.bonus_dt:g}", "gradient descent on z", gd),
            ("velocity guidance, w = 0.5", "guidance, w = 0.5", g5),
            ("velocity guidance, w = 1 (trivial)", "guidance, w = 1", g1),
        ]
        fine = float((fm(gd.z, dt=p.dt) - target).norm())
        gd.details["error_at_sampler_dt"] = fine
        info, rows, panels = [], [], []
        for name, short, r in methods:
            reached = r.error < BONUS_REACHED
            details = {k: v for k, v in r.details.items() if k != "errors"}
            info.append(
                {
                    "method": name,
                    "landing": r.x[0].tolist(),
                    "error": r.error,
                    "z": r.z[0].tolist(),
                    "z_norm": float(r.z.norm()),
                    "log_pz": r.log_pz,
                    "evaluations": r.evaluations,
                    "reached": reached,
                    **details,
                }
            )
            rows.append(
                (
                    name,
                    f"({num(float(r.x[0, 0]), 2)}, {num(float(r.x[0, 1]), 2)})",
                    sci(r.error),
                    num(float(r.z.norm()), 2),
                    num(r.log_pz, 1),
                    f"{r.evaluations:,}",
                    "yes" if reached else "no",
                )
            )
            panels.append(
                {
                    "path": r.path,
                    "times": r.times,
                    "title": f"{short}\nerror {r.error:.2g}",
                    "markers": False,
                    "overlay": [(target, "target (4, 5)", "*", "#EE334E")],
                }
            )
        self.m["bonus"] = {
            "target": list(BONUS_TARGET),
            "reached_below": BONUS_REACHED,
            "methods": info,
            "gd_errors": gd.details["errors"],
            "gd_start_z_norm": float(z0.norm()),
        }
        fig = plots.trajectory_panels(
            panels, time_label="t", background=self.background, panel_height=2.1, ncols=3
        )
        doc.figure(
            self.fig("bonus_trajectories", fig),
            "Bonus. The trajectory of the sampled point for each method, from its noise "
            "(hollow circle) to the output (cross), coloured by t; red star: the target.",
        )
        doc.table(
            (
                "method",
                "output",
                "error",
                "|z|",
                "log p<sub>z</sub>(z)",
                "velocity evaluations",
                "reached",
            ),  # fmt: skip
            rows,
            "Bonus. Output and its distance to (4, 5), data units; z in standardized units; "
            f"reached: error below {BONUS_REACHED} data units.",
        )
        ok = {short: r.error < BONUS_REACHED for _, short, r in methods}
        yes = [short for _, short, r in methods if ok[short]]
        no = [short for _, short, r in methods if not ok[short]]
        doc.para(
            "The sampler is a deterministic map from noise to output, so there are two "
            "handles: the starting noise and the dynamics. Methods that reached the target "
            f"(error below {BONUS_REACHED}): {', '.join(yes) or 'none'}; methods that did not: "
            f"{', '.join(no) or 'none'}."
        )
        doc.para(
            f"<b>Best of n.</b> Among {p.bonus_pool:,} ordinary samples the closest lands "
            f"{num(pool.error, 2)} data units away"
            + (
                ": the model puts almost no mass near (4, 5), so waiting for such a sample "
                "is hopeless. "
                if pool.error >= BONUS_REACHED
                else ". "
            )
        )
        doc.para(
            "<b>Reverse, then forward.</b> Integrating Eq. 18 back from the target gives a "
            f"noise of norm {num(float(rev.z.norm()), 2)} (log p<sub>z</sub> = "
            f"{num(rev.log_pz, 1)}"
            + (", far in the tail of N(0, I)" if float(rev.z.norm()) > 4 else "")
            + f"); sampling from it lands {sci(rev.error)} away with Euler (Δt = {p.dt:g}) "
            f"and {sci(rk4.error)} with RK4 (Δt = 0.01). "
            + (
                "This works because the ODE is invertible, even where the field was never "
                "trained; what remains is the Euler mismatch of FM Q5. "
                if rev.error < BONUS_REACHED
                else "The Euler mismatch of FM Q5 is too large here, off the data where the "
                "field was never trained. "
            )
        )
        doc.para(
            "<b>Gradient descent on the noise.</b> Starting from an ordinary draw "
            f"(|z| = {num(float(z0.norm()), 2)}), Adam moved z through the unrolled Euler "
            f"sampler (Δt = {p.bonus_dt:g}) for {gd.details['steps_taken']} steps; the output "
            f"lands {sci(gd.error)} away at that step size and {sci(fine)} away when the same "
            f"z is sampled with Δt = {p.dt:g}. "
            + (
                "It needs no inverse and optimises exactly the sampler that will be used, at "
                "the cost of a backward pass through it per step; it finds the same noise as "
                f"the reversal (|z| = {num(float(gd.z.norm()), 2)}). "
                if gd.error < BONUS_REACHED
                else f"It stopped short of the target: {gd.details['steps_taken']} steps were "
                "not enough to carry z that far into the tail. "
            )
        )
        doc.para(
            "<b>Guidance.</b> Blending the network's velocity with the straight-path "
            "velocity towards the target, (1 − w) v + w (y* − y)/(1 − t), ends "
            f"{sci(g5.error)} away for w = 0.5"
            + (
                ": the two fields pull in different directions and the point stops between them. "
                if g5.error >= BONUS_REACHED
                else ". "
            )
            + f"With w = 1 it ends {sci(g1.error)} away, but the network is then ignored: the "
            "trivial answer, as the model no longer generates anything."
        )


def _olympic_draw(n: int, seed: int) -> torch.Tensor:
    from .data import olympic_rings

    return olympic_rings(n, seed=seed)


# -- orchestration --------------------------------------------------------------------------


def build_report(
    out: str | Path = "runs/olympic",
    *,
    preset: str | Preset = "full",
    seed: int = 0,
    retrain: bool = False,
    log: TextIO | None = None,
) -> ReportResult:
    """Train or reuse the three models, run the whole study and write the report.

    Arguments:
        out: output folder (created if needed).
        preset: ``"full"`` (the seed's recipe: 250,000 points, 20 epochs), ``"quick"``
            (7 epochs), ``"smoke"`` (tiny, for tests) or a :class:`Preset`.
        seed: seeds the data, the training and every experiment.
        retrain: train the models even if ``out/models`` holds them with the same config.
        log: where progress lines go (default: stderr).

    Returns:
        a :class:`ReportResult`.

    Raises:
        ValueError: for an unknown preset or a bad seed.
        RunError: if a model folder cannot be written or read.
        CommandError: if reportlab (the ``report`` extra) is not installed.
    """
    if isinstance(preset, str):
        if preset not in PRESETS:
            raise ValueError(f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}")
        preset = PRESETS[preset]
    if not isinstance(preset, Preset):
        raise TypeError(f"preset must be a name or a Preset, got {type(preset).__name__}")
    if isinstance(seed, bool) or int(seed) != seed or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    try:
        import reportlab  # noqa: F401 - an optional dependency, checked before hours of work
    except ModuleNotFoundError:
        raise CommandError(
            "flowscope report needs reportlab for the PDF: pip install 'flowscope[report]'"
        ) from None
    log = log or sys.stderr
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "figures").mkdir(exist_ok=True)
    study = Study(out, preset, int(seed), retrain, log)
    paths = {"pdf": out / "report.pdf", "html": out / "report.html"}
    pages = 0

    def write_documents() -> None:
        nonlocal pages
        pages = write_pdf(study.doc, paths["pdf"])
        if pages > 12:
            study.say(f"    warning: the PDF has {pages} pages, more than 12")

    stages: list[tuple[str, Callable[[], None]]] = [
        *((f"train {n.upper()} ({MODEL_TITLES[n]})", lambda n=n: study.train(n)) for n in MODELS),
        ("held-out data and the data's entropy", study.data),
        ("overview: held-out NLL and sample quality", study.overview),
        ("NF Q1: validation loss", study.nf_q1),
        ("NF Q2: three samplings", study.nf_q2),
        ("NF Q3: points after selected layers", study.nf_q3),
        ("NF Q4: trajectories through the layers", study.nf_q4),
        ("NF Q5: inverse trajectories and log p(x)", study.nf_q5),
        ("FM Q1: batch loss", study.fm_q1),
        ("FM Q2: flow progression", study.fm_q2),
        ("FM Q3: point trajectories", study.fm_q3),
        ("FM Q4: time quantization", study.fm_q4),
        ("FM Q5: reversing the flow", study.fm_q5),
        ("CFM Q1: training input", study.cfm_q1),
        ("CFM Q2: one point per class", study.cfm_q2),
        ("CFM Q3: conditional samples", study.cfm_q3),
        ("Bonus: steering FM to (4, 5)", study.bonus),
        ("write report.pdf", write_documents),
        ("write report.html", lambda: write_html(study.doc, paths["html"])),
    ]
    for i, (title, fn) in enumerate(stages, start=1):
        study.say(f"flowscope report [{i:2d}/{len(stages)}] {title}")
        t0 = time.perf_counter()
        fn()
        study.timings[title] = time.perf_counter() - t0
    study.m["timings_seconds"] = study.timings
    study.m["pdf_pages"] = pages
    metrics_path = out / "metrics.json"
    atomic_write(metrics_path, json.dumps(_jsonable(study.m), indent=1) + "\n")
    return ReportResult(
        out=out,
        pdf=paths["pdf"],
        html=paths["html"],
        metrics=metrics_path,
        pages=pages,
        timings=dict(study.timings),
        trained=dict(study.trained),
    )


def _report_command(args: argparse.Namespace) -> int:
    t0 = time.perf_counter()
    result = build_report(args.out, preset=args.preset, seed=args.seed, retrain=args.retrain)
    width = max(len(k) for k in result.timings)
    print("stage".ljust(width), " seconds")
    for name, secs in result.timings.items():
        print(name.ljust(width), f"{secs:8.1f}")
    print("total".ljust(width), f"{time.perf_counter() - t0:8.1f}")
    print(f"report: {result.pdf} ({result.pages} pages), {result.html}")
    print(f"figures: {result.out / 'figures'}; numbers: {result.metrics}")
    return 0


def add_commands(sub: argparse._SubParsersAction) -> None:
    """Register ``flowscope report`` with the CLI."""
    p = add_command(
        sub,
        "report",
        "Train (or reuse) NF, FM and CFM on the Olympic rings, run the whole study and "
        "write report.pdf, report.html, figures/ and metrics.json.",
        "flowscope report --preset quick --out runs/olympic",
        _report_command,
    )
    p.add_argument("--out", default="runs/olympic", help="output folder (default runs/olympic)")
    p.add_argument(
        "--preset",
        choices=list(PRESETS),
        default="full",
        help="full: the seed's recipe (250,000 points, 20 epochs); quick: 7 epochs; "
        "smoke: a tiny end-to-end run (seconds)",
    )
    p.add_argument(
        "--retrain", action="store_true", help="train the models even if saved ones match"
    )
    p.add_argument("--seed", type=int, default=0, help="seed of data, training and experiments")
