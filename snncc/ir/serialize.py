"""Spike graphs as ONNX files (``*.snn.onnx``).

Every node becomes an ONNX node in the custom domain ``ai.snncc`` whose op_type
is the op's class name; array fields are initializers (``<node>.<field>``) wired
as extra node inputs so Netron shows them; scalar fields are attributes. Edge
kinds map to element types (SPIKE=bool, COUNT=int32, ANALOG=float) in
value_info, and the inferred types are also stored as JSON and re-checked on
load. Delayed (recurrent) inputs would make the ONNX graph cyclic, so the full
port list lives in the ``snncc_inputs``/``snncc_delays`` attributes and only
same-step inputs are ONNX inputs. ``onnx.checker`` accepts the result.
"""
from __future__ import annotations

import dataclasses
import json
import math
import os

import numpy as np
import onnx
from google.protobuf.message import DecodeError
from onnx import TensorProto, helper, numpy_helper

from snncc import fileio
from snncc.ir import schema
from snncc.ir.graph import MAX_DELAY, Port, SpikeGraph
from snncc.ir.ops import OP_BY_NAME
from snncc.ir.types import GraphError, Kind, TensorType
from snncc.neuron import NeuronParams

DOMAIN = "ai.snncc"
FORMAT_VERSION = "1"
_ELEM = {Kind.SPIKE: TensorProto.BOOL, Kind.COUNT: TensorProto.INT32, Kind.ANALOG: TensorProto.FLOAT}


class SerializeError(ValueError):
    """The file is not a readable, consistent snncc spike graph (the one error :func:`load` raises)."""


# -- writing ------------------------------------------------------------------
def _attrs_and_arrays(name, op):
    attrs, arrays = {}, {}
    for f in dataclasses.fields(op):
        value = getattr(op, f.name)
        if isinstance(value, np.ndarray):
            arrays[f.name] = value
        elif isinstance(value, NeuronParams):
            attrs.update({f"{f.name}.{k}": _exact(v) for k, v in value.as_dict().items()})
        elif value is None:
            continue
        elif isinstance(value, tuple):
            attrs[f.name] = [int(v) for v in value]
        else:
            attrs[f.name] = _exact(value)
    return attrs, arrays


def _exact(value):
    """ONNX float attributes are 32-bit; store floats as 0-d double tensors so -0.2 stays -0.2."""
    return numpy_helper.from_array(np.array(value, dtype=np.float64)) if isinstance(value, float) else value


def _compact(arr) -> np.ndarray:
    """float32 when that is lossless (weights trained in float32), else float64: round trips are exact."""
    arr = np.asarray(arr, dtype=np.float64)
    small = arr.astype(np.float32)
    return small if np.array_equal(small, arr) else arr


def _value_info(name, t: TensorType):
    return helper.make_tensor_value_info(name, _ELEM[t.kind], ["N", *t.shape])


def to_onnx(graph: SpikeGraph) -> onnx.ModelProto:
    types = graph.infer()
    nodes, inits = [], []
    graph_inputs = []
    for n in graph.order():
        op = graph.op(n)
        attrs, arrays = _attrs_and_arrays(n, op)
        ports = graph.inputs(n)
        onnx_inputs = [p.src for p in ports if p.delay == 0]
        if not ports and type(op).__name__ == "Input":
            onnx_inputs = [f"{n}:data"]
            graph_inputs.append(_value_info(f"{n}:data", types[n]))
        for field_name, arr in arrays.items():
            inits.append(numpy_helper.from_array(_compact(arr), f"{n}.{field_name}"))
            onnx_inputs.append(f"{n}.{field_name}")
        nodes.append(helper.make_node(
            type(op).__name__, onnx_inputs, [n], name=n, domain=DOMAIN,
            snncc_inputs=[p.src for p in ports] or [""], snncc_delays=[p.delay for p in ports] or [0],
            snncc_arrays=list(arrays) or [""], **attrs))
    outputs = [_value_info(n, types[n]) for n in graph.output_nodes]
    value_info = [_value_info(n, types[n]) for n in graph.order() if n not in graph.output_nodes]
    g = helper.make_graph(nodes, graph.name, graph_inputs, outputs, initializer=inits, value_info=value_info)
    model = helper.make_model(g, producer_name="snncc", opset_imports=[helper.make_opsetid(DOMAIN, 1)])
    meta = {"snncc.format_version": FORMAT_VERSION, "snncc.metadata": json.dumps(graph.metadata),
            "snncc.types": json.dumps({n: [t.kind.value, list(t.shape)] for n, t in types.items()})}
    helper.set_model_props(model, meta)
    onnx.checker.check_model(model)
    return model


def save(graph: SpikeGraph, path, force: bool = False) -> None:
    """Write ``graph`` to ``path`` atomically; an existing file is replaced only if it is a snncc graph
    (or ``force``): see :mod:`snncc.fileio`."""
    fileio.write_bytes(path, to_onnx(graph).SerializeToString(), kind="graph", force=force)


