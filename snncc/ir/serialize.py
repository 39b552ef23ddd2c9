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

import numpy as np
import onnx
from google.protobuf.message import DecodeError
from onnx import TensorProto, helper, numpy_helper

from snncc import fileio
from snncc.ir.graph import Port, SpikeGraph
from snncc.ir.ops import OP_BY_NAME
from snncc.ir.types import GraphError, Kind, TensorType
from snncc.neuron import NeuronParams

DOMAIN = "ai.snncc"
FORMAT_VERSION = "1"
_ELEM = {Kind.SPIKE: TensorProto.BOOL, Kind.COUNT: TensorProto.INT32, Kind.ANALOG: TensorProto.FLOAT}
_RESERVED = ("snncc_inputs", "snncc_delays", "snncc_arrays")


class SerializeError(ValueError):
    """The file is not a readable, consistent snncc spike graph."""


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


def save(graph: SpikeGraph, path) -> None:
    fileio.write_bytes(path, to_onnx(graph).SerializeToString())


# -- reading ------------------------------------------------------------------
def _op_from_node(node, arrays_by_name):
    cls = OP_BY_NAME.get(node.op_type)
    if node.domain != DOMAIN or cls is None:
        raise SerializeError(f"node {node.name!r}: unknown op {node.domain or 'ai.onnx'}::{node.op_type}")
    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    kwargs, neuron = {}, {}
    for key, value in attrs.items():
        if key in _RESERVED:
            continue
        value = value.decode() if isinstance(value, bytes) else value
        value = float(numpy_helper.to_array(value)) if isinstance(value, TensorProto) else value
        if "." in key:
            neuron[key.split(".", 1)[1]] = value
        else:
            kwargs[key] = tuple(value) if isinstance(value, list) else value
    if neuron:
        kwargs["params"] = NeuronParams(**neuron)
    for field_name in attrs.get("snncc_arrays", []):
        field_name = field_name.decode()
        if field_name:
            key = f"{node.name}.{field_name}"
            if key not in arrays_by_name:
                raise SerializeError(f"node {node.name!r}: missing initializer {key!r}")
            kwargs[field_name] = arrays_by_name[key]
    try:
        return cls(**kwargs), attrs
    except (TypeError, ValueError) as e:
        raise SerializeError(f"node {node.name!r}: bad {node.op_type} attributes ({e})") from None


def from_onnx(model: onnx.ModelProto) -> SpikeGraph:
    props = {p.key: p.value for p in model.metadata_props}
    if props.get("snncc.format_version") != FORMAT_VERSION:
        raise SerializeError("not an snncc spike graph (missing or unsupported snncc.format_version)")
    arrays = {t.name: numpy_helper.to_array(t).astype(np.float64) for t in model.graph.initializer}
    graph = SpikeGraph(model.graph.name, json.loads(props.get("snncc.metadata", "{}")))
    pending = []
    for node in model.graph.node:
        op, attrs = _op_from_node(node, arrays)
        srcs = [s.decode() for s in attrs.get("snncc_inputs", [])]
        delays = list(attrs.get("snncc_delays", []))
        ports = [Port(s, d) for s, d in zip(srcs, delays) if s]
        graph.add(node.name, op)
        pending.append((node.name, ports))
    for name, ports in pending:
        for p in ports:
            graph.connect(p.src, name, p.delay)
    stored = json.loads(props.get("snncc.types", "{}"))
    for n, t in graph.infer().items():
        if stored.get(n) != [t.kind.value, list(t.shape)]:
            raise SerializeError(f"node {n!r}: stored type {stored.get(n)} disagrees with inferred {t}")
    return graph


def load(path) -> SpikeGraph:
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise SerializeError(f"cannot read spike graph {path}: {e.strerror}") from None
    try:
        model = onnx.load_from_string(data)
    except (DecodeError, ValueError, RuntimeError) as e:
        raise SerializeError(f"{path}: corrupt or truncated ONNX file ({type(e).__name__})") from None
    try:
        onnx.checker.check_model(model)
        return from_onnx(model)
    except onnx.checker.ValidationError as e:
        raise SerializeError(f"{path}: invalid ONNX ({str(e).splitlines()[0]})") from None
    except GraphError as e:
        raise SerializeError(f"{path}: {e}") from None
