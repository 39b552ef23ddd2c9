"""Mutation fuzzing of the spike-graph loader (tests/test_ir_fuzz.py and scripts/fuzz_ir.py).

A mutant is a valid ``*.snn.onnx`` file (one of :func:`seed_files`: an MLP with input
normalisation, a CNN with conv/max/avg/sum pooling and a SEW ADD, a spike-encoded
RNN with a delayed edge) changed by one to three mutations drawn from a
:class:`Chooser`: byte-level (flip, insert, delete, truncate, splice) or
structure-level on the protobuf (attribute types and values, initializer dims,
data_type, raw_data, external data, metadata and types JSON, node inputs, names,
ports). The chooser is backed by ``random.Random`` in the script and by hypothesis'
``data.draw`` in the test, so failures shrink.

:func:`check` is the property: :func:`snncc.ir.serialize.loads` either raises
SerializeError, or returns a graph that validates and runs on the numba simulator
(2 samples, at most 4 steps); a project error refusing the run is allowed
(``accepted-refused``), any other exception is an escape.
"""
from __future__ import annotations

import json
import random

import numpy as np
import onnx
from onnx import AttributeProto, TensorProto

INTERESTING_INTS = [0, 1, 2, -1, 3, 7, 255, 1 << 16, 1 << 31, (1 << 31) - 1, -(1 << 31), (1 << 63) - 1, -(1 << 63)]
INTERESTING_FLOATS = [0.0, -0.0, 0.5, 1.0, -1.0, 1.5, 1e-300, 1e30, 1e31, 1e300, float("nan"), float("inf"),
                      -float("inf"), 3.4e38]
INTERESTING_BYTES = [b"", b"\xff\xfe", b"\xc3\x28", b"lif", b"hard", b"max", b"count", b"direct", b"x" * 300,
                     b"spike", b"\x00", "\u00e9".encode()]
INTERESTING_JSON = ['{"timesteps": "abc"}', '{"timesteps": [4]}', '{"timesteps": 1180591620717411303424}',
                    '{"timesteps": 1000000000}', '{"timesteps": 1000000}', '{"timesteps": 0}', '{"timesteps": -3}',
                    '{"timesteps": true}', '{"timesteps": 3.5}', '{"timesteps": NaN}', '[]', '"x"', '1', 'null',
                    '{"dataset": 5}', '{"dataset": "nope"}', '{"width": Infinity}', '{',
                    '[' * 5000 + ']' * 5000, '{"a":' * 3000 + '1' + '}' * 3000, '{"timesteps": 2}', '{}',
                    '{"num_classes": -1}', '{"timesteps": 1e5}']


class Chooser:
    """Where a mutation's decisions come from."""

    def __init__(self, rnd: random.Random):
        self.rnd = rnd

    def int(self, lo: int, hi: int) -> int:
        return self.rnd.randint(lo, max(lo, hi))

    def pick(self, seq):
        return seq[self.int(0, len(seq) - 1)]

    def bytes(self, n: int) -> bytes:
        return bytes(self.int(0, 255) for _ in range(n))


class HypothesisChooser(Chooser):
    def __init__(self, data):
        from hypothesis import strategies as st
        self.data, self.st = data, st

    def int(self, lo, hi):
        return self.data.draw(self.st.integers(lo, max(lo, hi)))


