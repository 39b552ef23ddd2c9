"""Output files and folders: written atomically, and never over something snncc did not write.

The API (every path is the user's path; errors name it, never a temporary file):

``atomic_path(path, kind=None, force=False)``
    context manager yielding a hidden temporary sibling (``.<name>.<pid>.<rand>.tmp``) that
    replaces ``path`` only when the block succeeds.
``atomic_dir(path, kind=None, force=False)``
    the same for a folder: the temporary folder replaces ``path`` as a whole and carries a
    marker file :data:`MARKER` (``{"format": "snncc-output", "version": 1, "kind": kind}``).
``prepare_dir(path, kind, force=False)``
    a folder that a command fills file by file (a training run, the demo): created if
    missing, marked, and refused if it holds something else.
``output_dir(path, kind, force=False)``
    context manager around ``prepare_dir``: a folder it created is removed again if the block
    fails before writing anything into it.
``check_output(path, kind, force=False)``
    the refusal rule alone, for a command to fail before doing its work.
``write_bytes / write_text / write_json(path, data, kind=None, force=False)``
    one-shot atomic writes; ``write_json(..., kind="json")`` stamps the object with
    ``"snncc": {"format": "snncc-output", "version": 1, "kind": "json"}``.

The refusal rule: an existing ``path`` is replaced only if it is a snncc output of the same
``kind`` (or ``force``). Files are recognised by content: ``graph`` (a ``*.snn.onnx`` whose
producer is snncc and that carries ``snncc.format_version``), ``json`` (an object with the
``snncc`` stamp), ``png`` (a PNG with the ``snncc`` tEXt chunk every PNG written through
this module gets), ``checkpoint`` (a torch zip whose pickle holds a ``snncc-*checkpoint/N``
format key). Folders by their marker, or, for folders written before markers existed, by the
snncc files they hold (a run: a snncc ``model.pt``; the demo: ``model.snn.onnx``; a compile artifact:
``graph.snn.onnx`` plus ``lava.json``/``target.json`` and nothing but artifact files); an empty folder
is always usable. ``kind=None``
skips the rule (files a command writes inside a folder it has claimed). A parent that is a
file, or a file target that is a folder, is refused even with ``force``. With ``force``, a
foreign folder that ``atomic_dir`` would replace is moved aside to ``<name>.orig-<N>``,
never deleted.

Stale temporaries of a killed write (``.<name>.*.tmp`` and ``.<name>.old.*`` whose
process is gone) are removed by the next write of ``<name>`` in that folder; a
``.<name>.old.<pid>`` left while ``<name>`` itself is missing is restored, not removed.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
import zlib
from contextlib import contextmanager
from pathlib import Path

# recognition lives in snncc.recognise; MARKER, PNG_SIGNATURE and is_snncc_output stay part of this API
from snncc.recognise import FORMAT, MARKER, PNG_KEYWORD, PNG_SIGNATURE, VERSION, is_snncc_output  # noqa: F401


class OutputError(ValueError):
    """An output path snncc refuses to write; the message names the user's path."""


# -- the refusal rule ---------------------------------------------------------------------
def _check_parents(path: Path) -> None:
    for parent in path.parents:
        if parent.exists() or parent.is_symlink():
            if not parent.is_dir():
                raise OutputError(f"cannot write {path}: {parent} is not a directory")
            return


def check_output(path, kind, force: bool = False, is_dir: bool = False) -> None:
    """Raise OutputError (naming ``path``) unless ``path`` may be written as a ``kind`` output."""
    path = Path(path)
    _check_parents(path)
    if not (path.exists() or path.is_symlink()):
        return
    if not is_dir and path.is_dir():
        raise OutputError(f"cannot write {path}: it is a directory")
    if is_dir and not path.is_dir():
        if force:
            return
        raise OutputError(f"refusing to replace {path}: it is a file, not a snncc {kind} folder "
                          f"(pass --force to replace it)")
    if force or (kind is None and not is_dir):
        return
    if is_dir:
        if not any(path.iterdir()) or is_snncc_output(path, kind):
            return
        raise OutputError(f"refusing to write into {path}: an existing folder that is not a snncc {kind} output "
                          f"(choose a new or empty folder, or pass --force)")
    if not is_snncc_output(path, kind):
        raise OutputError(f"refusing to overwrite {path}: not a snncc {kind} file (pass --force to replace it)")


