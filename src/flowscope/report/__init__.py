"""``flowscope report``: the whole Olympic-rings study, written as a PDF and an HTML report.

:func:`build_report` trains (or reuses) the three models of the study, a normalizing flow
(``nf``), unconditional flow matching (``fm``) and class-conditional flow matching
(``cfm``), runs every experiment of the study's sections 3.3 and 4.3 and the Bonus, and
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

The package, by role: :mod:`.presets` (sizes and fixed settings), :mod:`.models`
(training or reusing the models), :mod:`.study` (the state the stages share),
:mod:`.overview`, :mod:`.nf`, :mod:`.fm`, :mod:`.cfm`, :mod:`.bonus` (the experiments and
text of each part), :mod:`.measures` (what the experiments measure on paths),
:mod:`.text` (number formatting), :mod:`.document` (PDF and HTML) and :mod:`.build` (the
run of the stages). The command's options are :mod:`flowscope.cli.report`.

Example:
    ``flowscope report --preset quick --out runs/olympic``
"""

from __future__ import annotations

from .. import lazy

_EXPORTS = {
    "ReportResult": ".build",
    "build_report": ".build",
    "Document": ".document",
    "write_html": ".document",
    "write_pdf": ".document",
    "PRESETS": ".presets",
    "Preset": ".presets",
    "num": ".text",
    "pct": ".text",
    "sci": ".text",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy.exports(__name__, _EXPORTS)
