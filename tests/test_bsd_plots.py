"""Per-epoch BSD analyses (Hamming similarity, W-Theta alignment, firing rates) and their plots."""
import json

import pytest
import torch

from snncc.analysis.bsd_plots import PlotError, plot_run
from snncc.models.mlp import BSDMLP
from snncc.training.train import TrainConfig, hamming_similarity, train


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    cfg = TrainConfig(method="bsd", dataset="digits", epochs=2, sizes=(64, 32, 24, 10),
                      train_samples=300, test_samples=100)
    train(cfg, out, progress=False, threads=1)
    return out


def test_history_records_the_analyses(run_dir):
    hist = json.loads((run_dir / "metrics.json").read_text())["history"]
    assert len(hist) == 2
    for h in hist:
        assert set(h["hamming"]) == {"layer 2", "layer 3", "layer 4"}
        assert set(h["alignment"]) == {"W1", "W2", "W3"}
        assert all(0 <= v <= 1 for v in h["hamming"].values())
        assert all(-1 <= v <= 1 for v in h["alignment"].values())


def test_plot_run_writes_nonempty_pngs(run_dir):
    paths = plot_run(run_dir)
    assert sorted(p.name for p in paths) == ["alignment.png", "curves.png", "firing_rates.png", "hamming.png"]
    for p in paths:
        data = p.read_bytes()
        assert p.parent == run_dir and len(data) > 1000 and data[:8] == b"\x89PNG\r\n\x1a\n"


def test_plot_run_skips_missing_analyses_and_reports_bad_dirs(tmp_path):
    with pytest.raises(PlotError, match="no metrics.json"):
        plot_run(tmp_path)
    (tmp_path / "metrics.json").write_text(json.dumps({"history": [
        {"epoch": 1, "train_loss": 2.0, "train_accuracy": 0.5, "test_accuracy": 0.4, "firing_rates": {}}]}))
    assert [p.name for p in plot_run(tmp_path)] == ["curves.png"]  # BPTT/ANN-like run: no Type 2 path


def test_hamming_and_alignment_values():
    s = torch.tensor([[1.0, 0.0, 1.0, 1.0]])
    spikes = {"s2": s, "s'2": torch.tensor([[1.0, 1.0, 1.0, 0.0]]), "s1": s}
    assert hamming_similarity(spikes) == {"layer 2": 0.5}
    model = BSDMLP((6, 5, 4))
    with torch.no_grad():
        for w, th in zip([model.forward_path[2].module, model.forward_path[4].module], model.theta):
            th.weight.copy_(w.weight.T)  # symmetric paths: cosine 1
    assert all(v == pytest.approx(1.0) for v in model.weight_alignment().values())


def test_bench_train_reports_both_methods():
    from snncc.bench.train_bench import bench_train
    res = bench_train(model="mlp", dataset="digits", batch_size=16, steps=2, warmup=1, threads=1)
    assert res["bsd_ms"] > 0 and res["bptt_ms"] > 0 and len(res["bsd_ms_all"]) == 2
    assert res["ratio"] == pytest.approx(res["bsd_ms"] / res["bptt_ms"])
    assert res["architecture"] == [64, 256, 256, 10]


def test_plots_never_overwrite_a_users_png(tmp_path):
    """`snncc bsd plots` writes PNGs into the run folder: one the user put there under the same name is refused
    (exit 2, one line naming it, bytes unchanged) unless --force; snncc's own PNGs are replaced freely."""
    from click.testing import CliRunner

    from snncc.cli import main
    (tmp_path / "metrics.json").write_text(json.dumps({"history": [{"epoch": 1, "test_accuracy": 0.5, "loss": 1.0}]}))
    runner = CliRunner(mix_stderr=False)
    assert runner.invoke(main, ["bsd", "plots", str(tmp_path)]).exit_code == 0
    assert runner.invoke(main, ["bsd", "plots", str(tmp_path)]).exit_code == 0  # its own PNG: replaced
    mine = b"\x89PNG\r\n\x1a\n" + b"my own figure"
    (tmp_path / "curves.png").write_bytes(mine)
    res = runner.invoke(main, ["bsd", "plots", str(tmp_path)])
    lines = res.stderr.strip().splitlines()
    assert res.exit_code == 2 and len(lines) == 1 and str(tmp_path / "curves.png") in lines[0]
    assert (tmp_path / "curves.png").read_bytes() == mine
    assert runner.invoke(main, ["bsd", "plots", str(tmp_path), "--force"]).exit_code == 0
    assert (tmp_path / "curves.png").read_bytes() != mine