# -- stale temporaries ------------------------------------------------------------------
def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):
        return True
    return True


def clean_stale(path) -> None:
    """Remove what killed writes of ``path`` left next to it (see the module docstring)."""
    path = Path(path)
    folder, name = path.parent, path.name
    if not folder.is_dir():
        return
    tmp = re.compile(re.escape(f".{name}.") + r"(?:(\d+)\.)?[A-Za-z0-9_]+\.tmp$")
    old = re.compile(re.escape(f".{name}.old.") + r"(\d+)$")
    try:
        entries = list(folder.iterdir())
    except OSError:
        return
    for entry in entries:
        m = tmp.match(entry.name) or old.match(entry.name)
        if not m or (m.group(1) and _alive(int(m.group(1)))):
            continue
        if m.re is old and not (path.exists() or path.is_symlink()):
            os.replace(entry, path)   # the kill came between moving the old output aside and the new one in
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            try:
                entry.unlink()
            except OSError:
                pass


# -- writing -----------------------------------------------------------------------------------
def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _oserror(path: Path, e: OSError) -> OutputError:
    return OutputError(f"cannot write {path}: {e.strerror or type(e).__name__}")


def _stamp_png(tmp: Path) -> None:
    with open(tmp, "rb") as f:
        if f.read(len(PNG_SIGNATURE)) != PNG_SIGNATURE:
            return
    data = tmp.read_bytes()
    if not data.startswith(PNG_SIGNATURE) or b"tEXt" + PNG_KEYWORD + b"\x00" in data[:4096] or len(data) < 33:
        return
    body = PNG_KEYWORD + b"\x00" + f"{FORMAT}/{VERSION}".encode()
    chunk = len(body).to_bytes(4, "big") + b"tEXt" + body + zlib.crc32(b"tEXt" + body).to_bytes(4, "big")
    tmp.write_bytes(data[:33] + chunk + data[33:])   # right after IHDR (8 + 25 bytes)


@contextmanager
def atomic_path(path, kind=None, force: bool = False):
    """Yield a temporary path next to ``path``; it replaces ``path`` only on success.
    PNGs written through it are stamped as snncc's (see :data:`PNG_KEYWORD`)."""
    path = Path(path)
    check_output(path, kind, force)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        clean_stale(path)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.{os.getpid()}.", suffix=".tmp", dir=path.parent)
        os.close(fd)
    except OSError as e:
        raise _oserror(path, e) from None
    tmp = Path(tmp)
    try:
        try:
            yield tmp
        except OSError as e:
            if e.filename and str(tmp) in str(e.filename):
                raise _oserror(path, e) from None
            raise
        try:
            _stamp_png(tmp)   # any PNG, whatever its name: recognised as snncc's next time
            os.chmod(tmp, 0o666 & ~_umask())  # mkstemp creates 0600; give the file normal permissions
            os.replace(tmp, path)
        except OSError as e:
            raise _oserror(path, e) from None
    finally:
        if os.path.lexists(tmp):
            os.unlink(tmp)


def write_bytes(path, data: bytes, kind=None, force: bool = False) -> None:
    with atomic_path(path, kind, force) as tmp:
        tmp.write_bytes(data)


def write_text(path, text: str, kind=None, force: bool = False) -> None:
    write_bytes(path, text.encode(), kind, force)


def stamp(obj, kind: str = "json"):
    """``obj`` with the snncc stamp (a dict gets an ``snncc`` key), so a later write recognises it."""
    if isinstance(obj, dict) and "snncc" not in obj:
        return {**obj, "snncc": {"format": FORMAT, "version": VERSION, "kind": kind}}
    return obj


