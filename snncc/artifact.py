"""Compiled artifacts: one folder per compile, one compile path for every target.

``snncc compile --target NAME`` (and :func:`compile_artifact`) runs the pipeline of
:func:`snncc.runtime.lower` with ``deploy=True`` (the graph must be fully spiking) and writes,
atomically::

    graph.snn.onnx   the validated graph
    <target file>    the backend's ``target_file``: target.json (torch, numba) or lava.json (lava).
                     A header -- {"artifact": "snncc", "format_version": 1, "target": NAME,
                     "options": {the backend's Options}} -- plus what ``Backend.save`` describes
    summary.txt      the graph summary (and the backend's program summary)
    ...              files a backend adds (Lava with --netx: model.net)

:func:`read_artifact` refuses, with one line naming the file and the field: a folder without
a target file (it is never run on another backend), a corrupt or foreign target file, a
missing or unknown header field, an unknown format version or target, options the backend
does not have or of the wrong type, and whatever ``Backend.check_target`` refuses (missing or
unknown backend fields, a bogus precision).
"""
from __future__ import annotations

import json
from dataclasses import asdict, fields
from pathlib import Path

from snncc.backends.base import LoweringError, Program
from snncc.fileio import atomic_dir
from snncc.ir import serialize
from snncc.runtime import BACKENDS, get_backend, lower

MARKER = "snncc"
FORMAT_VERSION = 1
HEADER = ("artifact", "format_version", "target", "options")
GRAPH_FILE = "graph.snn.onnx"


class ArtifactError(LoweringError):
    """A compiled artifact folder that cannot be used; the message names the path and field."""


def target_files() -> list:
    return sorted({f for _, f in BACKENDS.values()})


def compile_artifact(graph, backend, options, out_dir) -> Path:
    """Validate and lower ``graph`` for ``backend`` (a name or Backend), then write ``out_dir``."""
    backend = get_backend(backend)
    options = options if options is not None else backend.Options()
    program = lower(graph, backend, options, deploy=True)
    header = {"artifact": MARKER, "format_version": FORMAT_VERSION, "target": backend.name,
              "options": asdict(options)}
    with atomic_dir(out_dir, kind=backend.name) as tmp:
        body, text = backend.save(program, tmp)
        serialize.save(graph, tmp / GRAPH_FILE)
        (tmp / backend.target_file).write_text(json.dumps(header | body, indent=1) + "\n")
        (tmp / "summary.txt").write_text(text)
    return Path(out_dir)


def _options(backend, raw, path):
    if not isinstance(raw, dict):
        raise ArtifactError(f"{path}: field 'options' is not an object")
    known = {f.name: f for f in fields(backend.Options)}
    for key in sorted(set(raw) - set(known)):
        raise ArtifactError(f"{path}: unknown field 'options.{key}' (target {backend.name})")
    for key in sorted(set(known) - set(raw)):
        raise ArtifactError(f"{path}: missing field 'options.{key}'")
    defaults = asdict(backend.Options())
    for key, value in raw.items():
        if type(value) is not type(defaults[key]):
            raise ArtifactError(f"{path}: field 'options.{key}' is {value!r}, not a {type(defaults[key]).__name__}")
    return backend.Options(**raw)


def read_artifact(path, expect: str | None = None, lowered: bool = False) -> Program:
    """The Program an artifact folder describes (``lowered``: with its plan, through the same
    pipeline as compile; else plan None). ``expect``: refuse an artifact of another target."""
    d = Path(path)
    if not d.is_dir():
        raise ArtifactError(f"{d}: not a compiled artifact directory")
    found = [f for f in target_files() if (d / f).is_file()]
    if not found:
        raise ArtifactError(f"{d}: no target file ({' or '.join(target_files())}): not a compiled snncc artifact")
    if len(found) > 1:
        raise ArtifactError(f"{d}: several target files ({', '.join(found)}): which target is it?")
    tpath = d / found[0]
    if not (d / GRAPH_FILE).is_file():
        raise ArtifactError(f"{d}: missing {GRAPH_FILE} (not a complete artifact)")
    try:
        cfg = json.loads(tpath.read_text())
    except (OSError, ValueError) as e:
        raise ArtifactError(f"{tpath}: corrupt ({type(e).__name__})") from None
    if not isinstance(cfg, dict):
        raise ArtifactError(f"{tpath}: corrupt (not a JSON object)")
    for key in HEADER:
        if key not in cfg:
            raise ArtifactError(f"{tpath}: missing field {key!r} (not a snncc artifact of format {FORMAT_VERSION})")
    if cfg["artifact"] != MARKER:
        raise ArtifactError(f"{tpath}: field 'artifact' is {cfg['artifact']!r}, not {MARKER!r}")
    if cfg["format_version"] != FORMAT_VERSION:
        raise ArtifactError(f"{tpath}: field 'format_version' is {cfg['format_version']!r}; "
                            f"this snncc reads version {FORMAT_VERSION}")
    target = cfg["target"]
    if not isinstance(target, str) or target not in BACKENDS or BACKENDS[target][1] != found[0]:
        raise ArtifactError(f"{tpath}: field 'target' is {target!r}, not a target whose file is {found[0]}")
    if expect is not None and target != expect:
        raise ArtifactError(f"{d}: a {target} artifact, not a {expect} one")
    backend = get_backend(target)
    options = _options(backend, cfg["options"], tpath)
    try:
        backend.check_target({k: v for k, v in cfg.items() if k not in HEADER}, options, tpath)
    except LoweringError as e:
        raise ArtifactError(str(e)) from None
    try:
        graph = serialize.load(d / GRAPH_FILE)
    except serialize.SerializeError as e:
        raise ArtifactError(str(e).splitlines()[0]) from None
    if lowered:
        program = lower(graph, backend, options, deploy=True)
        program.config = cfg
        return program
    return Program(target, graph, options, config=cfg)
