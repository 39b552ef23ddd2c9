"""The CLI under bad inputs and occupied output paths: exit 2, exactly one line on stderr naming the user's
path (or the option), no traceback, and every file that existed before is byte- and mtime-identical after."""
import gzip
import json
import struct

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from graphs import mlp
from onnx import TensorProto, numpy_helper

from snncc.cli import main
from snncc.ir import serialize


def invoke(*args):
    return CliRunner(mix_stderr=False).invoke(main, [str(a) for a in args])


def _bad_graph(src, dst, mutate):
    m = onnx.load(src)
    mutate(m)
    dst.write_bytes(m.SerializeToString())


def _weight(m, name="fc0.weight"):
    return next(t for t in m.graph.initializer if t.name == name)


def _nan(m):
    t = _weight(m)
    arr = numpy_helper.to_array(t).copy()
    arr[0, 0] = np.nan
    t.CopyFrom(numpy_helper.from_array(arr, t.name))


def _meta(m, text):
    next(p for p in m.metadata_props if p.key == "snncc.metadata").value = text


def _external(m):
    t = _weight(m)
    t.ClearField("raw_data")
    t.data_location = TensorProto.EXTERNAL
    e = t.external_data.add()
    e.key, e.value = "location", "weights.bin"


def _tau(m):
    node = next(n for n in m.graph.node if n.name == "lif0")
    a = next(a for a in node.attribute if a.name == "params.tau")
    a.t.CopyFrom(numpy_helper.from_array(np.array(0.5)))


def _idx(folder, images_payload, header):
    folder.mkdir()
    (folder / "t10k-images-idx3-ubyte.gz").write_bytes(gzip.compress(header + images_payload, compresslevel=1))
    (folder / "t10k-labels-idx1-ubyte.gz").write_bytes(gzip.compress(struct.pack(">2I", 2049, 4) + bytes(4)))


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("matrix")
    rng = np.random.default_rng(0)
    serialize.save(mlp(rng), tmp / "m.snn.onnx")
    serialize.save(mlp(rng, sizes=(784, 10), shape=(1, 28, 28)), tmp / "mlp28.snn.onnx")
    (tmp / "afile").write_text("user data\n")
    (tmp / "userdir").mkdir()
    (tmp / "userdir" / "keep.txt").write_text("precious\n")
    (tmp / "user.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"my holiday photo")
    (tmp / "user.json").write_text('{"mine": 1}\n')
    (tmp / "user.snn.onnx").write_text("not a graph, my notes\n")
    (tmp / "weights.bin").write_bytes(np.zeros(64 * 48).tobytes())
    src = tmp / "m.snn.onnx"
    _bad_graph(src, tmp / "nan.snn.onnx", _nan)
    _bad_graph(src, tmp / "t_abc.snn.onnx", lambda m: _meta(m, '{"timesteps": "abc", "dataset": "digits"}'))
    _bad_graph(src, tmp / "t_huge.snn.onnx", lambda m: _meta(m, '{"timesteps": 1000000000, "dataset": "digits"}'))
    _bad_graph(src, tmp / "deep.snn.onnx", lambda m: _meta(m, "[" * 50000 + "]" * 50000))
    _bad_graph(src, tmp / "int4.snn.onnx", lambda m: setattr(_weight(m), "data_type", TensorProto.INT4))
    _bad_graph(src, tmp / "ext.snn.onnx", _external)
    _bad_graph(src, tmp / "tau.snn.onnx", _tau)
    big = 0xFFFFFFFF
    _idx(tmp / "idx_overflow", b"", struct.pack(">4I", 2051, big, big, big))
    _idx(tmp / "bomb", bytes(64 << 20), struct.pack(">4I", 2051, 4, 28, 28))   # 64 MB of zeros after 4 images
    return tmp


def _snapshot(root):
    return {p: (p.read_bytes(), p.stat().st_mtime_ns) if p.is_file() else None for p in sorted(root.rglob("*"))}


DIGITS = ["--dataset", "digits", "--limit", "8"]
CASES = [
    # (argv with {t} for the folder, text stderr must contain)
    (["train", "--method", "bsd", "--epochs", "1", "--out", "{t}/afile/run"], "{t}/afile/run"),
    (["train", "--method", "bsd", "--epochs", "1", "--out", "{t}/afile"], "{t}/afile"),
    (["train", "--method", "bsd", "--epochs", "1", "--out", "{t}/userdir"], "{t}/userdir"),
    (["energy", "report", "{t}/m.snn.onnx", *DIGITS, "--png", "{t}/afile/e.png"], "{t}/afile/e.png"),
    (["energy", "report", "{t}/m.snn.onnx", *DIGITS, "--png", "{t}/user.png"], "{t}/user.png"),
    (["energy", "report", "{t}/m.snn.onnx", *DIGITS, "--json", "{t}/user.json"], "{t}/user.json"),
    (["energy", "report", "{t}/m.snn.onnx", *DIGITS, "--json", "{t}/userdir"], "{t}/userdir"),
    (["demo", "--out", "{t}/afile"], "{t}/afile"),
    (["demo", "--out", "{t}/userdir"], "{t}/userdir"),
    (["bench", "compile", "--width", "-1"], "--width"),
    (["quantize", "{t}/m.snn.onnx", "--input-bound", "-1"], "--input-bound"),
    (["quantize", "{t}/m.snn.onnx", "--input-bound", "nan"], "--input-bound"),
    (["quantize", "{t}/m.snn.onnx", "--limit", "8", "--json", "{t}/user.json"], "{t}/user.json"),
    (["run", "{t}/mlp28.snn.onnx", "--dataset", "mnist", "--data-dir", "{t}/idx_overflow"],
     "{t}/idx_overflow/t10k-images-idx3-ubyte.gz"),
    (["run", "{t}/mlp28.snn.onnx", "--dataset", "mnist", "--data-dir", "{t}/bomb"],
     "{t}/bomb/t10k-images-idx3-ubyte.gz"),
    (["compile", "{t}/m.snn.onnx", "--target", "numba", "-o", "{t}/userdir"], "{t}/userdir"),
    (["compile", "{t}/m.snn.onnx", "--target", "lava", "-o", "{t}/userdir"], "{t}/userdir"),
    (["compile", "{t}/m.snn.onnx", "--target", "numba", "-o", "{t}/afile"], "{t}/afile"),
    (["compile", "{t}/m.snn.onnx", "--target", "numba", "-o", "{t}/afile/art"], "{t}/afile/art"),
    (["export", "{t}/missing.pt", "-o", "{t}/user.snn.onnx"], "{t}/user.snn.onnx"),
    (["export", "{t}/missing.pt", "-o", "{t}/afile/m.snn.onnx"], "{t}/afile/m.snn.onnx"),
    (["bsd", "export-rnn", "{t}/missing.pt", "-o", "{t}/user.snn.onnx"], "{t}/user.snn.onnx"),
    (["analyze", "infoflow", "{t}/missing.pt", "--out", "{t}/afile"], "{t}/afile"),
    (["run", "{t}/m.snn.onnx", "--timesteps", "100001"], "--timesteps"),
    # the loader: each measured root cause, through the commands that read graphs
    (["validate", "{t}/nan.snn.onnx"], "{t}/nan.snn.onnx: node 'fc0' initializer 'fc0.weight': non-finite"),
    (["run", "{t}/t_abc.snn.onnx", *DIGITS], "{t}/t_abc.snn.onnx: metadata 'timesteps'"),
    (["run", "{t}/t_huge.snn.onnx", *DIGITS], "{t}/t_huge.snn.onnx: metadata 'timesteps'"),
    (["inspect", "{t}/deep.snn.onnx"], "{t}/deep.snn.onnx: metadata: JSON nested deeper"),
    (["inspect", "{t}/int4.snn.onnx"], "{t}/int4.snn.onnx: node 'fc0' initializer 'fc0.weight': data type INT4"),
    (["validate", "{t}/ext.snn.onnx"], "{t}/ext.snn.onnx: node 'fc0' initializer 'fc0.weight': external data"),
    (["compile", "{t}/tau.snn.onnx", "--target", "numba", "-o", "{t}/new_art"], "{t}/tau.snn.onnx: node 'lif0'"),
    (["energy", "report", "{t}/nan.snn.onnx", *DIGITS], "{t}/nan.snn.onnx"),
]


@pytest.mark.parametrize("argv, needle", CASES, ids=[" ".join(a[:2]) + f"-{i}" for i, (a, _) in enumerate(CASES)])
def test_bad_input_exit_2_one_line_naming_the_path_and_nothing_touched(world, argv, needle):
    before = _snapshot(world)
    res = invoke(*[a.format(t=world) for a in argv])
    assert res.exit_code == 2, (res.exit_code, res.stdout[-500:], res.stderr)
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), res.stderr
    assert needle.format(t=world) in lines[0], lines[0]
    assert ".tmp" not in lines[0] and "Traceback" not in res.stderr
    assert _snapshot(world) == before


