"""--resume for every trainer: a run killed with SIGKILL right after its first epoch checkpoint and
resumed ends bit-identical (weights, optimiser state, metrics) to a run that was never interrupted.

Each case runs the real CLI in subprocesses (one torch thread, tiny configs on digits, the shared
text file, or MNIST for the ResNet): a reference run, a run killed with ``kill -9`` as soon as
``model.pt`` appears (its exit status proves it died mid-run), and ``--resume`` of the killed run.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from snncc.training.checkpoint import CheckpointError, restore
from snncc.training.recipes import RECIPES, recipe_defaults
from snncc.training.train import TrainConfig

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
VOLATILE = {"seconds", "seconds_per_step", "resumed_from_epoch"}  # wall-clock times; the resume marker

CASES = {
    "bsd-mlp": ["train", "--method", "bsd", "--dataset", "digits", "--epochs", "6", "--sizes", "64,48,10",
                "--train-samples", "600", "--test-samples", "100"],
    "bptt-mlp": ["train", "--method", "bptt", "--dataset", "digits", "--epochs", "6", "--sizes", "64,48,10",
                 "--train-samples", "600", "--test-samples", "100"],
    "ann-mlp": ["train", "--method", "ann", "--model", "mlp", "--dataset", "digits", "--epochs", "6",
                "--sizes", "64,48,10", "--train-samples", "600", "--test-samples", "100"],
    "bsd-cnn": ["train", "--method", "bsd", "--model", "cnn", "--width", "0.0625", "--dataset", "digits",
                "--epochs", "3", "--train-samples", "192", "--test-samples", "32", "--augment", "randaugment"],
    "bsd-rnn": ["bsd", "train-seq", "--task", "text", "--seq-len", "16", "--hidden", "32", "--train-samples", "256",
                "--test-samples", "32", "--epochs", "3"],
    "bsd-ae": ["bsd", "train-ae", "--dataset", "digits", "--width", "0.0625", "--epochs", "3",
               "--train-samples", "192", "--test-samples", "32"],
    "mskd-direct": ["train", "--method", "direct", "--model", "spike-resnet18", "--width", "0.0625",
                    "--dataset", "mnist", "--data-dir", str(SHARED), "--timesteps", "1", "--epochs", "4",
                    "--train-samples", "128", "--test-samples", "32", "--batch-size", "32"],
}


def _cmd(args, out):
    return [sys.executable, "-m", "snncc.cli", *args, "--threads", "1", "--quiet", "--out", str(out)]


def _env():
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONHASHSEED": "0"}


def _strip(obj):
    if isinstance(obj, dict):
        return {k: _strip(v) for k, v in obj.items() if k not in VOLATILE}
    if isinstance(obj, list):
        return [_strip(v) for v in obj]
    return obj


def _tensors(obj, prefix=""):
    """{path: bytes} of every tensor in a (nested) checkpoint."""
    if isinstance(obj, torch.Tensor):
        return {prefix: obj.contiguous().numpy().tobytes() + str(obj.dtype).encode()}
    out = {}
    if isinstance(obj, dict):
        for k, v in obj.items():
            out.update(_tensors(v, f"{prefix}/{k}"))
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            out.update(_tensors(v, f"{prefix}/{i}"))
    return out


def _run_killed(args, out, timeout=120):
    """Start the run, SIGKILL it as soon as its first checkpoint exists; -> the checkpoint's epoch."""
    proc = subprocess.Popen(_cmd(args, out), env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + timeout
    try:
        while not (out / "model.pt").exists():
            if proc.poll() is not None:
                pytest.fail(f"run ended before its first checkpoint: {proc.stderr.read().decode()[-500:]}")
            if time.monotonic() > deadline:
                pytest.fail("no checkpoint within the timeout")
            time.sleep(0.005)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait()
    assert proc.returncode == -signal.SIGKILL  # died mid-run, not after finishing
    return torch.load(out / "model.pt", weights_only=True)["epoch"]


@pytest.mark.parametrize("case", list(CASES))
def test_kill9_then_resume_is_bit_identical(case, tmp_path):
    args = CASES[case]
    if "--data-dir" in args and not (SHARED / "mnist").is_dir():
        pytest.skip("shared MNIST not found")
    full, part = tmp_path / "full", tmp_path / "part"
    subprocess.run(_cmd(args, full), env=_env(), check=True, capture_output=True)
    killed_at = _run_killed(args, part)
    epochs = int(args[args.index("--epochs") + 1])
    assert 1 <= killed_at < epochs
    res = subprocess.run(_cmd(args, part) + ["--resume"], env=_env(), capture_output=True, text=True)
    assert res.returncode == 0, res.stderr[-800:]
    a = torch.load(full / "model.pt", weights_only=True)
    b = torch.load(part / "model.pt", weights_only=True)
    assert a["epoch"] == b["epoch"] == epochs and a["config"] == b["config"]
    ta, tb = _tensors(a), _tensors(b)
    assert ta.keys() == tb.keys() and len(ta) > 0
    assert [k for k in ta if ta[k] != tb[k]] == []  # weights, optimiser moments, RNG state: byte for byte
    ma = json.loads((full / "metrics.json").read_text())
    mb = json.loads((part / "metrics.json").read_text())
    assert mb["resumed_from_epoch"] == killed_at and "resumed_from_epoch" not in ma
    assert json.dumps(_strip(ma), sort_keys=True) == json.dumps(_strip(mb), sort_keys=True)
    assert ma["recipe"] == ma["config"]["recipe"] == "cpu"


def test_resume_refuses_another_run_and_missing_state(tmp_path):
    """--resume on a checkpoint of a different config (anything but --epochs) is refused, naming the keys."""
    from click.testing import CliRunner

    from snncc.cli import main as cli
    args = ["train", "--method", "bsd", "--dataset", "digits", "--epochs", "1", "--sizes", "64,16,10",
            "--train-samples", "64", "--test-samples", "32", "--threads", "1", "--quiet", "--out", str(tmp_path)]
    assert CliRunner().invoke(cli, args).exit_code == 0
    res = CliRunner().invoke(cli, args + ["--lr", "0.01", "--resume"])
    assert res.exit_code == 2 and "cannot resume, config differs in lr" in res.output
    assert len(res.output.strip().splitlines()) == 1
    more = CliRunner().invoke(cli, args[:6] + ["2"] + args[7:] + ["--resume"])  # more epochs: continues
    assert more.exit_code == 0 and json.loads((tmp_path / "metrics.json").read_text())["resumed_from_epoch"] == 1
    # a checkpoint without training state (e.g. written before --resume existed)
    ckpt = torch.load(tmp_path / "model.pt", weights_only=True)
    del ckpt["resume"]
    torch.save(ckpt, tmp_path / "old.pt")
    from snncc.training.train import build_model, make_optimizer
    cfg = TrainConfig.from_dict(ckpt["config"])
    model = build_model(cfg)
    with pytest.raises(CheckpointError, match="no training state"):
        restore(tmp_path / "old.pt", ckpt["format"], ckpt["config"], model, make_optimizer(model, 1e-3), None)


def test_a_run_written_before_a_config_field_existed_resumes(tmp_path):
    """A checkpoint whose config lacks a field added later (here init_gain, issue 16) resumes when the field's
    recorded meaning (its default) equals the new run's, and is refused naming it when it does not."""
    from click.testing import CliRunner

    from snncc.cli import main as cli
    args = ["train", "--method", "bsd", "--dataset", "digits", "--epochs", "1", "--sizes", "64,16,10",
            "--train-samples", "64", "--test-samples", "32", "--threads", "1", "--quiet", "--out", str(tmp_path)]
    assert CliRunner().invoke(cli, args).exit_code == 0
    ckpt = torch.load(tmp_path / "model.pt", weights_only=True)
    del ckpt["config"]["init_gain"]  # as written before the field existed
    torch.save(ckpt, tmp_path / "model.pt")
    res = CliRunner().invoke(cli, args + ["--init-gain", "2", "--resume"])
    assert res.exit_code == 2 and "cannot resume, config differs in init_gain" in res.output
    more = CliRunner().invoke(cli, args[:6] + ["2"] + args[7:] + ["--resume"])
    assert more.exit_code == 0, more.output
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["resumed_from_epoch"] == 1 and len(metrics["history"]) == 2


# ---------------------------------------------------------------- recipes
def test_recipes_give_the_papers_protocols_and_explicit_values_win():
    cpu = TrainConfig(method="bsd", model="mlp", dataset="mnist").resolved()
    paper = TrainConfig(method="bsd", model="mlp", dataset="mnist", recipe="paper").resolved()
    # App. E.2.1: lr 1e-4, RandAugment, cosine, batch 128, thresholds 0.2 / 0.1
    assert (paper.lr, paper.augment, paper.schedule, paper.batch_size) == (1e-4, "randaugment", "cosine", 128)
    assert (paper.v_th, paper.v_th_backward, paper.warmup_steps) == (0.2, 0.1, 0)
    assert cpu.lr == 1e-3 and cpu.recipe == "cpu" and paper.to_dict()["recipe"] == "paper"
    # App. E.2.2: CNN thresholds 1.0, 100 warm-up steps, RandAugment magnitude 4, lr 1e-3
    cnn = TrainConfig(method="bsd", model="cnn", dataset="mnist", recipe="paper").resolved()
    assert (cnn.lr, cnn.v_th, cnn.v_th_backward, cnn.warmup_steps, cnn.ra_m) == (1e-3, 1.0, 1.0, 100, 4)
    # an explicit value beats the recipe
    assert TrainConfig(dataset="mnist", recipe="paper", lr=3e-3, augment="none").resolved().lr == 3e-3
    # MSKD (Table 6): SGD lr 0.6, weight decay 2e-5, 300 epochs
    mskd = recipe_defaults("paper", "mskd", "resnet", "cifar10")
    assert (mskd["optimizer"], mskd["lr"], mskd["weight_decay"], mskd["epochs"]) == ("sgd", 0.6, 2e-5, 300)
    assert set(RECIPES) == {"cpu", "paper"}


def test_cli_records_the_recipe(tmp_path):
    from click.testing import CliRunner

    from snncc.cli import main as cli
    res = CliRunner().invoke(cli, ["train", "--method", "bsd", "--dataset", "digits", "--epochs", "1",
                                   "--sizes", "64,16,10", "--train-samples", "64", "--test-samples", "32",
                                   "--recipe", "paper", "--threads", "1", "--quiet", "--out", str(tmp_path)])
    assert res.exit_code == 0, res.output
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["recipe"] == "paper" and metrics["config"]["lr"] == 1e-4
    assert torch.load(tmp_path / "model.pt", weights_only=True)["config"]["recipe"] == "paper"
    bad = CliRunner().invoke(cli, ["train", "--method", "bsd", "--recipe", "gpu", "--out", str(tmp_path / "x")])
    assert bad.exit_code == 2
