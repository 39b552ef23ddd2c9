"""The schema of a ``*.snn.onnx`` file, checked field by field before anything is built from it.

:func:`snncc.ir.serialize.from_onnx` reads a file only through these checks, so a
hostile or broken file ends in one :class:`SchemaError` (the loader turns it into
``SerializeError``) naming the node and field, never in another exception, a long
decode or an oversized allocation. What is checked:

* **Initializers** (array fields, named ``<node>.<field>``): data type FLOAT or
  DOUBLE only (what the writer emits; INT4, strings etc. are refused before any
  decode), no external data and no segments, dims non-negative with at most
  :data:`MAX_ARRAY_ELEMENTS` elements, a payload of exactly the declared size,
  every value finite and ``|v| <= MAX_ABS_VALUE``; the rank each field needs.
* **Attributes** (scalar fields): the ONNX attribute type each field needs
  (INTS of a fixed length and range, an INT in a range, a STRING from a fixed set and valid UTF-8, a
  finite float as FLOAT/INT or a one-element FLOAT/DOUBLE tensor), no unknown
  attribute, every required field present.
* **Neuron parameters** (``params.<name>``): the fields of :class:`snncc.neuron.NeuronParams`
  (``decay_input`` an INT 0 or 1; absent in files written before it existed, which read as
  the default, 1), typed as above, and that class's own checks.
* **Ports**: ``snncc_inputs`` (STRINGS) and ``snncc_delays`` (INTS in 0..MAX_DELAY steps) of
  equal length, ``snncc_arrays`` naming array fields of the op.
* **Metadata** (``snncc.metadata``): a JSON object of at most
  :data:`MAX_JSON_BYTES`, nested at most :data:`MAX_JSON_DEPTH` deep, no NaN or
  Infinity; the keys snncc reads are typed (``timesteps`` an int in
  1..:data:`MAX_TIMESTEPS`, ``dataset`` a string, ...). ``snncc.types``: a JSON
  object ``{node: [kind, shape]}``.
* **Graph size**: at most :data:`MAX_NODES` nodes, per-sample tensors of at most
  :data:`MAX_TENSOR_ELEMENTS` elements, dims at most :data:`MAX_DIM`.

The bounds are far above any network snncc trains (a ResNet-18 at 32x32 has ~60
nodes and its largest per-sample tensor has 65,536 elements) and low enough that a
file passing them can be simulated without exhausting memory per sample.
"""
from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
from onnx import AttributeProto, TensorProto

MAX_TIMESTEPS = 100_000          # metadata `timesteps` and every --timesteps
MAX_NODES = 10_000
MAX_DIM = 1 << 16                # any one dimension of an input shape, kernel or array
MAX_KERNEL = 1024                # conv/pool kernel sides, strides and paddings
MAX_ARRAY_ELEMENTS = 1 << 27     # one initializer (1 GiB as float64)
MAX_TENSOR_ELEMENTS = 1 << 24    # one node's per-sample output
MAX_ABS_VALUE = 1e30             # weights, biases, neuron parameters
MAX_JSON_BYTES = 1 << 20
MAX_JSON_DEPTH = 16
MAX_NAME = 256

_FLOAT_TYPES = {TensorProto.FLOAT: "<f4", TensorProto.DOUBLE: "<f8"}


class SchemaError(ValueError):
    """One violation of the file schema; the message names the node and field."""


# -- field specs ---------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Ints:
    length: int | None
    lo: int
    hi: int
    min_len: int = 1


@dataclasses.dataclass(frozen=True)
class Int:
    lo: int
    hi: int


@dataclasses.dataclass(frozen=True)
class Str:
    choices: tuple


@dataclasses.dataclass(frozen=True)
class Float:
    pass


@dataclasses.dataclass(frozen=True)
class Bool:
    pass


@dataclasses.dataclass(frozen=True)
class Array:
    rank: int | None  # None: any rank from 1 to MAX_ARRAY_RANK