def test_force_replaces_a_file_and_moves_a_foreign_folder_aside(tmp_path, rng):
    serialize.save(mlp(rng), tmp_path / "m.snn.onnx")
    (tmp_path / "user.json").write_text('{"mine": 1}\n')
    res = invoke("energy", "report", tmp_path / "m.snn.onnx", *DIGITS, "--json", tmp_path / "user.json", "--force")
    assert res.exit_code == 0, res.stderr
    rep = json.loads((tmp_path / "user.json").read_text())
    assert rep["snncc"]["kind"] == "json" and "layers" in rep
    # now snncc's own: a second run replaces it without --force
    assert invoke("energy", "report", tmp_path / "m.snn.onnx", *DIGITS, "--json", tmp_path / "user.json").exit_code == 0
    user = tmp_path / "art"
    user.mkdir()
    (user / "keep.txt").write_text("precious")
    res = invoke("compile", tmp_path / "m.snn.onnx", "--target", "numba", "-o", user, "--force")
    assert res.exit_code == 0, res.stderr
    assert (tmp_path / "art.orig-1" / "keep.txt").read_text() == "precious"
    assert (user / "graph.snn.onnx").is_file()
    res = invoke("compile", tmp_path / "m.snn.onnx", "--target", "numba", "-o", user)  # its own artifact: replaced
    assert res.exit_code == 0, res.stderr
    res = invoke("compile", tmp_path / "m.snn.onnx", "--target", "lava", "-o", user)   # another kind: refused
    assert res.exit_code == 2 and f"{user}" in res.stderr and "numba" not in res.stderr.split(str(user))[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["art", "art.orig-1", "m.snn.onnx", "user.json"]


def test_a_run_that_cannot_fit_in_memory_is_refused_up_front(tmp_path, rng, monkeypatch):
    from snncc import runtime
    serialize.save(mlp(rng), tmp_path / "m.snn.onnx")
    monkeypatch.setattr(runtime, "available_memory", lambda: 1 << 20)   # 1 MiB
    res = invoke("run", tmp_path / "m.snn.onnx", *DIGITS, "--timesteps", 100000)
    # 8 bytes x 100,001 steps x 318 node elements per sample (x 64, flat 64, fc0/lif0 48, fc1/lif1 32,
    # fc2/lif2/out 10) = 254.4 MB = 0.24 GiB
    assert res.exit_code == 2, res.stderr
    assert "a run of 100000 steps needs 0.2 GiB of buffers per sample; only 0.0 GiB" in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1
