"""The IR loader under hostile input: the root causes measured in issue 12, one by one, and a
property-based fuzz (hypothesis) of byte- and structure-level mutants of valid files."""
import json
import time

import numpy as np
import onnx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper, numpy_helper

from snncc.ir import fuzz, schema
from snncc.ir.serialize import SerializeError, loads, to_onnx

SEEDS = fuzz.seed_files()
MLP, CNN, RNN = SEEDS


def _model(seed=MLP):
    m = onnx.ModelProto()
    m.ParseFromString(seed)
    return m


def _node(m, name):
    return next(n for n in m.graph.node if n.name == name)


def _attr(node, name):
    return next(a for a in node.attribute if a.name == name)


def _init(m, name):
    return next(t for t in m.graph.initializer if t.name == name)


def _meta(m, key):
    return next(p for p in m.metadata_props if p.key == key)


def _set_attr(node, name, value):
    a = _attr(node, name)
    a.CopyFrom(helper.make_attribute(name, value))


def _poison(m, name, value):
    t = _init(m, name)
    arr = numpy_helper.to_array(t).copy()
    arr.flat[0] = value
    t.CopyFrom(numpy_helper.from_array(arr, name))


def _set_timesteps(m, value):
    p = _meta(m, "snncc.metadata")
    p.value = p.value.replace('"timesteps": 4', f'"timesteps": {value}')