_PAIR_POS = Ints(2, 1, MAX_KERNEL)
_PAIR_NONNEG = Ints(2, 0, MAX_KERNEL)
OP_FIELDS = {
    "Input": {"shape": Ints(None, 1, MAX_DIM, min_len=1), "encoding": Str(("direct", "spike")),
              "mean": Array(1), "std": Array(1)},
    "Dense": {"weight": Array(2), "bias": Array(1)},
    "Conv": {"weight": Array(4), "bias": Array(1), "stride": _PAIR_POS, "padding": _PAIR_NONNEG,
             "dilation": _PAIR_POS, "groups": Int(1, MAX_DIM)},  # both optional: older files have neither
    "Pool": {"mode": Str(("max", "avg", "sum")), "kernel": _PAIR_POS, "stride": _PAIR_POS, "padding": _PAIR_NONNEG},
    "Flatten": {},
    # params.* attributes: NEURON_FIELDS; per-neuron arrays (heterogeneous populations, e.g. from NIR)
    "Neuron": {"tau": Array(None), "v_th": Array(None), "v_reset": Array(None), "tau_syn": Array(None)},
    "Integrator": {},  # params.* attributes: NEURON_FIELDS
    "Add": {},
    "Readout": {"mode": Str(("count", "mean")), "population": Int(1, MAX_DIM)},  # population: optional (older files)
}
INPUT_MAX_RANK = 3
MAX_ARRAY_RANK = 4


def _derived_spec(cls, f):
    """The spec of a field of an op registered without an entry in OP_FIELDS, from its annotation."""
    import enum
    import typing
    hints = typing.get_type_hints(cls)
    t = hints.get(f.name)
    args = [a for a in typing.get_args(t) if a is not type(None)] or [t]
    t = args[0]
    if t is float:
        return Float()
    if t is int:
        return Int(0, MAX_DIM)
    if isinstance(t, type) and issubclass(t, enum.Enum):
        return Str(tuple(m.value for m in t))
    if t is np.ndarray:
        return Array(None)
    if t is tuple or typing.get_origin(t) is tuple:
        return Ints(None, 0, MAX_DIM)
    return None


def op_fields(cls) -> dict:
    """{field: spec} of an op class: its OP_FIELDS entry, or (an op registered elsewhere, e.g. by a plug-in or a
    test) specs derived from its dataclass annotations (float, enum, np.ndarray, tuple of ints). A field of any
    other type cannot be read back safely, so the op is refused (SchemaError naming it)."""
    if cls.__name__ in OP_FIELDS:
        return OP_FIELDS[cls.__name__]
    out = {}
    for f in dataclasses.fields(cls):
        spec = _derived_spec(cls, f)
        if spec is None:
            raise SchemaError(f"op {cls.__name__}: field {f.name!r} has a type the file reader cannot check")
        out[f.name] = spec
    return out
NEURON_FIELDS = {"model": Str(("lif", "if")), "tau": Float(), "v_th": Float(), "v_reset": Float(),
                 "tau_syn": Float(), "reset": Str(("hard", "soft")), "decay_input": Bool()}

# metadata keys snncc itself reads or writes; anything else is free-form (bounded) JSON
_META_INT = {"timesteps": (1, MAX_TIMESTEPS), "num_classes": (1, 1 << 20), "hidden": (1, MAX_TENSOR_ELEMENTS)}
_META_STR = ("dataset", "method", "model", "source", "task", "readout")
_META_NUM = ("width", "nir.dt")


def required_fields(cls) -> set:
    """Dataclass fields of an op without a default."""
    return {f.name for f in dataclasses.fields(cls)
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING}