def write_json(path, obj, kind=None, force: bool = False) -> None:
    if kind == "json":
        obj = stamp(obj)
    write_text(path, json.dumps(obj, indent=2) + "\n", kind, force)


def _write_marker(folder: Path, kind) -> None:
    (folder / MARKER).write_text(json.dumps({"format": FORMAT, "version": VERSION, "kind": kind}) + "\n")


def _aside(path: Path) -> Path:
    n = 1
    while (path.parent / f"{path.name}.orig-{n}").exists():
        n += 1
    return path.parent / f"{path.name}.orig-{n}"


@contextmanager
def atomic_dir(path, kind=None, force: bool = False):
    """Yield a temporary directory next to ``path``; on success it replaces ``path`` as a whole.
    An existing ``path`` must be an empty folder or snncc's ``kind`` output (else OutputError,
    or with ``force`` it is moved aside to ``<name>.orig-N``, never deleted)."""
    path = Path(path)
    check_output(path, kind, force, is_dir=True)
    foreign = (path.exists() or path.is_symlink()) and (not path.is_dir() or path.is_symlink()
                                                          or (any(path.iterdir()) and not is_snncc_output(path, kind)))
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        clean_stale(path)
        tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.{os.getpid()}.", suffix=".tmp", dir=path.parent))
    except OSError as e:
        raise _oserror(path, e) from None
    try:
        try:
            yield tmp
        except OSError as e:
            if e.filename and str(tmp) in str(e.filename):
                inside = path / os.path.relpath(e.filename, tmp)   # the user's name for the file
                raise OutputError(f"cannot write {inside}: {e.strerror or type(e).__name__}") from None
            raise
        try:
            _write_marker(tmp, kind)
            os.chmod(tmp, 0o777 & ~_umask())
            old = None
            if foreign:
                os.replace(path, _aside(path))
            elif path.exists() or path.is_symlink():
                old = path.parent / f".{path.name}.old.{os.getpid()}"
                os.replace(path, old)
            os.replace(tmp, path)
            if old is not None:
                shutil.rmtree(old, ignore_errors=True)
        except OSError as e:
            raise _oserror(path, e) from None
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


@contextmanager
def output_dir(path, kind, force: bool = False):
    """:func:`prepare_dir` for the duration of a command: if the command fails and the folder it
    created holds nothing but the marker, the folder is removed again (nothing half-written)."""
    path = Path(path)
    existed = path.exists() or path.is_symlink()
    prepare_dir(path, kind, force)
    try:
        yield path
    except BaseException:
        if not existed and path.is_dir() and [p.name for p in path.iterdir()] == [MARKER]:
            shutil.rmtree(path, ignore_errors=True)
        raise


def prepare_dir(path, kind, force: bool = False) -> Path:
    """A folder a command fills file by file: created if missing and marked as snncc's ``kind``
    output; an existing one must be empty or already that (else OutputError; ``force`` writes
    into it anyway, deleting nothing; a file in its place is replaced only with ``force``)."""
    path = Path(path)
    check_output(path, kind, force, is_dir=True)
    try:
        if (path.exists() or path.is_symlink()) and not path.is_dir():  # only with force
            path.unlink()
        path.mkdir(parents=True, exist_ok=True)
        if not any(path.iterdir()):   # a folder forced into keeps no marker: a later write must not claim it
            _write_marker(path, kind)
    except OSError as e:
        raise _oserror(path, e) from None
    return path


def move_aside_foreign(path, kind) -> Path | None:
    """With --force: move an existing ``path`` that is not snncc's ``kind`` folder (nor empty) to
    ``<name>.orig-N`` so that a later ``atomic_dir(path, kind)`` can take its place; returns where."""
    path = Path(path)
    if not (path.exists() or path.is_symlink()):
        return None
    if path.is_dir() and not path.is_symlink() and (not any(path.iterdir()) or is_snncc_output(path, kind)):
        return None
    dest = _aside(path)
    try:
        os.replace(path, dest)
    except OSError as e:
        raise _oserror(path, e) from None
    return dest