# -- reading ------------------------------------------------------------------
# Every field of the file goes through snncc.ir.schema before it is used; see that module for the bounds.
def _op_from_node(node, initializers, used):
    """(op, [Port]) of one ONNX node, or a SchemaError naming the node and field."""
    name = node.name
    cls = OP_BY_NAME.get(node.op_type)
    if node.domain != DOMAIN or cls is None:
        raise SerializeError(f"node {name!r}: unknown op {node.domain or 'ai.onnx'}::{node.op_type[:60]}")
    fields = schema.op_fields(cls)
    attrs = {}
    for a in node.attribute:
        if a.name in attrs:
            raise schema.SchemaError(f"node {name!r}: attribute {a.name[:60]!r} given twice")
        attrs[a.name] = a
    srcs = schema.attr_strings(attrs.pop("snncc_inputs"), f"node {name!r} snncc_inputs") \
        if "snncc_inputs" in attrs else []
    delays = schema.attr_ints(attrs.pop("snncc_delays"), f"node {name!r} snncc_delays") \
        if "snncc_delays" in attrs else []
    arrays = schema.attr_strings(attrs.pop("snncc_arrays"), f"node {name!r} snncc_arrays") \
        if "snncc_arrays" in attrs else []
    srcs, delays, arrays = ([v for v in lst if v != ""] for lst in (srcs, delays, arrays))
    if srcs == [] and delays == [0]:
        delays = []
    if len(srcs) != len(delays):
        raise schema.SchemaError(f"node {name!r}: snncc_inputs ({len(srcs)}) and snncc_delays ({len(delays)}) "
                                 f"differ in length")
    if any(not 0 <= d <= MAX_DELAY for d in delays):
        raise schema.SchemaError(f"node {name!r} snncc_delays: delays must be in 0..{MAX_DELAY}, got {delays[:8]}")
    kwargs, neuron = {}, {}
    for key, a in attrs.items():
        where = f"node {name!r} attribute {key[:60]!r}"
        if node.op_type == "Integrator" and key == "params.v_th":
            continue  # an integrator never fires: its threshold is +inf, whatever the file says
        if node.op_type in ("Neuron", "Integrator") and key.startswith("params."):
            spec = schema.NEURON_FIELDS.get(key[len("params."):])
            if spec is None:
                raise schema.SchemaError(f"{where}: unknown neuron parameter")
            neuron[key[len("params."):]] = schema.decode_attr(a, spec, where)
            continue
        spec = fields.get(key)
        if spec is None or isinstance(spec, schema.Array):
            raise schema.SchemaError(f"{where}: not a field of {node.op_type}")
        kwargs[key] = schema.decode_attr(a, spec, where)
        if key == "shape" and math.prod(kwargs[key]) > schema.MAX_TENSOR_ELEMENTS:
            raise schema.SchemaError(f"{where}: {math.prod(kwargs[key])} elements per sample (at most "
                                     f"{schema.MAX_TENSOR_ELEMENTS})")
    if node.op_type == "Integrator":
        neuron["v_th"] = float("inf")
    if node.op_type in ("Neuron", "Integrator") and neuron:
        try:
            kwargs["params"] = NeuronParams(**neuron)
        except (TypeError, ValueError) as e:
            raise schema.SchemaError(f"node {name!r}: bad neuron parameters ({e})") from None
    expected_inputs = [s for s, d in zip(srcs, delays) if d == 0]
    if node.op_type == "Input" and not srcs:
        expected_inputs = [f"{name}:data"]
    if len(set(arrays)) != len(arrays):
        raise schema.SchemaError(f"node {name!r} snncc_arrays: a field is listed twice")
    for field_name in arrays:
        spec = fields.get(field_name)
        if not isinstance(spec, schema.Array):
            raise schema.SchemaError(f"node {name!r} snncc_arrays: {field_name[:60]!r} is not an array field of "
                                     f"{node.op_type}")
        key = f"{name}.{field_name}"
        if key not in initializers:
            raise schema.SchemaError(f"node {name!r}: missing initializer {key!r}")
        used.add(key)
        kwargs[field_name] = schema.check_array(
            schema.decode_tensor(initializers[key], f"node {name!r} initializer {key!r}"), spec,
            f"node {name!r} field {field_name!r}")
        expected_inputs.append(key)
    missing = schema.required_fields(cls) - set(kwargs)
    if missing:
        raise schema.SchemaError(f"node {name!r}: {node.op_type} needs field(s) {', '.join(sorted(missing))}")
    if list(node.input) != expected_inputs:
        raise schema.SchemaError(f"node {name!r}: ONNX inputs {list(node.input)[:8]} do not match its ports and "
                                 f"arrays {expected_inputs[:8]}")
    if list(node.output) != [name]:
        raise schema.SchemaError(f"node {name!r}: ONNX outputs must be [{name!r}]")
    try:
        op = cls(**kwargs)
    except (TypeError, ValueError) as e:
        raise schema.SchemaError(f"node {name!r}: bad {node.op_type} attributes ({e})") from None
    return op, [Port(s, d) for s, d in zip(srcs, delays)]


