"""The command line end to end, and its error paths (one line, non-zero exit, no traceback, no partial file)."""
import json
import subprocess
import sys

import numpy as np
import pytest
from click.testing import CliRunner
from graphs import mlp, residual

from snncc.cli import main
from snncc.ir import serialize


def invoke(*args):
    return CliRunner(mix_stderr=False).invoke(main, [str(a) for a in args])


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    res = invoke("train", "--method", "bsd", "--dataset", "digits", "--epochs", 2, "--train-samples", 400,
                 "--seed", 3, "--out", out, "--quiet")
    assert res.exit_code == 0, res.stderr
    return out


def test_train_writes_checkpoint_and_metrics(trained):
    metrics = json.loads((trained / "metrics.json").read_text())
    assert 0.0 <= metrics["test_accuracy"] <= 1.0 and len(metrics["history"]) == 2
    import torch
    ckpt = torch.load(trained / "model.pt", weights_only=True)
    assert ckpt["config"]["method"] == "bsd"


def test_export_validate_run_energy(trained, tmp_path):
    model = tmp_path / "m.snn.onnx"
    assert invoke("export", trained / "model.pt", "-o", model).exit_code == 0
    res = invoke("validate", model, "--json")
    assert res.exit_code == 0 and json.loads(res.stdout)["fully_spiking"] is True
    runs = {}
    for backend in ("torch", "numba"):
        res = invoke("run", model, "--backend", backend, "--dataset", "digits", "--limit", 40, "--json")
        assert res.exit_code == 0, res.stderr
        runs[backend] = json.loads(res.stdout)
        assert set(runs[backend]) == {"backend", "accuracy", "samples", "timesteps", "layers"}
        assert runs[backend]["samples"] == 40
        assert "sample/s" not in res.stderr  # --json: no progress bar
    assert runs["torch"]["layers"] == runs["numba"]["layers"]
    assert runs["torch"]["accuracy"] == runs["numba"]["accuracy"]
    res = invoke("run", model, "--dataset", "digits", "--limit", 40)
    assert res.exit_code == 0 and "accuracy" in res.stdout
    assert "40/40" in res.stderr and "sample/s" in res.stderr  # the progress bar counts samples
    res = invoke("energy", "report", model, "--dataset", "digits", "--limit", 40, "--json", tmp_path / "e.json")
    assert res.exit_code == 0, res.stderr
    rep = json.loads((tmp_path / "e.json").read_text())
    assert {"total_energy_pj", "ann_energy_pj"} <= set(rep)
    assert all({"firing_rate", "sops", "macs", "energy_pj"} <= set(r) for r in rep["layers"])
    assert "E_MAC=4.6 pJ" in res.stdout
    assert "40/40" in res.stderr and "sample/s" in res.stderr


def test_validate_names_hybrid_nodes(rng, tmp_path):
    serialize.save(residual(rng, "sew"), tmp_path / "sew.snn.onnx")
    res = invoke("validate", tmp_path / "sew.snn.onnx")
    assert res.exit_code == 1
    assert "hybrid: add [count]: spike ADD" in res.stdout
    res = invoke("validate", tmp_path / "sew.snn.onnx", "--json")
    assert res.exit_code == 1 and json.loads(res.stdout)["violations"][0]["node"] == "add"


