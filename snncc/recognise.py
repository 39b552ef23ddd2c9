"""Recognising snncc's own outputs by content (files) or marker (folders): the half of the
refusal rule of :mod:`snncc.fileio` that reads. ``is_snncc_output(path, kind)`` is the entry point;
``RECOGNISERS`` maps each file kind to its test."""
from __future__ import annotations

import json
import re
import zipfile
from pathlib import Path

FORMAT, VERSION = "snncc-output", 1
MARKER = ".snncc-output.json"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
PNG_KEYWORD = b"snncc"



# -- recognising snncc's own outputs ------------------------------------------------------
def is_graph(path: Path) -> bool:
    with open(path, "rb") as f:
        head = f.read(64)
        f.seek(max(0, path.stat().st_size - 4096))
        tail = f.read()
    return b"\x12\x05snncc" in head and b"snncc.format_version" in tail


def is_json(path: Path) -> bool:
    if path.stat().st_size > 256 << 20:
        return False
    try:
        obj = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError, RecursionError):
        return False
    return isinstance(obj, dict) and isinstance(obj.get("snncc"), dict) and obj["snncc"].get("format") == FORMAT


def is_png(path: Path) -> bool:
    with open(path, "rb") as f:
        head = f.read(4096)
    return head.startswith(PNG_SIGNATURE) and b"tEXt" + PNG_KEYWORD + b"\x00" in head


def is_checkpoint(path: Path) -> bool:
    try:
        with zipfile.ZipFile(path) as z:
            pkl = [n for n in z.namelist() if n.endswith("data.pkl")]
            if len(pkl) != 1 or z.getinfo(pkl[0]).file_size > 64 << 20:
                return False
            data = z.read(pkl[0])
    except (zipfile.BadZipFile, OSError, ValueError):
        return False
    return re.search(rb"snncc-[a-z-]*checkpoint/\d", data) is not None


def is_nir(path: Path) -> bool:
    """A NIR file snncc wrote: HDF5 whose graph metadata names snncc as its producer."""
    with open(path, "rb") as f:
        if f.read(8) != b"\x89HDF\r\n\x1a\n":
            return False
    try:
        import nir
        return nir.read(str(path)).metadata.get("producer") == "snncc"
    except Exception:  # noqa: BLE001 -- any unreadable file is simply not ours
        return False


RECOGNISERS = {"graph": is_graph, "json": is_json, "png": is_png, "checkpoint": is_checkpoint, "nir": is_nir}


def marker_kind(path: Path):
    try:
        obj = json.loads((path / MARKER).read_text())
    except (OSError, ValueError, UnicodeDecodeError):
        return None
    if isinstance(obj, dict) and obj.get("format") == FORMAT:
        return obj.get("kind")
    return None


LEGACY_ARTIFACT = {"lava": ("lava.json", {"graph.snn.onnx", "lava.json", "summary.txt", "model.net"}),
                    "numba": ("target.json", {"graph.snn.onnx", "target.json", "summary.txt"})}


def legacy_folder(path: Path, kind) -> bool:
    """A folder snncc wrote before folders carried a marker, recognised by the snncc files it must hold
    (an artifact: only its own files, since replacing an artifact removes the folder)."""
    try:
        if kind == "run":
            return (path / "model.pt").is_file() and is_checkpoint(path / "model.pt")
        if kind == "demo":
            return (path / "model.snn.onnx").is_file() and is_graph(path / "model.snn.onnx")
        if kind in LEGACY_ARTIFACT:
            config, allowed = LEGACY_ARTIFACT[kind]
            names = {p.name for p in path.iterdir()}
            return config in names and "graph.snn.onnx" in names and names <= allowed \
                and is_graph(path / "graph.snn.onnx")
    except OSError:
        return False
    return False


def is_snncc_output(path, kind: str) -> bool:
    """Whether ``path`` is snncc's own output of ``kind`` (folders: by marker; files: by content)."""
    path = Path(path)
    if path.is_dir():
        return marker_kind(path) == kind or (marker_kind(path) is None and legacy_folder(path, kind))
    recognise = RECOGNISERS.get(kind)
    try:
        return bool(recognise and recognise(path))
    except OSError:
        return False