CASES = {
    # (mutation, seed, the message must contain)
    "tau 0.5": (lambda m: _set_attr(_node(m, "lif0"), "params.tau", numpy_helper.from_array(np.array(0.5))),
                MLP, "node 'lif0': bad neuron parameters (LIF tau must be >= 1"),
    "unknown neuron parameter": (lambda m: _node(m, "lif0").attribute.append(helper.make_attribute("params.gain", 2)),
                                 MLP, "node 'lif0' attribute 'params.gain': unknown neuron parameter"),
    "3-element tensor for a scalar": (lambda m: _set_attr(_node(m, "lif0"), "params.v_th",
                                                          numpy_helper.from_array(np.ones(3))),
                                      MLP, "node 'lif0' attribute 'params.v_th': expected one number, got a tensor "
                                           "of dims [3]"),
    "NaN threshold": (lambda m: _set_attr(_node(m, "lif1"), "params.v_th",
                                          numpy_helper.from_array(np.array(np.nan))),
                      MLP, "node 'lif1' attribute 'params.v_th'"),
    "inf threshold as float": (lambda m: _set_attr(_node(m, "lif1"), "params.v_th", float("inf")),
                               MLP, "node 'lif1' attribute 'params.v_th': non-finite"),
    "NaN weight": (lambda m: _poison(m, "fc0.weight", np.nan), MLP, "node 'fc0' initializer 'fc0.weight': non-finite"),
    "inf bias": (lambda m: _poison(m, "fc0.bias", np.inf), MLP, "node 'fc0' initializer 'fc0.bias': non-finite"),
    "NaN input mean": (lambda m: _poison(m, "x.mean", np.nan), MLP, "node 'x' initializer 'x.mean'"),
    "non-UTF-8 string": (lambda m: setattr(_attr(_node(m, "lif0"), "params.model"), "s", b"\xff\xfe"),
                         MLP, "node 'lif0' attribute 'params.model': string is not valid UTF-8"),
    "non-UTF-8 port": (lambda m: _attr(_node(m, "fc0"), "snncc_inputs").strings.__setitem__(0, b"\xc3\x28"),
                       MLP, "node 'fc0' snncc_inputs: string is not valid UTF-8"),
    "int where a list is expected": (lambda m: _set_attr(_node(m, "c1"), "stride", 1), CNN,
                                     "node 'c1' attribute 'stride': expected a list of ints, got INT"),
    "conv stride 0": (lambda m: _set_attr(_node(m, "c1"), "stride", [0, 1]), CNN,
                      "node 'c1' attribute 'stride': values [0, 1] outside 1..1024"),
    "short pool kernel": (lambda m: _set_attr(_node(m, "sp"), "kernel", [2]), CNN,
                          "node 'sp' attribute 'kernel': expected 2 ints, got 1"),
    "float input shape": (lambda m: _set_attr(_node(m, "x"), "shape", [1.0, 3.0, 3.0]), MLP,
                          "node 'x' attribute 'shape': expected a list of ints, got FLOATS"),
    "1-D dense weight": (lambda m: _init(m, "fc0.weight").CopyFrom(numpy_helper.from_array(np.ones(54), "fc0.weight")),
                         MLP, "node 'fc0' field 'weight': rank 1 (expected 2)"),
    "wrong dims": (lambda m: _init(m, "fc0.weight").dims.__setitem__(0, 7), MLP,
                   "node 'fc0' initializer 'fc0.weight': 432 data bytes for dims [7, 9] of float64"),
    "unknown data type": (lambda m: setattr(_init(m, "fc0.weight"), "data_type", 99), MLP,
                          "data type 99 (expected FLOAT or DOUBLE)"),
    "INT4 initializer": (lambda m: setattr(_init(m, "fc0.weight"), "data_type", TensorProto.INT4), MLP,
                         "node 'fc0' initializer 'fc0.weight': data type INT4"),
    "snncc_inputs of ints": (lambda m: _set_attr(_node(m, "fc0"), "snncc_inputs", [1]), MLP,
                             "node 'fc0' snncc_inputs: expected a list of strings, got INTS"),
    "snncc_delays of strings": (lambda m: _set_attr(_node(m, "fc0"), "snncc_delays", ["a"]), MLP,
                                "node 'fc0' snncc_delays: expected a list of ints, got STRINGS"),
    "delay 2000": (lambda m: _set_attr(_node(m, "h"), "snncc_delays", [0, 2000]), RNN,
                   "node 'h' snncc_delays: delays must be in 0..1024"),
    "metadata not a dict": (lambda m: setattr(_meta(m, "snncc.metadata"), "value", "[1, 2]"), MLP,
                            "metadata: expected a JSON object, got list"),
    "types not a dict": (lambda m: setattr(_meta(m, "snncc.types"), "value", '"x"'), MLP,
                         "snncc.types: expected a JSON object, got str"),
    "deeply nested metadata": (lambda m: setattr(_meta(m, "snncc.metadata"), "value", "[" * 100000 + "]" * 100000),
                               MLP, "metadata: JSON nested deeper than 16"),
    "timesteps abc": (lambda m: _set_timesteps(m, '"abc"'), MLP,
                      "metadata 'timesteps': expected an integer in 1..100000"),
    "timesteps [4]": (lambda m: _set_timesteps(m, "[4]"), MLP, "metadata 'timesteps'"),
    "timesteps 2**70": (lambda m: _set_timesteps(m, 2 ** 70), MLP, "metadata 'timesteps'"),
    "timesteps 1e9": (lambda m: _set_timesteps(m, 10 ** 9), MLP, "metadata 'timesteps'"),
    "timesteps 1e6": (lambda m: _set_timesteps(m, 10 ** 6), MLP, "got 1000000"),
    "timesteps true": (lambda m: _set_timesteps(m, "true"), MLP, "metadata 'timesteps'"),
    "NaN in metadata": (lambda m: _set_timesteps(m, "NaN"), MLP, "NaN is not allowed"),
    "external data (relative)": (lambda m: _external(m, "weights.bin"), MLP,
                                 "node 'fc0' initializer 'fc0.weight': external data is not allowed"),
    "unknown attribute": (lambda m: _node(m, "fc0").attribute.append(helper.make_attribute("gain", 2.0)), MLP,
                          "node 'fc0' attribute 'gain': not a field of Dense"),
    "missing weight": (lambda m: _set_attr(_node(m, "fc1"), "snncc_arrays", [""]), MLP,
                       "node 'fc1': Dense needs field(s) weight"),
    "huge padding": (lambda m: _set_attr(_node(m, "c1"), "padding", [1000, 1000]), CNN,
                     "node 'fc': dense expects input shape [2], got [2000000]"),
    "huge input": (lambda m: _set_attr(_node(m, "x"), "shape", [65536, 65536]), RNN,
                   "node 'x' attribute 'shape': 4294967296 elements per sample (at most 16777216)"),
    "node inputs that disagree": (lambda m: _node(m, "fc1").input.__setitem__(0, "fc0"), MLP,
                                  "node 'fc1': ONNX inputs ['fc0', 'fc1.weight'] do not match"),
}


def _external(m, location):
    t = _init(m, "fc0.weight")
    t.ClearField("raw_data")
    t.data_location = TensorProto.EXTERNAL
    e = t.external_data.add()
    e.key, e.value = "location", location