@pytest.mark.parametrize("args, message", [
    (["validate", "{tmp}/missing.snn.onnx"], "cannot read spike graph"),
    (["run", "{tmp}/garbage.snn.onnx", "--dataset", "digits"], "corrupt or truncated"),
    (["run", "{tmp}/mlp.snn.onnx", "--backend", "fpga"], "unknown backend 'fpga'"),
    (["run", "{tmp}/mlp.snn.onnx", "--dataset", "imagenet"], "unknown dataset"),
    (["run", "{tmp}/mlp.snn.onnx", "--dataset", "mnist", "--data-dir", "{tmp}/nodata"], "{tmp}/nodata"),
    (["run", "{tmp}/mlp28.snn.onnx", "--dataset", "digits"], "does not match the graph's input"),
    (["export", "{tmp}/missing.pt", "-o", "{tmp}/out.snn.onnx"], "missing.pt"),
    (["export", "{tmp}/garbage.snn.onnx", "-o", "{tmp}/out.snn.onnx"], "checkpoint"),
    (["train", "--method", "bsd", "--model", "transformer", "--out", "{tmp}/r"], "model"),
    (["train", "--method", "bsd", "--dataset", "cifar10", "--data-dir", "{tmp}/nodata", "--out", "{tmp}/r"], "nodata"),
    (["train", "--method", "bptt", "--top-loss", "firing", "--out", "{tmp}/r"], "top_loss 'firing' applies to --method bsd"),
    (["energy", "report", "{tmp}/missing.snn.onnx", "--dataset", "digits"], "cannot read spike graph"),
])
def test_bad_input_gives_one_line_and_nonzero_exit(args, message, rng, tmp_path):
    serialize.save(mlp(rng), tmp_path / "mlp.snn.onnx")
    serialize.save(mlp(rng, sizes=(784, 10), shape=(1, 28, 28)), tmp_path / "mlp28.snn.onnx")
    (tmp_path / "garbage.snn.onnx").write_bytes(b"\x00\x01garbage" * 50)
    before = set(tmp_path.iterdir())
    res = invoke(*[a.format(tmp=tmp_path) for a in args])
    assert res.exit_code == 2, (res.stdout, res.stderr)
    assert res.stderr.startswith("error: ") and len(res.stderr.strip().splitlines()) == 1
    assert message.format(tmp=tmp_path) in res.stderr
    assert "Traceback" not in res.stderr
    assert set(tmp_path.iterdir()) == before  # nothing (half-)written


def test_real_process_prints_no_traceback(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "snncc.cli", "validate", str(tmp_path / "nope.snn.onnx")],
                          capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr.strip().startswith("error: cannot read spike graph") and "Traceback" not in proc.stderr


def test_spikes_in_run_json_are_integers(rng, tmp_path):
    serialize.save(mlp(rng), tmp_path / "m.snn.onnx")
    res = invoke("run", tmp_path / "m.snn.onnx", "--backend", "torch", "--limit", 10, "--json")
    out = json.loads(res.stdout)
    assert all(isinstance(layer["spikes"], int) and layer["spikes"] > 0 for layer in out["layers"])
    assert np.isclose(out["accuracy"] * 10, round(out["accuracy"] * 10))


def test_compile_lava_and_numba_artifacts_run_like_torch(trained, tmp_path):
    model = tmp_path / "m.snn.onnx"
    assert invoke("export", trained / "model.pt", "-o", model).exit_code == 0
    outs = {}
    for target in ("lava", "numba"):
        res = invoke("compile", model, "--target", target, "-o", tmp_path / target)
        assert res.exit_code == 0, res.stderr
        assert (tmp_path / target / "summary.txt").is_file()
        res = invoke("run", tmp_path / target, "--dataset", "digits", "--limit", 6, "--json")
        assert res.exit_code == 0, res.stderr
        outs[target] = json.loads(res.stdout)
    ref = json.loads(invoke("run", model, "--backend", "torch", "--limit", 6, "--json").stdout)
    assert outs["lava"]["backend"] == "lava" and outs["numba"]["backend"] == "numba"
    assert outs["lava"]["layers"] == ref["layers"] == outs["numba"]["layers"]


def test_compile_refuses_hybrid_graph(rng, tmp_path):
    serialize.save(residual(rng, "sew"), tmp_path / "sew.snn.onnx")
    for target in ("lava", "numba"):
        res = invoke("compile", tmp_path / "sew.snn.onnx", "--target", target, "-o", tmp_path / "out")
        assert res.exit_code == 2 and "add" in res.stderr and "spike ADD" in res.stderr
        assert not (tmp_path / "out").exists()


def test_corrupt_artifact_directory(tmp_path):
    (tmp_path / "art").mkdir()
    (tmp_path / "art" / "lava.json").write_text("{not json")
    (tmp_path / "art" / "graph.snn.onnx").write_bytes(b"junk")
    res = invoke("run", tmp_path / "art", "--dataset", "digits")
    assert res.exit_code == 2 and res.stderr.startswith("error: ") and "corrupt" in res.stderr


def test_outputs_have_normal_permissions(rng, tmp_path):
    import os
    serialize.save(mlp(rng), tmp_path / "m.snn.onnx")
    assert oct(os.stat(tmp_path / "m.snn.onnx").st_mode & 0o777) == oct(0o666 & ~_umask())


def _umask():
    import os
    mask = os.umask(0)
    os.umask(mask)
    return mask


