"""Points from the user's files (``.csv``, ``.npy``, ``.npz``), and a file's fingerprint."""

from __future__ import annotations

import csv
import hashlib
import itertools
import warnings
from pathlib import Path

import numpy as np
import torch

__all__ = ["column_names", "file_sha256", "load_points"]


def load_points(
    path: str | Path, dtype: torch.dtype = torch.float32
) -> tuple[torch.Tensor, torch.Tensor | list[str] | None]:
    """Read points from ``.csv`` (header optional), ``.npy`` or ``.npz``.

    Two numeric columns are the coordinates; an optional third column holds the class
    labels: integer ids 0, 1, ... or class names (a csv's text, an ``.npz``'s string
    array), which a conditional model's ``log_prob`` and ``sample`` take as they are (any
    case; :attr:`~flowscope.base.FlowModel.class_names`). An ``.npz`` holds one array of
    2 or 3 columns, or ``x`` (N, 2) and ``labels`` (N,).

    Arguments:
        dtype: of the points, ``torch.float32`` (the models' default) or ``torch.float64``
            (for a model in double precision).

    Returns:
        points (N, 2) of ``dtype``, and labels: (N,) int64 ids, a list of N class names,
        or ``None``. (:func:`~flowscope.data.make_dataset` numbers names in sorted order.)

    Raises:
        ValueError: naming the file and the row or column, for an empty file, text that is
            not a number, NaN or inf (a number beyond float64's range reads as inf), a
            value beyond float32's range (about 3.4e38) for ``dtype`` float32, a wrong
            number of columns, labels that are negative or not integers, or a label column
            that mixes ids and names.
    """
    x, labels, names = _load(path, dtype)
    if names is not None:
        return x, [names[i] for i in labels.tolist()]
    return x, labels