def _check_sizes(graph: SpikeGraph, types) -> None:
    for n, t in types.items():
        if any(d < 1 or d > schema.MAX_DIM * schema.MAX_KERNEL for d in t.shape) \
                or t.size > schema.MAX_TENSOR_ELEMENTS:
            raise schema.SchemaError(f"node {n!r}: output shape {list(t.shape)[:8]} exceeds "
                                     f"{schema.MAX_TENSOR_ELEMENTS} elements per sample")


def from_onnx(model: onnx.ModelProto) -> SpikeGraph:
    """The spike graph a model holds; any schema violation raises SerializeError naming node and field."""
    try:
        return _from_onnx(model)
    except SerializeError:
        raise
    except (schema.SchemaError, GraphError) as e:
        raise SerializeError(str(e)) from None
    except (ZeroDivisionError, IndexError, ValueError, TypeError, OverflowError, KeyError, RecursionError) as e:
        # a check above missed a case: still the file's fault, never a traceback
        raise SerializeError(f"inconsistent spike graph ({type(e).__name__}: {str(e)[:120]})") from None


def _from_onnx(model: onnx.ModelProto) -> SpikeGraph:
    props = {}
    for p in model.metadata_props:
        if p.key in props:
            raise schema.SchemaError(f"metadata key {p.key[:60]!r} given twice")
        props[p.key] = p.value
    if props.get("snncc.format_version") != FORMAT_VERSION:
        raise SerializeError("not an snncc spike graph (missing or unsupported snncc.format_version)")
    unknown = set(props) - {"snncc.format_version", "snncc.metadata", "snncc.types"}
    if unknown:
        raise schema.SchemaError(f"unknown metadata key {sorted(unknown)[0][:60]!r}")
    g = model.graph
    if not 1 <= len(g.node) <= schema.MAX_NODES:
        raise schema.SchemaError(f"graph has {len(g.node)} nodes (1..{schema.MAX_NODES} allowed)")
    initializers = {}
    for t in g.initializer:
        if t.name in initializers:
            raise schema.SchemaError(f"initializer {t.name[:60]!r} given twice")
        initializers[t.name] = t
    if len(g.sparse_initializer):
        raise schema.SchemaError("sparse initializers are not allowed")
    meta = schema.check_metadata(schema.parse_json_object(props.get("snncc.metadata", "{}"), "metadata"))
    stored = schema.parse_json_object(props.get("snncc.types", "{}"), "snncc.types")
    graph = SpikeGraph(g.name, meta)
    pending, used = [], set()
    for node in g.node:
        if not node.name or len(node.name) > schema.MAX_NAME:
            raise schema.SchemaError(f"node {node.name[:60]!r}: a node name must have 1..{schema.MAX_NAME} "
                                     f"characters")
        op, ports = _op_from_node(node, initializers, used)
        graph.add(node.name, op)
        pending.append((node.name, ports))
    unused = set(initializers) - used
    if unused:
        raise schema.SchemaError(f"initializer {sorted(unused)[0][:60]!r} belongs to no node field")
    for name, ports in pending:
        for p in ports:
            graph.connect(p.src, name, p.delay)
    types = graph.infer()
    _check_sizes(graph, types)
    if set(stored) != set(types):
        extra = sorted(set(stored) ^ set(types))[0]
        raise schema.SchemaError(f"node {extra[:60]!r}: snncc.types and the graph's nodes differ")
    for n, t in types.items():
        if stored.get(n) != [t.kind.value, list(t.shape)]:
            raise schema.SchemaError(f"node {n!r}: stored type {str(stored.get(n))[:80]} disagrees with "
                                     f"inferred {t}")
    return graph


MAX_FILE_BYTES = 1 << 31   # protobuf's own limit


def load(path) -> SpikeGraph:
    """Read and validate a spike-graph file. Every problem with the file is a SerializeError naming ``path``."""
    try:
        size = os.path.getsize(path)
        if size > MAX_FILE_BYTES:
            raise SerializeError(f"{path}: {size} bytes is larger than any ONNX file can be")
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise SerializeError(f"cannot read spike graph {path}: {e.strerror}") from None
    return loads(data, path)


def loads(data: bytes, path="<bytes>") -> SpikeGraph:
    """:func:`load` of a file's bytes; ``path`` names the file in messages."""
    try:
        model = onnx.ModelProto()
        model.ParseFromString(data)
    except (DecodeError, ValueError, RuntimeError, RecursionError, UnicodeDecodeError) as e:
        raise SerializeError(f"{path}: corrupt or truncated ONNX file ({type(e).__name__})") from None
    try:
        graph = from_onnx(model)
    except SerializeError as e:
        raise SerializeError(f"{path}: {e}") from None
    try:
        onnx.checker.check_model(model)
    except Exception as e:  # noqa: BLE001 -- the checker's own failures (ValidationError, UnicodeDecodeError, ...)
        msg = str(e).strip().splitlines()[0][:160] if str(e).strip() else type(e).__name__
        raise SerializeError(f"{path}: invalid ONNX ({msg})") from None
    return graph