# -- seeds ----------------------------------------------------------------------------
def seed_graphs():
    from snncc.ir.graph import SpikeGraph
    from snncc.ir.ops import Add, Conv, Dense, Flatten, Input, Neuron, Pool, Readout
    from snncc.neuron import NeuronParams
    rng = np.random.default_rng(0)
    lif = NeuronParams("lif", tau=2.0, v_th=0.5)
    mlp = SpikeGraph("mlp", {"timesteps": 4, "dataset": "digits", "num_classes": 4})
    mlp.add("x", Input((1, 3, 3), mean=np.array([0.5]), std=np.array([0.25])))
    mlp.add("flat", Flatten(), ["x"])
    mlp.add("fc0", Dense(rng.normal(0, 1, (6, 9)), rng.normal(0, 0.1, 6)), ["flat"])
    mlp.add("lif0", Neuron(lif), ["fc0"])
    mlp.add("fc1", Dense(rng.normal(0, 1, (4, 6))), ["lif0"])
    mlp.add("lif1", Neuron(NeuronParams("lif", tau=1.5, v_th=0.7, v_reset=-0.2)), ["fc1"])
    mlp.add("out", Readout("count"), ["lif1"])
    cnn = SpikeGraph("cnn", {"timesteps": 3, "width": 0.5})
    cnn.add("x", Input((2, 6, 6)))
    cnn.add("c1", Conv(rng.normal(0, 1, (3, 2, 3, 3)), rng.normal(0, 0.1, 3), (1, 1), (1, 1)), ["x"])
    cnn.add("s1", Neuron(lif), ["c1"])
    cnn.add("c2", Conv(rng.normal(0, 1, (3, 3, 3, 3)), None, (1, 1), (1, 1)), ["s1"])
    cnn.add("s2", Neuron(lif), ["c2"])
    cnn.add("add", Add(), ["s2", "s1"])
    cnn.add("sp", Pool("sum", (2, 2), (2, 2)), ["add"])
    cnn.add("c3", Conv(rng.normal(0, 1, (2, 3, 2, 2)), None, (1, 1), (0, 0)), ["sp"])
    cnn.add("s3", Neuron(lif), ["c3"])
    cnn.add("mp", Pool("max", (2, 2), (1, 1)), ["s3"])
    cnn.add("ap", Pool("avg", (1, 1), (1, 1)), ["mp"])
    cnn.add("fl", Flatten(), ["ap"])
    cnn.add("fc", Dense(rng.normal(0, 1, (3, 2))), ["fl"])
    cnn.add("s4", Neuron(lif), ["fc"])
    cnn.add("out", Readout("count"), ["s4"])
    rnn = SpikeGraph("rnn", {"timesteps": 5, "task": "text", "hidden": 4})
    rnn.add("x", Input((3,), encoding="spike"))
    rnn.add("ih", Dense(rng.normal(0, 1, (4, 3))), ["x"])
    rnn.add("h", Neuron(NeuronParams("if", v_th=1.0, reset="soft")), ["ih"])
    rnn.add("hh", Dense(rng.normal(0, 0.5, (4, 4))), ["h"])
    rnn.connect("hh", "h", 1)
    rnn.add("out", Readout("mean"), ["hh"])
    return [mlp, cnn, rnn]


def seed_files() -> list[bytes]:
    from snncc.ir.serialize import to_onnx
    return [to_onnx(g).SerializeToString() for g in seed_graphs()]


# -- mutations -------------------------------------------------------------------------
def _random_attr(c: Chooser, name: str) -> AttributeProto:
    kind = c.int(0, 6)
    if kind == 0:
        return onnx.helper.make_attribute(name, c.pick(INTERESTING_INTS))
    if kind == 1:
        return onnx.helper.make_attribute(name, c.pick(INTERESTING_FLOATS))
    if kind == 2:
        return onnx.helper.make_attribute(name, c.pick(INTERESTING_BYTES))
    if kind == 3:
        return onnx.helper.make_attribute(name, [c.pick(INTERESTING_INTS) for _ in range(c.int(0, 4))] or [0])
    if kind == 4:
        return onnx.helper.make_attribute(name, [c.pick(INTERESTING_FLOATS) for _ in range(c.int(1, 3))])
    if kind == 5:
        return onnx.helper.make_attribute(name, [c.pick(INTERESTING_BYTES) for _ in range(c.int(1, 3))])
    shape = [c.int(0, 3) for _ in range(c.int(0, 2))]
    dtype = c.pick([np.float64, np.float32, np.int64])
    value = c.pick(INTERESTING_INTS[:12]) if dtype is np.int64 else c.pick(INTERESTING_FLOATS)
    arr = np.full(shape, value, dtype=dtype)
    return onnx.helper.make_attribute(name, onnx.numpy_helper.from_array(arr))