# -- tensors -----------------------------------------------------------------------
def decode_tensor(t: TensorProto, where: str, max_elements: int = MAX_ARRAY_ELEMENTS) -> np.ndarray:
    """A FLOAT/DOUBLE tensor as a float64 array, refusing anything else before decoding it."""
    if t.data_type not in _FLOAT_TYPES:
        name = TensorProto.DataType.Name(t.data_type) if t.data_type in TensorProto.DataType.values() \
            else str(t.data_type)
        raise SchemaError(f"{where}: data type {name} (expected FLOAT or DOUBLE)")
    if t.data_location == TensorProto.EXTERNAL or len(t.external_data):
        raise SchemaError(f"{where}: external data is not allowed (snncc stores every array in the file)")
    if t.HasField("segment"):
        raise SchemaError(f"{where}: segmented tensors are not allowed")
    dims = list(t.dims)
    if len(dims) > 8 or any(d < 0 or d > max_elements for d in dims):
        raise SchemaError(f"{where}: bad dims {dims[:8]}")
    n = math.prod(dims)
    if n > max_elements:
        raise SchemaError(f"{where}: {n} elements (at most {max_elements})")
    dtype = np.dtype(_FLOAT_TYPES[t.data_type])
    if t.raw_data:
        if len(t.raw_data) != n * dtype.itemsize:
            raise SchemaError(f"{where}: {len(t.raw_data)} data bytes for dims {dims} of {dtype.name}")
        arr = np.frombuffer(t.raw_data, dtype=dtype)
    else:
        values = t.float_data if t.data_type == TensorProto.FLOAT else t.double_data
        if len(values) != n:
            raise SchemaError(f"{where}: {len(values)} values for dims {dims}")
        arr = np.asarray(values, dtype=dtype)
    others = (t.int32_data, t.int64_data, t.string_data, t.uint64_data,
              t.double_data if t.data_type == TensorProto.FLOAT else t.float_data)
    if any(len(o) for o in others) or (t.raw_data and (len(t.float_data) or len(t.double_data))):
        raise SchemaError(f"{where}: data stored in more than one field")
    arr = arr.astype(np.float64).reshape(dims)
    check_finite(arr, where)
    return arr


def check_finite(arr: np.ndarray, where: str) -> None:
    bad = ~np.isfinite(arr) | (np.abs(arr) > MAX_ABS_VALUE)
    if bad.any():
        v = arr.reshape(-1)[int(np.flatnonzero(bad.reshape(-1))[0])]
        raise SchemaError(f"{where}: non-finite or out-of-range value {v} (|v| must be finite and <= "
                          f"{MAX_ABS_VALUE:g})")


def check_array(arr: np.ndarray, spec: Array, where: str) -> np.ndarray:
    if spec.rank is None:
        if not 1 <= arr.ndim <= MAX_ARRAY_RANK:
            raise SchemaError(f"{where}: rank {arr.ndim} (expected 1..{MAX_ARRAY_RANK})")
    elif arr.ndim != spec.rank:
        raise SchemaError(f"{where}: rank {arr.ndim} (expected {spec.rank})")
    if any(d == 0 for d in arr.shape):
        raise SchemaError(f"{where}: empty dimension in shape {list(arr.shape)}")
    return arr


# -- attributes --------------------------------------------------------------------
def _utf8(b: bytes, where: str) -> str:
    try:
        return b.decode("utf-8")
    except UnicodeDecodeError:
        raise SchemaError(f"{where}: string is not valid UTF-8") from None


def attr_strings(a: AttributeProto, where: str) -> list[str]:
    if a.type != AttributeProto.STRINGS:
        raise SchemaError(f"{where}: expected a list of strings, got {AttributeProto.AttributeType.Name(a.type)}"
                          if a.type in AttributeProto.AttributeType.values() else f"{where}: bad attribute type")
    out = [_utf8(s, where) for s in a.strings]
    if any(len(s) > MAX_NAME for s in out):
        raise SchemaError(f"{where}: name longer than {MAX_NAME} characters")
    return out


def attr_ints(a: AttributeProto, where: str) -> list[int]:
    if a.type != AttributeProto.INTS:
        raise SchemaError(f"{where}: expected a list of ints, got {_type_name(a)}")
    return list(a.ints)


def _type_name(a: AttributeProto) -> str:
    return AttributeProto.AttributeType.Name(a.type) if a.type in AttributeProto.AttributeType.values() \
        else f"type {a.type}"


