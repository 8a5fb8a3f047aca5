"""The report as a document: an ordered list of blocks, written as a PDF and as HTML.

:class:`Document` collects headings, paragraphs, figures and tables; :func:`write_pdf`
renders it to an A4 PDF with reportlab, :func:`write_html` to one self-contained HTML
file (figures embedded as base64 PNG). Both files are written atomically.
"""

from __future__ import annotations

import base64
import html
import io
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image as PILImage

from .. import __version__
from ..runs import atomic_write
from .presets import FIGURE_DPI

__all__ = ["Block", "Document", "write_html", "write_pdf"]


@dataclass
class Block:
    """One element of the report: a heading, paragraph, figure or table.

    Text uses a small markup understood by both outputs: ``<b>``, ``<i>``, ``<sub>``,
    ``<sup>`` and the entities ``&lt;``, ``&gt;``, ``&amp;``.
    """

    kind: str  # "h1", "h2", "p", "figure", "table", "page" (a page break, PDF only)
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

    def section(self, text: str, *, new_page: bool = False) -> None:
        """A section heading; ``new_page`` starts it on a page of its own in the PDF."""
        if new_page:
            self.blocks.append(Block("page"))
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


def _col_widths(block: Block, total: float, font: str, size: float) -> list[float]:
    """Column widths (points) of a table ``total`` points wide, as a browser lays one out.

    Each column gets at least its longest word (header words bold), so no number or word
    breaks; the space left goes to the columns in proportion to how much more their
    longest cell needs to fit on one line.
    """
    from reportlab.pdfbase.pdfmetrics import stringWidth

    pad = 6.5  # the cell's left and right padding, plus a little
    lo, hi = [], []
    for head, *cells in zip(block.header, *block.rows, strict=True):
        texts = [(html.unescape(re.sub(r"<[^>]+>", "", t)), f) for t, f in
                 ((head, font + "-Bold"), *((c, font) for c in cells))]  # fmt: skip
        word = max(stringWidth(w, f, size) for t, f in texts for w in t.split() or [""])
        line = max(stringWidth(t, f, size) for t, f in texts)
        lo.append(word + pad)
        hi.append(max(line, word) + pad)
    spare, want = total - sum(lo), [h - m for h, m in zip(hi, lo, strict=True)]
    if spare <= 0 or sum(want) <= 0:  # too narrow for the words, or everything fits
        extra = [spare * w / sum(lo) for w in lo] if spare <= 0 else [spare / len(lo)] * len(lo)
        return [m + e for m, e in zip(lo, extra, strict=True)]
    if sum(want) <= spare:  # every cell fits on one line: share what is left evenly
        rest = (spare - sum(want)) / len(lo)
        return [h + rest for h in hi]
    return [m + spare * w / sum(want) for m, w in zip(lo, want, strict=True)]


def write_pdf(doc: Document, path: Path) -> int:
    """Render ``doc`` to an A4 PDF at ``path`` (written atomically); returns the page count."""
    from reportlab.lib.pagesizes import A4
    from reportlab.lib.units import cm
    from reportlab.platypus import KeepTogether, PageBreak, Paragraph, SimpleDocTemplate, Spacer

    font = _register_fonts()
    st = _pdf_styles(font)
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
    story: list[Any] = [Paragraph(doc.title, st["title"]), Paragraph(doc.subtitle, st["caption"])]
    story.append(Spacer(1, 4))
    pending: list[Any] = []  # headings wait for the block after them: never orphaned

    def emit(*flowables: Any) -> None:
        story.append(KeepTogether([*pending, *flowables]))
        pending.clear()

    for b in doc.blocks:
        if b.kind in ("h1", "h2"):
            pending.append(Paragraph(b.text, st[b.kind]))
        elif b.kind == "page":
            if pending:
                emit()
            story.append(PageBreak())
        elif b.kind == "p":
            emit(Paragraph(b.text, st["body"]))
        elif b.kind == "figure":
            emit(_pdf_image(b, width), Paragraph(b.text, st["caption"]), Spacer(1, 3))
        elif b.kind == "table":
            t = _pdf_table(b, width, font, st["small"])
            emit(t, Paragraph(b.text, st["caption"]), Spacer(1, 3))
        else:
            raise ValueError(f"unknown block kind {b.kind!r}")
    if pending:
        emit()
    footer = _pdf_footer(doc.title, font, margin)
    pdf.build(story, onFirstPage=footer, onLaterPages=footer)
    atomic_write(path, buf.getvalue())
    return int(pdf.page)


def _pdf_styles(font: str) -> dict[str, Any]:
    """The paragraph styles of the PDF by name: body, small (tables), caption, h1, h2,
    title."""
    from reportlab.lib import colors
    from reportlab.lib.styles import ParagraphStyle

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
    return {"body": body, "small": small, "caption": caption, "h1": h1, "h2": h2, "title": title}


def _pdf_footer(title: str, font: str, margin: float) -> Any:
    """The page callback that writes the title and the page number at the foot."""
    from reportlab.lib import colors
    from reportlab.lib.pagesizes import A4
    from reportlab.lib.units import cm

    def footer(canvas, _doc) -> None:
        canvas.saveState()
        canvas.setFont(font, 7)
        canvas.setFillColor(colors.grey)
        canvas.drawString(margin, 0.8 * cm, title)
        canvas.drawRightString(A4[0] - margin, 0.8 * cm, f"page {canvas.getPageNumber()}")
        canvas.restoreState()

    return footer


def _pdf_image(block: Block, width: float) -> Any:
    """A figure block as an image at its printed size, at most ``width`` points wide."""
    from reportlab.lib.units import inch
    from reportlab.lib.utils import ImageReader
    from reportlab.platypus import Image

    iw, ih = ImageReader(str(block.path)).getSize()
    w = min(width, block.width * iw / FIGURE_DPI * inch)
    return Image(str(block.path), width=w, height=w * ih / iw)


def _pdf_table(block: Block, width: float, font: str, style: Any) -> Any:
    """A table block as a reportlab table ``width`` points wide, header repeated on every
    page, rows striped."""
    from reportlab.lib import colors
    from reportlab.platypus import Paragraph, Table, TableStyle

    head = [Paragraph(f"<b>{h}</b>", style) for h in block.header]
    rows = [[Paragraph(c, style) for c in r] for r in block.rows]
    widths = _col_widths(block, width, font, style.fontSize)
    t = Table([head, *rows], colWidths=widths, repeatRows=1, hAlign="LEFT")
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
    return t


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