def _mut_attribute(m, c):
    node = c.pick(m.graph.node)
    if not node.attribute:
        return
    i = c.int(0, len(node.attribute) - 1)
    a = node.attribute[i]
    what = c.int(0, 6)
    if what == 0:                      # same name, any type and value
        node.attribute[i].CopyFrom(_random_attr(c, a.name))
    elif what == 1 and a.type == AttributeProto.INTS and len(a.ints):
        a.ints[c.int(0, len(a.ints) - 1)] = c.pick(INTERESTING_INTS)
    elif what == 1 and a.type == AttributeProto.STRINGS and len(a.strings):
        a.strings[c.int(0, len(a.strings) - 1)] = c.pick(INTERESTING_BYTES + [n.name.encode() for n in m.graph.node])
    elif what == 1 and a.type == AttributeProto.STRING:
        a.s = c.pick(INTERESTING_BYTES)
    elif what == 1 and a.type == AttributeProto.TENSOR:
        a.t.CopyFrom(onnx.numpy_helper.from_array(np.array(c.pick(INTERESTING_FLOATS))))
    elif what == 2:
        del node.attribute[i]
    elif what == 3:
        node.attribute.append(_random_attr(c, c.pick(["params.tau", "params.bogus", "stride", "mode", "shape",
                                                     "snncc_inputs", "snncc_delays", "snncc_arrays", a.name])))
    elif what == 4 and a.type == AttributeProto.INTS:
        a.ints.append(c.pick(INTERESTING_INTS))
    elif what == 5 and a.type in (AttributeProto.INTS, AttributeProto.STRINGS):
        (a.ints if a.type == AttributeProto.INTS else a.strings).pop()
    else:
        a.type = c.int(0, 14)


def _mut_initializer(m, c):
    if not m.graph.initializer:
        return
    t = c.pick(m.graph.initializer)
    what = c.int(0, 9)
    if what == 0:
        t.data_type = c.int(0, 25)     # incl. INT4/UINT4 (22/21), STRING, BFLOAT16, FLOAT8 ...
    elif what == 1 and len(t.dims):
        t.dims[c.int(0, len(t.dims) - 1)] = c.pick(INTERESTING_INTS[:12])
    elif what == 2:
        t.dims.append(c.pick([1, 2, 0, 1 << 20]))
    elif what == 3 and len(t.dims):
        t.dims.pop()
    elif what == 4 and t.raw_data:
        raw = bytearray(t.raw_data)
        cut = c.int(0, len(raw))
        t.raw_data = bytes(raw[:cut]) if c.int(0, 1) else bytes(raw + c.bytes(c.int(1, 9)))
    elif what == 5 and t.raw_data and len(t.raw_data) % 8 == 0:      # poison one value
        arr = np.frombuffer(t.raw_data, dtype="<f4" if t.data_type == TensorProto.FLOAT else "<f8").copy()
        if arr.size:
            with np.errstate(over="ignore"):   # 1e300 into a float32 payload becomes inf: also a mutant
                arr[c.int(0, arr.size - 1)] = c.pick(INTERESTING_FLOATS)
            t.raw_data = arr.tobytes()
    elif what == 6:                      # external data, relative location
        t.data_location = TensorProto.EXTERNAL
        e = t.external_data.add()
        e.key, e.value = "location", c.pick(["weights.bin", "../x", "/etc/passwd", ""])
        t.ClearField("raw_data")
    elif what == 7:
        t.name = c.pick([n.name for n in m.graph.node]) + c.pick([".weight", ".bias", ".mean", ".x", ""])
    elif what == 8:
        m.graph.initializer.append(t)
    else:
        vals = np.frombuffer(t.raw_data, dtype="<f4" if t.data_type == TensorProto.FLOAT else "<f8") \
            if t.raw_data and len(t.raw_data) % 8 == 0 else []
        t.ClearField("raw_data")
        t.float_data.extend([float(v) for v in vals][: c.int(0, len(vals))])


def _json_dict(text: str) -> dict:
    try:
        obj = json.loads(text)
    except (ValueError, RecursionError):
        return {}
    return obj if isinstance(obj, dict) else {}


def _mut_metadata(m, c):
    if not m.metadata_props:
        return
    p = c.pick(m.metadata_props)
    what = c.int(0, 4)
    if what == 0 and p.key == "snncc.metadata":
        p.value = c.pick(INTERESTING_JSON)
    elif what == 0 or what == 1:
        p.value = c.pick(INTERESTING_JSON + ["1", "2", '{"x": ["spike", [3]]}'])
    elif what == 2 and p.key == "snncc.types":
        types = _json_dict(p.value)
        if types:
            k = c.pick(sorted(types))
            types[k] = c.pick([["spike", [3]], ["analog", [1, 3, 3]], "x", None, [1, 2], ["count", [-1]]])
            p.value = json.dumps(types)
    elif what == 3:
        p.key = c.pick(["snncc.other", "snncc.metadata", "snncc.types", "x"])
    else:
        meta = _json_dict(p.value) if p.key == "snncc.metadata" else {}
        meta[c.pick(["timesteps", "dataset", "width", "num_classes", "hidden", "z"])] = \
            c.pick(INTERESTING_INTS + INTERESTING_FLOATS[:6] + ["abc", [4], {"a": 1}, None, True])
        p.value = json.dumps(meta)


