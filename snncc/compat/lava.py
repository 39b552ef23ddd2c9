"""Make lava-nc 0.10.0 importable on Python >= 3.11 without touching site-packages.

lava/magma/compiler/var_model.py declares dataclass fields such as
``x: ByteEncoder = ByteEncoder()``. Since 3.11, dataclasses reject any
unhashable default (a dataclass instance with eq=True has __hash__ = None),
so importing anything from lava fails. We intercept exactly that one module
and rewrite those defaults to ``field(default_factory=ByteEncoder)``.
"""
from __future__ import annotations

import contextlib
import importlib.abc
import importlib.machinery
import importlib.util
import multiprocessing
import re
import sys
import types

TARGET = "lava.magma.compiler.var_model"
# Measured (tests/test_lava_compat.py): a spike entering a float Dense at step t
# reaches the next LIF at step t+1 (Dense sends last step's buffer first).
LAVA_DENSE_DELAY = 1
# `name: ByteEncoder = ByteEncoder()` on a single line, keeping indentation.
_DEFAULT_RE = re.compile(r"^([ \t]+\w+[ \t]*:[ \t]*ByteEncoder[ \t]*)=[ \t]*ByteEncoder\(\)[ \t]*$", re.M)
_DC_IMPORT_RE = re.compile(r"^from dataclasses import ([\w ,]+)$", re.M)


class LavaUnavailable(RuntimeError):
    """lava-nc is missing or cannot be imported."""


def rewrite_source(src: str) -> str:
    """Return src with `= ByteEncoder()` field defaults made default_factory."""
    new, n = _DEFAULT_RE.subn(r"\1= field(default_factory=ByteEncoder)", src)
    if n == 0:
        return src
    m = _DC_IMPORT_RE.search(new)
    if m:  # extend the existing import in place so line numbers stay intact
        has = "field" in [s.strip() for s in m.group(1).split(",")]
        return new if has else new[: m.end()] + ", field" + new[m.end():]
    # Fallback: import after any __future__ imports (they must come first).
    fut = list(re.finditer(r"^from __future__ import .*$", new, re.M))
    at = fut[-1].end() + 1 if fut else 0
    return new[:at] + "from dataclasses import field\n" + new[at:]


class _PatchedLoader(importlib.machinery.SourceFileLoader):
    # Compile the rewritten source under the original filename (tracebacks stay
    # useful); skip the .pyc cache, which holds the unpatched code. dont_inherit:
    # don't leak this file's __future__ flags into lava's module.
    def get_code(self, fullname):
        src = rewrite_source(self.get_source(fullname))
        return compile(src, self.path, "exec", dont_inherit=True)


class _Finder(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname, path, target=None):
        if fullname != TARGET:
            return None
        spec = importlib.machinery.PathFinder.find_spec(fullname, path)
        if spec is None or not isinstance(spec.loader, importlib.machinery.SourceFileLoader):
            return None
        loader = _PatchedLoader(fullname, spec.origin)
        src = loader.get_source(fullname)
        if rewrite_source(src) == src:
            return None  # already fixed upstream: let the normal machinery load it
        return importlib.util.spec_from_file_location(fullname, spec.origin, loader=loader)


def install() -> None:
    """Install the import hook once; no-op before 3.11 (old dataclasses accept it)."""
    if sys.version_info < (3, 11) or any(isinstance(f, _Finder) for f in sys.meta_path):
        return
    sys.meta_path.insert(0, _Finder())


@contextlib.contextmanager
def _tolerant_start_method():
    """Lava calls multiprocessing.set_start_method('fork') at import, which raises if anything
    (tqdm's lock, a DataLoader) already fixed the context -- even to 'fork'. Accept that case."""
    original = multiprocessing.set_start_method

    def set_start_method(method, force=False):
        current = multiprocessing.get_start_method(allow_none=True)
        if current is not None and current != method and not force:
            raise LavaUnavailable(f"Lava needs the {method!r} multiprocessing start method, "
                                  f"but {current!r} is already in use")
        if current is None or force:
            original(method, force=force)

    multiprocessing.set_start_method = set_start_method
    try:
        yield
    finally:
        multiprocessing.set_start_method = original


def import_lava() -> types.SimpleNamespace:
    """Install the shim and return the Lava classes snncc uses."""
    install()
    try:
        with _tolerant_start_method():
            import lava.magma.runtime.message_infrastructure.multiprocessing  # noqa: F401
    except ImportError:
        pass  # reported below with the full import list
    try:
        from lava.magma.core.run_conditions import RunSteps
        from lava.magma.core.run_configs import Loihi2SimCfg
        from lava.proc.dense.process import Dense
        from lava.proc.io.sink import RingBuffer as SinkRingBuffer
        from lava.proc.io.source import RingBuffer as SourceRingBuffer
        from lava.proc.lif.process import LIF
    except ImportError as e:
        raise LavaUnavailable(f"lava-nc is not importable ({e}); pip install lava-nc") from e
    return types.SimpleNamespace(LIF=LIF, Dense=Dense, SourceRingBuffer=SourceRingBuffer,
        SinkRingBuffer=SinkRingBuffer, Loihi2SimCfg=Loihi2SimCfg, RunSteps=RunSteps)
