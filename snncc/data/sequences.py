"""Sequence datasets for BSD-RNNs (App. C / E.2.3): next-character text and multivariate series.

* ``text``: a plain-text corpus (default: tinyshakespeare). Every run of
  whitespace becomes one space (App. E.2.3), characters are one-hot coded over
  the corpus' sorted character set, the first 90% of the characters are the
  training stream and the last 10% the test stream. A sample is a window of
  ``seq_len`` characters; its target is the same window shifted by one.
* ``timeseries``: a comma-separated numeric table, optionally gzipped (default:
  exchange_rate, 8 columns). Rows are split 90% / 10% in time order, every column
  is z-scored with the training rows' mean and std, and the target of a window
  of ``seq_len`` rows is the next row of every step.

Windows start every ``stride`` positions (default: ``seq_len``, non-overlapping).
All errors are :class:`SequenceError` with one line naming the file.
"""
from __future__ import annotations

import gzip
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

SHARED = Path("/work/shared/data")
DEFAULT_PATHS = {"text": SHARED / "text" / "tinyshakespeare.txt",
                 "timeseries": SHARED / "timeseries" / "exchange_rate.txt.gz"}
TRAIN_FRACTION = 0.9


class SequenceError(ValueError):
    """A sequence dataset is missing, malformed or too short."""


@dataclass
class SequenceData:
    """x: (N, L, D_in) float32; y: (N, L) int64 class indices (text) or (N, L, D_out) float32."""

    x: np.ndarray
    y: np.ndarray
    task: str
    vocab: str | None = None  # text: the character of each one-hot index
    mean: np.ndarray | None = None  # timeseries: training statistics used for z-scoring
    std: np.ndarray | None = None

    @property
    def input_size(self) -> int:
        return int(self.x.shape[-1])

    @property
    def output_size(self) -> int:
        return len(self.vocab) if self.task == "text" else int(self.y.shape[-1])


def _path(task: str, path) -> Path:
    p = Path(path) if path is not None else DEFAULT_PATHS[task]
    if not p.is_file():
        raise SequenceError(f"{task} data file not found: {p}")
    return p


def _split_bounds(n: int, split: str) -> slice:
    if split not in ("train", "test"):
        raise SequenceError(f"unknown split {split!r}; expected 'train' or 'test'")
    cut = int(n * TRAIN_FRACTION)
    return slice(0, cut) if split == "train" else slice(cut, n)


def _windows(n: int, seq_len: int, stride: int, limit, seed: int, what: str) -> np.ndarray:
    """Start indices of windows of seq_len + 1 items (input plus next-step target)."""
    if not (isinstance(seq_len, int) and seq_len >= 1 and isinstance(stride, int) and stride >= 1):
        raise SequenceError(f"seq_len and stride must be integers >= 1, got {seq_len!r}, {stride!r}")
    starts = np.arange(0, n - seq_len, stride)
    if len(starts) == 0:
        raise SequenceError(f"{what}: {n} items are too few for one window of {seq_len} + 1")
    if limit is not None and limit < len(starts):
        starts = np.sort(np.random.default_rng(seed).permutation(len(starts))[:int(limit)])
    return starts


def load_text(split: str, path=None, seq_len: int = 32, stride: int | None = None, limit: int | None = None,
              seed: int = 0) -> SequenceData:
    p = _path("text", path)
    try:
        raw = p.read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        raise SequenceError(f"cannot read {p}: {exc}") from None
    text = re.sub(r"\s+", " ", raw)
    if len(text) < 2:
        raise SequenceError(f"{p}: corpus is empty")
    vocab = "".join(sorted(set(text)))
    index = {c: i for i, c in enumerate(vocab)}
    codes = np.fromiter((index[c] for c in text), dtype=np.int64, count=len(text))[_split_bounds(len(text), split)]
    starts = _windows(len(codes), seq_len, stride or seq_len, limit, seed, f"{p} ({split})")
    win = codes[starts[:, None] + np.arange(seq_len + 1)]
    x = np.eye(len(vocab), dtype=np.float32)[win[:, :-1]]
    return SequenceData(x, win[:, 1:].copy(), "text", vocab=vocab)


def _read_table(p: Path) -> np.ndarray:
    try:
        opener = gzip.open if p.suffix == ".gz" else open
        with opener(p, "rt") as f:
            rows = [line.strip() for line in f if line.strip()]
        table = np.array([[float(v) for v in r.split(",")] for r in rows], dtype=np.float64)
    except (OSError, EOFError, gzip.BadGzipFile) as exc:
        raise SequenceError(f"cannot read {p}: {exc}") from None
    except ValueError as exc:
        raise SequenceError(f"{p}: not a numeric comma-separated table ({exc})") from None
    if table.ndim != 2 or table.shape[0] < 2:
        raise SequenceError(f"{p}: expected rows of equal length, got shape {table.shape}")
    return table


def load_timeseries(split: str, path=None, seq_len: int = 32, stride: int | None = None,
                    limit: int | None = None, seed: int = 0) -> SequenceData:
    p = _path("timeseries", path)
    table = _read_table(p)
    train = table[_split_bounds(len(table), "train")]
    mean, std = train.mean(0), train.std(0)
    std[std == 0] = 1.0  # a constant column stays 0 after centring
    data = ((table - mean) / std)[_split_bounds(len(table), split)].astype(np.float32)
    starts = _windows(len(data), seq_len, stride or seq_len, limit, seed, f"{p} ({split})")
    win = data[starts[:, None] + np.arange(seq_len + 1)]
    return SequenceData(win[:, :-1].copy(), win[:, 1:].copy(), "timeseries", mean=mean, std=std)


def load_sequences(task: str, split: str, path=None, **kw) -> SequenceData:
    if task == "text":
        return load_text(split, path, **kw)
    if task == "timeseries":
        return load_timeseries(split, path, **kw)
    raise SequenceError(f"unknown sequence task {task!r} (choose from text, timeseries)")