def _load(
    path: str | Path, dtype: torch.dtype
) -> tuple[torch.Tensor, torch.Tensor | None, list[str] | None]:
    """:func:`load_points`'s points and labels as ids, and the sorted class names those
    ids index when the label column held names (else ``None``)."""
    if dtype not in (torch.float32, torch.float64):
        raise ValueError(f"dtype must be torch.float32 or torch.float64, got {dtype}")
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"{path}: is a folder, not a data file (.csv, .npy or .npz)")
    if not path.is_file():
        raise ValueError(f"{path}: no such file")
    suffix = path.suffix.lower()
    labels = names = None
    lines = None  # for a csv: the file line of each row, so that errors name the line
    if suffix == ".csv":
        arr, lines, header, names = _read_csv(path)
        dropped = _drop_index_column(path, arr, header)
        if header is not None:
            _check_header(path, header[arr.shape[1] - dropped.shape[1] :])
        arr = dropped
    elif suffix in (".npy", ".npz"):
        try:
            obj = np.load(path, allow_pickle=False)
        except Exception as err:  # numpy raises several types for bad files
            raise ValueError(f"{path}: not a readable {suffix} file ({err})") from None
        if suffix == ".npz":
            keys = list(obj.keys())
            if "x" in keys:
                arr = np.asarray(obj["x"])
                if "labels" in keys:
                    labels = np.asarray(obj["labels"])
                    if labels.shape != (len(arr),):
                        raise ValueError(
                            f"{path}: 'labels' has shape {labels.shape}, expected ({len(arr)},)"
                        )
                    if labels.dtype.kind == "U":  # class names
                        names, labels = _number_names(path, [str(v).strip() for v in labels])
            elif len(keys) == 1:
                arr = np.asarray(obj[keys[0]])
            else:
                raise ValueError(
                    f"{path}: expected an array 'x' (and optional 'labels'), got {keys}"
                )
        else:
            arr = np.asarray(obj)
        if arr.dtype.kind not in "biuf":
            raise ValueError(f"{path}: array of type {arr.dtype} is not numeric")
        arr = arr.astype(np.float64)
    else:
        raise ValueError(f"{path}: unsupported file type {suffix!r}; use .csv, .npy or .npz")
    if arr.ndim != 2:
        raise ValueError(
            f"{path}: an array of shape {arr.shape}; points are (N, 2), or (N, 3) with labels"
        )
    if arr.shape[0] == 0:
        raise ValueError(f"{path}: no points found (array of shape {arr.shape})")
    if labels is None and arr.shape[1] == 3:
        arr, labels = arr[:, :2], arr[:, 2]
    if arr.shape[1] != 2:
        raise ValueError(
            f"{path}: expected 2 columns (x, y) and an optional label column, got {arr.shape[1]}"
        )

    def where(row: int) -> str:
        return f"row {row + 1}" if lines is None else f"row {row + 1} (line {lines[row]})"

    # Check the points after the conversion to their dtype, which turns a value beyond its
    # range (about 3.4e38 for float32) into inf.
    np_dtype = np.float32 if dtype == torch.float32 else np.float64
    with np.errstate(over="ignore"):
        converted = arr.astype(np_dtype)
    bad = ~np.isfinite(converted)
    if bad.any():
        row, col = np.argwhere(bad)[0]
        value = arr[row, col]
        why = (
            f"beyond {np_dtype.__name__}'s range, |value| <= {float(np.finfo(np_dtype).max):.4g}"
            if np.isfinite(value)
            else "not finite"
        )
        raise ValueError(f"{path}: {where(row)}, column {col + 1} is {value} ({why})")
    if labels is not None:
        labels = np.asarray(labels, dtype=np.float64)
        wrong = ~np.isfinite(labels) | (labels < 0) | (labels != np.round(labels))
        if wrong.any():
            row = int(np.argmax(wrong))
            label = np.format_float_positional(labels[row], trim="-")  # -1, 2.0000001
            raise ValueError(
                f"{path}: {where(row)}: label {label} is not a non-negative integer "
                "(a third column holds class ids 0, 1, ... or class names; points alone are two "
                "columns, x and y)"
            )
        labels = torch.from_numpy(labels.astype(np.int64))
    return torch.from_numpy(converted), labels, names


#: Header names that say a column is the class label, which must come third.
LABEL_HEADERS = ("label", "labels", "class")


def _check_header(path: Path, header: list[str]) -> None:
    """Refuse a header that names the columns in another order than they are read (by
    position: x, y, then the label).

    Raises:
        ValueError: for a label column that is not the third, or y named before x.
    """
    names = [h.strip().lower() for h in header]
    for i, name in enumerate(names):
        if name in LABEL_HEADERS and i != 2:
            raise ValueError(
                f"{path}: the header names column {i + 1} {header[i]!r}, but the columns are "
                "read by position: x, y, then the class label; put the label column third"
            )
    if names[:2] == ["y", "x"]:
        raise ValueError(
            f"{path}: the header names y before x, but the columns are read by position "
            "(x first, then y); swap the two columns"
        )


def column_names(path: str | Path) -> tuple[str, str] | None:
    """The names of a csv file's two coordinate columns from its header (after a pandas
    index column, which :func:`load_points` leaves out), or ``None`` for a file without
    a header or of another kind. Reads the first lines only (:data:`_HEAD_LINES`)."""
    path = Path(path)
    if path.suffix.lower() != ".csv":
        return None
    try:
        with path.open(encoding="utf-8-sig") as f:
            lines = [line.rstrip("\r\n") for line in itertools.islice(f, _HEAD_LINES)]
        header, _ = _layout(lines, list(csv.reader(lines)))
    except (OSError, UnicodeDecodeError, csv.Error):
        return None
    if header is None or _column_numbers(header):
        return None  # no header, or pandas' column numbers: not names to show
    if len(header) >= 3 and header[0] in INDEX_HEADERS:
        header = header[1:]
    names = tuple(header[:2])
    return names if len(names) == 2 and all(names) else None