def decode_attr(a: AttributeProto, spec, where: str):
    """An attribute's value under its field spec."""
    if isinstance(spec, Ints):
        vals = attr_ints(a, where)
        if spec.length is not None and len(vals) != spec.length:
            raise SchemaError(f"{where}: expected {spec.length} ints, got {len(vals)}")
        if not spec.min_len <= len(vals) <= (spec.length or INPUT_MAX_RANK):
            raise SchemaError(f"{where}: expected {spec.min_len}..{spec.length or INPUT_MAX_RANK} ints, "
                              f"got {len(vals)}")
        if any(not spec.lo <= v <= spec.hi for v in vals):
            raise SchemaError(f"{where}: values {vals} outside {spec.lo}..{spec.hi}")
        return tuple(vals)
    if isinstance(spec, Int):
        if a.type != AttributeProto.INT:
            raise SchemaError(f"{where}: expected an int, got {_type_name(a)}")
        if not spec.lo <= a.i <= spec.hi:
            raise SchemaError(f"{where}: value {a.i} outside {spec.lo}..{spec.hi}")
        return int(a.i)
    if isinstance(spec, Str):
        if a.type != AttributeProto.STRING:
            raise SchemaError(f"{where}: expected a string, got {_type_name(a)}")
        s = _utf8(a.s, where)
        if s not in spec.choices:
            raise SchemaError(f"{where}: {s[:40]!r} is not one of {', '.join(spec.choices)}")
        return s
    if isinstance(spec, Float):
        if a.type == AttributeProto.FLOAT:
            v = float(a.f)
        elif a.type == AttributeProto.INT:
            v = float(a.i)
        elif a.type == AttributeProto.TENSOR:
            if any(d != 1 for d in a.t.dims):
                raise SchemaError(f"{where}: expected one number, got a tensor of dims {list(a.t.dims)[:8]}")
            arr = decode_tensor(a.t, where, max_elements=1)
            if arr.size != 1:
                raise SchemaError(f"{where}: expected one number, got a tensor of shape {list(arr.shape)}")
            v = float(arr.reshape(-1)[0])
        else:
            raise SchemaError(f"{where}: expected a number, got {_type_name(a)}")
        if not math.isfinite(v) or abs(v) > MAX_ABS_VALUE:
            raise SchemaError(f"{where}: non-finite or out-of-range value {v}")
        return v
    if isinstance(spec, Bool):
        if a.type != AttributeProto.INT or a.i not in (0, 1):
            raise SchemaError(f"{where}: expected an INT 0 or 1, got "
                              f"{a.i if a.type == AttributeProto.INT else _type_name(a)}")
        return bool(a.i)
    raise SchemaError(f"{where}: not a scalar field")  # pragma: no cover - an Array spec is an initializer


# -- JSON metadata ---------------------------------------------------------------------
def _reject_constant(name):
    raise ValueError(f"{name} is not allowed")


def parse_json_object(text: str, where: str) -> dict:
    """A bounded JSON object: size, nesting depth, finite numbers."""
    if len(text) > MAX_JSON_BYTES:
        raise SchemaError(f"{where}: {len(text)} characters (at most {MAX_JSON_BYTES})")
    depth = 0
    for ch in text:   # refuse deep nesting before the parser recurses (brackets inside strings only overcount)
        if ch in "[{":
            depth += 1
            if depth > MAX_JSON_DEPTH:
                raise SchemaError(f"{where}: JSON nested deeper than {MAX_JSON_DEPTH}")
        elif ch in "]}":
            depth -= 1
    try:
        obj = json.loads(text, parse_constant=_reject_constant)
    except (ValueError, RecursionError) as e:
        raise SchemaError(f"{where}: not valid JSON ({str(e).splitlines()[0][:80]})") from None
    if not isinstance(obj, dict):
        raise SchemaError(f"{where}: expected a JSON object, got {type(obj).__name__}")
    return obj


def check_metadata(meta: dict, where: str = "metadata") -> dict:
    """The keys snncc reads have their types; returns ``meta``."""
    for key, (lo, hi) in _META_INT.items():
        if key in meta:
            v = meta[key]
            if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
                raise SchemaError(f"{where} {key!r}: expected an integer in {lo}..{hi}, got {str(v)[:40]}")
    for key in _META_STR:
        if key in meta and not (isinstance(meta[key], str) and len(meta[key]) <= 4096):
            raise SchemaError(f"{where} {key!r}: expected a string, got {type(meta[key]).__name__}")
    for key in _META_NUM:
        if key in meta:
            v = meta[key]
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                raise SchemaError(f"{where} {key!r}: expected a finite number, got {str(v)[:40]}")
    return meta