def _mut_node(m, c):
    nodes = m.graph.node
    i = c.int(0, len(nodes) - 1)
    node = nodes[i]
    names = [n.name for n in nodes] + ["", "nope", "x:data"]
    what = c.int(0, 8)
    if what == 0 and len(node.input):
        node.input[c.int(0, len(node.input) - 1)] = c.pick(names + [t.name for t in m.graph.initializer])
    elif what == 1:
        node.input.append(c.pick(names))
    elif what == 2 and len(node.input):
        node.input.pop()
    elif what == 3:
        node.name = c.pick(names + ["\u00e9t\u00e9", "a" * 300])
    elif what == 4:
        node.op_type = c.pick(["Input", "Dense", "Conv", "Pool", "Flatten", "Neuron", "Add", "Readout", "Relu"])
    elif what == 5:
        node.domain = c.pick(["", "ai.onnx", "ai.snncc.x"])
    elif what == 6:
        del nodes[i]
    elif what == 7:
        j = c.int(0, len(nodes) - 1)
        a, b = onnx.NodeProto(), onnx.NodeProto()
        a.CopyFrom(nodes[i])
        b.CopyFrom(nodes[j])
        nodes[i].CopyFrom(b)
        nodes[j].CopyFrom(a)
    else:
        nodes.append(node)


def _mut_bytes(data: bytes, c: Chooser) -> bytes:
    b = bytearray(data)
    if not b:
        return bytes(c.bytes(c.int(1, 16)))
    what = c.int(0, 4)
    pos = c.int(0, max(0, len(b) - 1))
    if what == 0:
        for _ in range(c.int(1, 8)):
            b[c.int(0, len(b) - 1)] ^= 1 << c.int(0, 7)
    elif what == 1:
        b[pos:pos] = c.bytes(c.int(1, 16))
    elif what == 2:
        del b[pos:pos + c.int(1, 64)]
    elif what == 3:
        b = b[:pos]
    else:
        end = c.int(pos, len(b))
        b[c.int(0, len(b)):c.int(0, len(b))] = b[pos:end]
    return bytes(b)


STRUCTURE_MUTATIONS = (_mut_attribute, _mut_initializer, _mut_metadata, _mut_node)


def structure_mutation(m: onnx.ModelProto, c: Chooser) -> None:
    """Apply one structure-level mutation in place (one that does not apply to this model is skipped)."""
    mutation = STRUCTURE_MUTATIONS[c.int(0, len(STRUCTURE_MUTATIONS) - 1)]
    try:
        mutation(m, c)
    except (IndexError, ValueError, TypeError):   # e.g. nothing left to pick from
        pass


def mutate(seed: bytes, c: Chooser) -> bytes:
    """One mutant of ``seed``: 1-3 structure-level mutations, then maybe a byte-level one."""
    out = seed
    if c.int(0, 3):
        m = onnx.ModelProto()
        m.ParseFromString(seed)
        for _ in range(c.int(1, 3)):
            structure_mutation(m, c)
        out = m.SerializeToString()
        if c.int(0, 4) == 0:
            out = _mut_bytes(out, c)
    else:
        for _ in range(c.int(1, 2)):
            out = _mut_bytes(out, c)
    return out


# -- the property ------------------------------------------------------------------------
def check(data: bytes) -> str:
    """'rejected' (SerializeError), 'accepted' (loads, validates and runs) or 'accepted-refused'
    (loads and validates; the run refuses it with a project error). Anything else raises."""
    from snncc.cli.common import user_errors
    from snncc.ir.serialize import SerializeError, loads
    from snncc.passes.validate import check_fully_spiking
    from snncc.sims import numba_sim
    try:
        graph = loads(data, "mutant.snn.onnx")
    except SerializeError:
        return "rejected"
    check_fully_spiking(graph)
    t = graph.type_of(graph.input_nodes[0])
    steps = min(int(graph.metadata.get("timesteps", 4)), 4)
    x = np.random.default_rng(0).random((2, steps, *t.shape) if t.kind.value == "spike" else (2, *t.shape))
    if t.kind.value == "spike":
        x = (x > 0.5).astype(np.float64)
    try:
        res = numba_sim.run(graph, x, steps)
    except user_errors():
        return "accepted-refused"
    if res.output.shape[0] != 2:
        raise AssertionError(f"run returned {res.output.shape[0]} outputs for 2 samples")
    return "accepted"