def _column_numbers(fields: list[str]) -> bool:
    """Whether a first row is the header pandas writes for a DataFrame without column
    names: its column numbers ``0,1[,2]``, after an index header (``,0,1``) or not."""
    if len(fields) >= 3 and fields[0] in INDEX_HEADERS:
        fields = fields[1:]
    return len(fields) in (2, 3) and fields == [str(k) for k in range(len(fields))]


#: The lines :func:`column_names` reads to find a header behind comment lines.
_HEAD_LINES = 64


def _layout(
    lines: list[str], split: list[list[str]], path: Path | None = None
) -> tuple[list[str] | None, list[int]]:
    """A csv file's header (:func:`_header`; ``None`` without one) and the indices of the
    lines that hold its rows (blank ones among them). A line whose text begins with ``#``
    is a comment, as ``numpy.loadtxt`` reads it, and holds no row; the comment just
    before the first row is the header when its text after the ``#`` is one, with as
    many fields as the row (``np.savetxt(..., header="x,y")`` writes ``# x,y``)."""
    comment = [line.lstrip().startswith("#") for line in lines]
    body = [i for i, c in enumerate(comment) if not c]
    header = _header([split[i] for i in body[:2]], path)
    if header is not None:
        return header, body[1:]
    first = next((i for i in body if lines[i].strip()), None)
    if first is not None and first > 0 and comment[first - 1]:
        fields = next(csv.reader([lines[first - 1].lstrip()[1:]]), [])
        if len(fields) == len(split[first]):  # a sentence of a comment is no header
            header = _header([fields, split[first]], path)
    return header, body


def _header(split: list[list[str]], path: Path | None = None) -> list[str] | None:
    """A csv file's header (its first row's fields, stripped), or ``None`` when the first
    row is data. ``split`` holds the file's first rows (two suffice), split into fields.

    The first row is a header when none of its fields is a number (a row with some numbers
    is data) and it is not a row of missing values (``NA,NA`` is a point with both values
    missing). pandas writes an unnamed DataFrame's column numbers as its header (``0,1``,
    or ``,0,1`` before an index): a header when an index header leads it or when the next
    row writes a coordinate as pandas writes a float (``1.0``, ``1e-05``), with a warning
    naming ``path`` (none without it); over rows of integers ``0,1`` is read as a point."""
    if not split or not split[0]:
        return None
    fields = [v.strip() for v in split[0]]
    if not "".join(fields) or all(v.lower() in MISSING for v in fields):
        return None
    if len(fields) in (2, 3) and all(v and v.lower() in MISSING for v in fields[:2]):
        return None  # NA,NA,setosa: a row whose coordinates are missing
    if _column_numbers(fields):
        if fields[0] in INDEX_HEADERS:
            return fields
        second = [v.strip().lower() for v in split[1][:2]] if len(split) > 1 else []
        if not any("." in v or "e" in v for v in second):
            return None  # over integers, 0,1 is as likely a point
        if path is not None:
            warnings.warn(
                f"{path}: the first line, {','.join(fields)}, was read as the header pandas "
                "writes for a DataFrame without column names, not as a point (if it is a "
                f"point, write it as {','.join(f'{v}.0' for v in fields[:2])})",
                UserWarning,
                stacklevel=4,
            )
        return fields
    tokens = fields[0].replace(";", " ").split() if len(fields) == 1 else []
    if len(tokens) >= 2 and all(_is_number(t) for t in tokens):
        return None  # numbers under another separator: data, which its error then says
    return None if any(_is_number(v) for v in fields) else fields


