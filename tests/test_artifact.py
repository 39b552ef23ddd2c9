"""Compiled artifacts: marker and format version, validation on load (missing / unknown fields,
bogus precision), and a folder without its target file is refused, never run on another backend."""
import json

import numpy as np
import pytest
from click.testing import CliRunner

from graphs import mlp
from snncc.artifact import FORMAT_VERSION, MARKER, ArtifactError, compile_artifact, read_artifact
from snncc.backends import lava as lb
from snncc.ir import serialize


def invoke(*args):
    from snncc.cli import main
    return CliRunner(mix_stderr=False).invoke(main, [str(a) for a in args])


@pytest.fixture
def graph():
    return mlp(np.random.default_rng(0))


def _edit(path, fn):
    cfg = json.loads(path.read_text())
    fn(cfg)
    path.write_text(json.dumps(cfg))


@pytest.mark.parametrize("target,fname", [("numba", "target.json"), ("torch", "target.json"), ("lava", "lava.json")])
def test_header_and_round_trip(graph, tmp_path, target, fname):
    out = compile_artifact(graph, target, None, tmp_path / "art")
    cfg = json.loads((out / fname).read_text())
    assert cfg["artifact"] == MARKER == "snncc" and cfg["format_version"] == FORMAT_VERSION == 1
    assert cfg["target"] == target
    prog = read_artifact(out, lowered=True)
    assert prog.backend == target and prog.graph.order() == graph.order() and prog.config == cfg
    x = np.random.default_rng(1).random((3, 1, 8, 8))
    if target != "lava":   # (running Lava needs lava-nc: tests/test_lava_*.py)
        from snncc.runtime import get_backend
        from snncc.backends import torch_ref
        got = get_backend(target).run(prog, x, 5)
        np.testing.assert_array_equal(got.output, torch_ref.run(graph, x, 5).output)


def test_lava_options_recorded(graph, tmp_path):
    out = lb.compile_graph(graph, tmp_path / "art", lb.Options(fixed_point=True))
    cfg = json.loads((out / "lava.json").read_text())
    assert cfg["options"] == {"fixed_point": True, "graded_spikes": False, "netx": False}
    assert read_artifact(out).options == lb.Options(fixed_point=True)


def test_folder_without_target_file_is_refused(graph, tmp_path):
    out = compile_artifact(graph, "numba", None, tmp_path / "art")
    (out / "target.json").unlink()
    with pytest.raises(ArtifactError, match=r"art: no target file \(lava.json or target.json\)"):
        read_artifact(out)
    res = invoke("run", out, "--dataset", "digits", "--limit", 2)
    assert res.exit_code == 2 and "no target file" in res.stderr and "accuracy" not in res.stdout
    # a lone graph file in a folder is not an artifact either
    d = tmp_path / "plain"
    d.mkdir()
    serialize.save(graph, d / "graph.snn.onnx")
    assert invoke("run", d, "--dataset", "digits", "--limit", 2).exit_code == 2


@pytest.mark.parametrize("edit,pattern", [
    (lambda c: c.pop("artifact"), r"target.json: missing field 'artifact'"),
    (lambda c: c.update(artifact="other"), r"target.json: field 'artifact' is 'other'"),
    (lambda c: c.update(format_version=2), r"target.json: field 'format_version' is 2"),
    (lambda c: c.update(target="lava"), r"target.json: field 'target' is 'lava'"),
    (lambda c: c.update(target="gpu"), r"target.json: field 'target' is 'gpu'"),
    (lambda c: c.update(extra=1), r"target.json: unknown field 'extra'"),
    (lambda c: c.pop("layers"), r"target.json: missing field 'layers'"),
    (lambda c: c["options"].update(bogus=True), r"target.json: unknown field 'options.bogus'"),
    (lambda c: c["options"].pop("threads"), r"target.json: missing field 'options.threads'"),
    (lambda c: c["options"].update(threads="4"), r"target.json: field 'options.threads' is '4'"),
    (lambda c: c.update(format="snncc-numba/9"), r"target.json: field 'format' is 'snncc-numba/9'"),
])
def test_bad_target_json_is_refused(graph, tmp_path, edit, pattern):
    out = compile_artifact(graph, "numba", None, tmp_path / "art")
    _edit(out / "target.json", edit)
    with pytest.raises(ArtifactError, match=pattern) as ei:
        read_artifact(out)
    assert "\n" not in str(ei.value)
    res = invoke("run", out, "--dataset", "digits", "--limit", 2)
    assert res.exit_code == 2 and res.stderr.startswith("error: ") and "target.json" in res.stderr


@pytest.mark.parametrize("edit,pattern", [
    (lambda c: c.update(precision="float16"), r"lava.json: field 'precision' is 'float16'"),
    (lambda c: c.update(precision="fixed_pt"), r"lava.json: field 'precision' \(fixed_pt\) contradicts"),
    (lambda c: c.update(surprise=[]), r"lava.json: unknown field 'surprise'"),
    (lambda c: c.pop("processes"), r"lava.json: missing field 'processes'"),
    (lambda c: c.update(graded_spikes="yes"), r"lava.json: field 'graded_spikes' is not true/false"),
    (lambda c: c.pop("options"), r"lava.json: missing field 'options'"),
    (lambda c: c["options"].update(fixed_point=1), r"lava.json: field 'options.fixed_point' is 1"),
])
def test_bad_lava_json_is_refused(graph, tmp_path, edit, pattern):
    out = lb.compile_graph(graph, tmp_path / "art")
    _edit(out / "lava.json", edit)
    with pytest.raises(lb.LoweringError, match=pattern) as ei:
        lb.load_artifact(out)
    assert "\n" not in str(ei.value)


def test_expect_another_target(graph, tmp_path):
    out = compile_artifact(graph, "numba", None, tmp_path / "art")
    with pytest.raises(lb.LoweringError, match="a numba artifact, not a lava one"):
        lb.load_artifact(out)