@pytest.mark.parametrize("case", sorted(CASES))
def test_each_measured_root_cause_is_a_serialize_error_naming_node_and_field(case, tmp_path, monkeypatch):
    mutation, seed, expected = CASES[case]
    m = _model(seed)
    mutation(m)
    (tmp_path / "weights.bin").write_bytes(np.zeros(54).tobytes())  # a relative external file that must not be read
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "bad.snn.onnx"
    path.write_bytes(m.SerializeToString())
    t0 = time.perf_counter()
    from snncc.ir.serialize import load
    with pytest.raises(SerializeError) as info:
        load(path)
    assert time.perf_counter() - t0 < 2.0
    assert str(info.value).startswith(f"{path}: ")
    assert expected in str(info.value), str(info.value)


def test_seeds_round_trip_and_run():
    """The fuzz seeds are valid: every op type, a normalised input, a spike input, a delayed edge."""
    kinds = set()
    for data in SEEDS:
        assert fuzz.check(data) == "accepted"
        g = loads(data)
        kinds |= {type(g.op(n)).__name__ for n in g.order()}
        assert to_onnx(g).SerializeToString() == data
    assert kinds == {"Input", "Dense", "Conv", "Pool", "Flatten", "Neuron", "Add", "Readout"}


def test_int4_is_rejected_fast():
    """The measured INT4 initializer took 8-16 s to reject; a large one must be refused before any decode."""
    m = _model()
    big = helper.make_tensor("fc0.weight", TensorProto.INT4, [6, 9], np.zeros(54, np.int8).tolist())
    _init(m, "fc0.weight").CopyFrom(big)
    t0 = time.perf_counter()
    with pytest.raises(SerializeError, match="data type INT4"):
        loads(m.SerializeToString())
    assert time.perf_counter() - t0 < 0.5


def test_timestep_bound_is_inclusive():
    m = _model()
    _set_timesteps(m, schema.MAX_TIMESTEPS)
    assert loads(m.SerializeToString()).metadata["timesteps"] == schema.MAX_TIMESTEPS
    _set_timesteps_any(m, schema.MAX_TIMESTEPS + 1)
    with pytest.raises(SerializeError, match="expected an integer in 1..100000, got 100001"):
        loads(m.SerializeToString())


def _set_timesteps_any(m, value):
    p = _meta(m, "snncc.metadata")
    meta = json.loads(p.value)
    meta["timesteps"] = value
    p.value = json.dumps(meta)


def _outcome(data: bytes) -> str:
    t0 = time.perf_counter()
    outcome = fuzz.check(data)   # raises on an escape
    assert time.perf_counter() - t0 < 5.0, "a mutant took over 5 s"
    return outcome


@settings(max_examples=1500, deadline=None, database=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(st.data())
def test_fuzz_structure_mutants_never_escape(data):
    c = fuzz.HypothesisChooser(data)
    seed = SEEDS[c.int(0, len(SEEDS) - 1)]
    m = _model(seed)
    for _ in range(c.int(1, 3)):
        fuzz.structure_mutation(m, c)
    _outcome(m.SerializeToString())


@settings(max_examples=1500, deadline=None, database=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(st.sampled_from(range(len(SEEDS))),
       st.lists(st.tuples(st.integers(0, 4), st.integers(0, 1 << 20), st.binary(min_size=1, max_size=16)),
                min_size=1, max_size=4))
def test_fuzz_byte_mutants_never_escape(which, edits):
    b = bytearray(SEEDS[which])
    for op, pos, chunk in edits:
        pos %= max(1, len(b))
        if op == 0 and b:
            b[pos] ^= chunk[0] or 1
        elif op == 1:
            b[pos:pos] = chunk
        elif op == 2:
            del b[pos:pos + len(chunk) * 4]
        elif op == 3:
            b = b[:pos]
        else:
            b[pos:pos + len(chunk)] = chunk
    _outcome(bytes(b))


def test_fuzz_random_mutants_reach_acceptance():
    """The mutation mix is not all-reject: some mutants load and run (the property's other branch is exercised)."""
    import random
    outcomes = [_outcome(fuzz.mutate(SEEDS[i % 3], fuzz.Chooser(random.Random(i)))) for i in range(600)]
    assert outcomes.count("rejected") > 300 and outcomes.count("accepted") > 5