def recorded_file(path: str | Path, sha256: str | None, what: str) -> tuple[str, str]:
    """The absolute path of a file a model part reads, and its SHA-256, checked against
    the one recorded (``None``: first use).

    Arguments:
        what: what the file is, for messages, e.g. ``"source file"``.

    Raises:
        ValueError: for a missing file, or one whose SHA-256 differs from ``sha256``.
    """
    path = str(Path(path).expanduser().resolve())
    if not Path(path).is_file():
        raise ValueError(f"{what} {path}: no such file")
    digest = file_sha256(path)
    if sha256 is not None and sha256 != digest:
        raise ValueError(
            f"{what} {path} has changed since the model was made (SHA-256 "
            f"{digest[:12]}..., recorded {sha256[:12]}...)"
        )
    return path, digest


def file_sha256(path: str | Path) -> str:
    """The SHA-256 of a file's bytes, as 64 hex digits (to notice a changed data file)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


#: The header of the row-index column pandas' ``to_csv`` (and R's ``write.csv``) writes
#: first.
INDEX_HEADERS = ("", "Unnamed: 0")


def _drop_index_column(path: Path, arr: np.ndarray, header: list[str] | None) -> np.ndarray:
    """``arr`` without a first column that is a row index, as ``pandas.DataFrame.to_csv``
    writes it by default.

    A first column whose header is empty or ``Unnamed: 0`` is that index (R's
    ``write.csv`` writes one too, headed ``""`` and counting from 1): it is dropped, with
    a warning. Without such a header, a first column of three that counts 0, 1, ...,
    N - 1 or 1, ..., N (N >= 10) is most likely one too, but not surely: that is an error
    saying what to do.

    Raises:
        ValueError: for an unnamed counting first column of three.
    """
    if arr.ndim != 2 or arr.shape[1] < 3:
        return arr
    if header is not None and header[0] in INDEX_HEADERS:
        warnings.warn(
            f"{path}: the first column (header {header[0]!r}) is a row index, as pandas' "
            "to_csv and R's write.csv write it; it was left out (write the file with "
            "index=False in pandas, row.names=FALSE in R, to avoid this note)",
            UserWarning,
            stacklevel=3,
        )
        return arr[:, 1:]
    first = next((k for k in (0, 1) if np.array_equal(arr[:, 0], np.arange(len(arr)) + k)), None)
    if len(arr) >= 10 and first is not None:
        raise ValueError(
            f"{path}: column 1 counts {first}, {first + 1}, ..., {len(arr) - 1 + first}: a "
            "row index (as pandas' to_csv and R's write.csv write by default), not a "
            "coordinate; remove it, or write the file with index=False (pandas) or "
            "row.names=FALSE (R)"
        )
    return arr


#: How files mark a missing value (pandas writes an empty field, R writes NA).
MISSING = ("", "na", "n/a", "null", "none")


def _not_numeric(line: str, fields: list[str], first: bool = False) -> str:
    """Why a csv line is not a row of numbers, for an error message: a trailing comma
    (on the ``first`` row: every row has one, most likely), a missing value, the label
    column first, or another separator than commas (a class name in the label column is
    read as one)."""
    col, field = next((k, v) for k, v in enumerate(fields) if not _is_number(v))
    if first and len(fields) >= 3 and not fields[-1].strip() and line.rstrip().endswith(","):
        return (
            f"the line ends with a comma (column {len(fields)} is empty): remove the "
            "trailing commas, or fill that column"
        )
    if field.strip().lower() in MISSING:
        shown = "empty" if not field.strip() else repr(field.strip())
        return (
            f"column {col + 1} is a missing value ({shown}); drop or fill the rows with "
            "missing values first (pandas: df.dropna())"
        )
    if col == 0 and len(fields) == 3 and all(_is_number(v) for v in fields[1:]):
        return (
            f"column 1 is {field.strip()!r}, not a number: the columns are read by "
            "position, x, y, then the class label; put the label column last"
        )
    sep = next((c for c in ("\t", ";", " ") if c in line.strip()), None)
    hint = f" (the values are separated by {sep!r}; a .csv separates them by commas)"
    return f"{line.strip()!r} is not numeric{hint if sep else ''}"


def check_distinct_names(path: str | Path, names: list[str]) -> None:
    """Refuse class names of a file that differ only in case: a model reads class names in
    any case, so they would name one class twice.

    Raises:
        ValueError: naming the two spellings.
    """
    folded: dict[str, str] = {}
    for name in names:
        if name.lower() in folded:
            raise ValueError(
                f"{path}: the class names {folded[name.lower()]!r} and {name!r} differ only in "
                "case, and class names are read in any case; spell each class one way"
            )
        folded[name.lower()] = name


def _read_csv(path: Path) -> tuple[np.ndarray, list[int], list[str] | None, list[str] | None]:
    """The numeric rows of a csv file (N, C), the file line (1-based) of each, the
    header's fields (``None`` without a header), and the class names of a label column
    of names (``None`` for a file without one).

    A last column (the third of x, y, label; the fourth behind a row index) may hold class
    names rather than ids: its place in the rows then holds each name's index in the
    sorted names, as ``pandas``' ``astype("category").cat.codes`` numbers them."""
    try:
        # utf-8-sig: a byte-order mark (as Excel writes one) is not part of the header
        lines = path.read_text(encoding="utf-8-sig").splitlines()
    except UnicodeDecodeError as err:
        raise ValueError(
            f"{path}: not a text file (byte {err.start} is not UTF-8); a .csv holds rows "
            "of numbers x,y[,label]; binary arrays go in .npy or .npz"
        ) from None
    # csv's reader takes the fields out of their quotes ("1",3.6,79 as R's write.csv has it).
    split = list(csv.reader(lines))
    rows, numbers = [], []
    texts: dict[int, str] = {}  # row -> its class name, for a label column of names
    header, body = _layout(lines, split, path)
    for k in body:
        line, fields, i = lines[k], split[k], k + 1
        if not line.strip():
            continue
        where = f"row {len(rows) + 1} (line {i})"
        name = fields[-1].strip() if len(fields) in (3, 4) else ""
        if name and not _is_number(name) and name.lower() not in MISSING:
            texts[len(rows)] = name  # a class name where a label goes
            fields = [*fields[:-1], "nan"]
        try:
            rows.append([float(v) for v in fields])
        except ValueError:
            why = _not_numeric(line, fields, first=not rows)
            raise ValueError(f"{path}: {where}: {why}") from None
        numbers.append(i)
        if len(rows[-1]) != len(rows[0]):
            raise ValueError(
                f"{path}: {where} has {len(rows[-1])} columns, row 1 has {len(rows[0])}"
            )
    if not rows:
        raise ValueError(f"{path}: the file holds no points")
    arr = np.asarray(rows, dtype=np.float64)
    if not texts:
        return arr, numbers, header, None
    named = np.zeros(len(arr), dtype=bool)
    named[list(texts)] = True
    if not named.all():
        row, other = next(iter(texts)), int(np.argmin(named))
        raise ValueError(
            f"{path}: the label column holds class names (row {row + 1}, line "
            f"{numbers[row]}: {texts[row]!r}) and ids (row {other + 1}, line {numbers[other]}: "
            f"{np.format_float_positional(arr[other, -1], trim='-')}); give names or ids "
            "throughout"
        )
    names, arr[:, -1] = _number_names(path, [texts[r] for r in range(len(arr))])
    return arr, numbers, header, names


def _number_names(path: Path, labels: list[str]) -> tuple[list[str], np.ndarray]:
    """The sorted distinct class names of a label column of names, and each row's id
    (its name's index among them), as pandas' ``astype("category").cat.codes``.

    Raises:
        ValueError: for an empty or missing name.
    """
    names = sorted(set(labels))
    for name in names:
        if not name or name.lower() in MISSING:
            raise ValueError(f"{path}: a label is missing ({name!r}); give every point its class")
    index = {name: k for k, name in enumerate(names)}
    return names, np.array([index[v] for v in labels], dtype=np.float64)