@pytest.fixture(scope="module")
def resnets(tmp_path_factory, shared_data_dir):
    """Tiny Spike-, SEW- and MS-ResNet-18 runs (1 epoch, 128 MNIST images) exported to graphs."""
    out = tmp_path_factory.mktemp("resnets")
    graphs_ = {}
    for family in ("spike", "sew", "ms"):
        run = out / family
        res = invoke("train", "--method", "direct", "--model", f"{family}-resnet18", "--dataset", "mnist",
                     "--data-dir", shared_data_dir, "--train-samples", 128, "--test-samples", 32, "--epochs", 1,
                     "--width", 0.125, "--timesteps", 2, "--batch-size", 32, "--out", run, "--quiet")
        assert res.exit_code == 0, res.stderr
        res = invoke("export", run / "model.pt", "-o", run / "m.snn.onnx")
        assert res.exit_code == 0, res.stderr
        graphs_[family] = run / "m.snn.onnx"
    return graphs_


@pytest.fixture(scope="module")
def shared_data_dir():
    from conftest import SHARED_DATA
    if not (SHARED_DATA / "mnist").is_dir():
        pytest.skip("shared datasets not found")
    return SHARED_DATA


def test_resnet_families_validate_and_compare(resnets, shared_data_dir, tmp_path):
    assert invoke("validate", resnets["spike"]).exit_code == 0
    for family, marker in (("sew", "spike ADD"), ("ms", "membrane shortcut")):
        res = invoke("validate", resnets[family])
        assert res.exit_code == 1 and marker in res.stdout
    res = invoke("energy", "report", resnets["spike"], resnets["sew"], resnets["ms"], "--data-dir", shared_data_dir,
                 "--limit", 8, "--png", tmp_path / "cmp.png", "--json", tmp_path / "cmp.json")
    assert res.exit_code == 0, res.stderr
    assert (tmp_path / "cmp.png").stat().st_size > 10_000
    models = json.loads((tmp_path / "cmp.json").read_text())["models"]
    assert [m["fully_spiking"] for m in models] == [True, False, False]
    ms = models[2]
    assert ms["total_macs"] > models[0]["total_macs"]  # analog-input synapses pay MACs at every step


def test_mskd_cli_errors(tmp_path):
    res = invoke("train", "--method", "mskd", "--model", "spike-resnet18", "--teacher", tmp_path / "none.pt",
                 "--out", tmp_path / "r", "--data-dir", tmp_path)
    assert res.exit_code == 2 and res.stderr.startswith("error: ")
    res = invoke("train", "--method", "bsd", "--teacher", "x.pt", "--out", tmp_path / "r")
    assert res.exit_code == 2 and "--teacher applies to the ResNet methods" in res.stderr
    res = invoke("train", "--method", "direct", "--model", "spike-resnet7", "--out", tmp_path / "r")
    assert res.exit_code == 2 and "spike-resnet7" in res.stderr


@pytest.mark.parametrize("args, key", [
    (["bench", "sim", "--no-lava", "--timesteps", 5, "--json"], "numba_vs_torch"),
    (["bench", "mskd", "--width", 0.0625, "--batch-size", 4, "--steps", 1, "--timesteps", 1, "--json"],
     "mskd_vs_kd_time"),
    (["bench", "compile", "--width", 0.0625, "--json"], "lower_s"),
    (["bench", "train", "--dataset", "digits", "--batch-size", 8, "--steps", 1, "--json"], "ratio"),
])
def test_bench_commands_print_json(args, key):
    res = invoke(*args)
    assert res.exit_code == 0, res.stderr
    assert json.loads(res.stdout)[key] > 0


def test_bench_plain_output():
    res = invoke("bench", "sim", "--no-lava", "--timesteps", 3)
    assert res.exit_code == 0 and "numba_ms_per_step:" in res.stdout


def test_quantize_reports_layers_and_fixed_vs_float_accuracy(trained, tmp_path):
    model = tmp_path / "m.snn.onnx"
    assert invoke("export", trained / "model.pt", "-o", model).exit_code == 0
    res = invoke("quantize", model, "--limit", 20, "--json", tmp_path / "q.json")
    assert res.exit_code == 0, res.stderr
    rep = json.loads((tmp_path / "q.json").read_text())
    assert rep["samples"] == 20 and 0 <= rep["fixed_accuracy"] <= 1
    assert {r["kind"] for r in rep["layers"]} == {"population", "dense"}
    assert all(0.5 < a <= 1.0 for a in rep["spike_agreement"].values())
    assert "fixed point" in res.stdout
