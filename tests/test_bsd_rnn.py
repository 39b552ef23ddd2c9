"""BSD-RNN (App. C): sequence loaders, locality, a short run per task, and the recurrent export
(numba and torch backends spike-identical, and equal to the training module's own spikes)."""
import gzip

import numpy as np
import pytest
import torch

from snncc.backends import torch_ref as torch_backend
from snncc.data.sequences import SequenceError, load_text, load_timeseries
from snncc.export import ExportError
from snncc.passes.validate import check_fully_spiking
from snncc.export import export_rnn
from snncc.models.rnn import BSDRNN
from snncc.training.bsd_seq import SeqConfig, load_seq_checkpoint, train_seq
from snncc.training.train import ConfigError
from snncc.sims import numba_sim


pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models: 1 thread is fastest on a busy box


@pytest.fixture
def text_file(tmp_path):
    p = tmp_path / "t.txt"
    p.write_text("ab  ba\n\n\tabba " * 40)
    return p


def test_text_loader_collapses_whitespace_and_splits(text_file):
    tr = load_text("train", text_file, seq_len=8)
    te = load_text("test", text_file, seq_len=8)
    assert tr.vocab == " ab" and tr.x.shape[1:] == (8, 3) and tr.y.shape[1:] == (8,)
    # targets are the inputs shifted by one
    np.testing.assert_array_equal(tr.x[:, 1:].argmax(-1), tr.y[:, :-1])
    n = len("ab ba abba " * 40)  # every whitespace run is one space
    assert len(tr.x) == (int(0.9 * n) - 8 + 7) // 8 and len(te.x) >= 1


def test_timeseries_loader_zscores_with_train_statistics(tmp_path):
    rows = np.arange(200, dtype=float).reshape(100, 2) * [1.0, 3.0]
    p = tmp_path / "s.txt.gz"
    with gzip.open(p, "wt") as f:
        f.write("\n".join(",".join(f"{v:.6f}" for v in r) for r in rows))
    tr = load_timeseries("train", p, seq_len=5, stride=1)
    te = load_timeseries("test", p, seq_len=5, stride=1)
    train_rows = rows[:90]
    np.testing.assert_allclose(tr.mean, train_rows.mean(0))
    np.testing.assert_allclose(tr.x[0, 0], (rows[0] - train_rows.mean(0)) / train_rows.std(0), rtol=1e-5)
    np.testing.assert_array_equal(tr.x[:, 1:], tr.y[:, :-1])
    assert te.x.shape == (5, 5, 2) and te.x.mean() > 1.0  # later rows lie above the train mean


def test_missing_and_malformed_files_raise_clear_errors(tmp_path):
    with pytest.raises(SequenceError, match="text data file not found"):
        load_text("train", tmp_path / "nope.txt")
    (tmp_path / "bad.txt").write_text("1,2\nx,y\n")
    with pytest.raises(SequenceError, match="not a numeric comma-separated table"):
        load_timeseries("train", tmp_path / "bad.txt")
    with pytest.raises(SequenceError, match="too few"):
        load_text("test", tmp_path / "bad.txt", seq_len=32)


def test_hidden_spikes_are_binary():  # locality (C2): tests/test_local_losses.py
    torch.manual_seed(0)
    model = BSDRNN(5, 5, hidden=12, v_th=0.1)
    x = torch.nn.functional.one_hot(torch.randint(0, 5, (6, 7)), 5).float()
    _, info = model.training_losses(x, torch.randint(0, 5, (6, 7)))
    for s in info["spikes"].values():
        assert torch.equal(s, (s > 0.5).float()) and s.shape == (7, 6, 12)


def test_export_spikes_match_both_backends_and_the_module():
    torch.manual_seed(1)
    model = BSDRNN(6, 6, hidden=20, v_th=0.15).double()
    with torch.no_grad():
        model.w_hh.weight.mul_(3.0)  # make the recurrence matter
    length = 12
    graph = export_rnn(model, length)
    assert graph.inputs("hidden")[1].delay == 1
    assert check_fully_spiking(graph).fully_spiking
    x = torch.nn.functional.one_hot(torch.randint(0, 6, (9, length)), 6).double()
    ref = torch_backend.run(graph, x.numpy(), length, record=True)
    sim = numba_sim.run(graph, x.numpy(), length, record=True)
    np.testing.assert_array_equal(ref.trains["hidden"], sim.trains["hidden"])
    np.testing.assert_array_equal(ref.output, sim.output)
    with torch.no_grad():
        _, spikes = model.type1(x.transpose(0, 1))
    assert spikes.sum() > 0 and (spikes[1:] != spikes[:-1]).any()
    np.testing.assert_array_equal(ref.trains["hidden"], spikes.numpy().astype(np.uint8))
    # the analog readout o = W_ho h, rebuilt off-graph from the recorded spikes, equals the model's output
    rebuilt = model.outputs_from_spikes(x, torch.from_numpy(sim.trains["hidden"]).double())
    torch.testing.assert_close(rebuilt, model(x))
    with pytest.raises(ExportError, match="time-varying analog input"):
        export_rnn(BSDRNN(3, 3, hidden=4, task="timeseries"), 5)


def test_four_lif_steps_per_element_hold_the_input_and_export_spike_exactly():
    torch.manual_seed(3)
    model = BSDRNN(6, 6, hidden=16, v_th=0.15, steps_per_element=4).double()
    length, k = 5, 4
    x = torch.nn.functional.one_hot(torch.randint(0, 6, (7, length)), 6).double()
    # without recurrence, each element's current is W_ih x_i on all 4 of its steps, and o_i = W_ho W_ih x_i
    with torch.no_grad():
        saved = model.w_hh.weight.clone()
        model.w_hh.weight.zero_()
        h, s = model.type1(x.transpose(0, 1))
        assert h.shape == s.shape == (length * k, 7, 16)
        expected = model.w_ih(x.transpose(0, 1)).repeat_interleave(k, dim=0)
        torch.testing.assert_close(h, expected, rtol=0, atol=0)
        torch.testing.assert_close(model(x), model.w_ho(model.w_ih(x)))
        model.w_hh.weight.copy_(saved * 3.0)  # now the recurrence matters, step by step
        _, spikes = model.type1(x.transpose(0, 1))
    graph = export_rnn(model, length)
    assert graph.metadata["timesteps"] == length * k and graph.metadata["steps_per_element"] == k
    held = x.repeat_interleave(k, dim=1)  # each element fed for its 4 steps
    ref = torch_backend.run(graph, held.numpy(), length * k, record=True)
    assert spikes.sum() > 0
    np.testing.assert_array_equal(ref.trains["hidden"], spikes.numpy().astype(np.uint8))
    torch.testing.assert_close(model.outputs_from_spikes(x, torch.from_numpy(ref.trains["hidden"]).double()),
                               model(x))
    losses, info = model.training_losses(x, torch.randint(0, 6, (7, length)))
    assert info["output"].shape == (7, length, 6) and info["spikes"]["s'h"].shape == (length * k, 7, 16)
    # the paper recipe runs 4 steps per element; cpu and checkpoints written before the option, one
    assert SeqConfig(recipe="paper").resolved().steps_per_element == 4
    assert SeqConfig().resolved().steps_per_element == 1
    old = {k_: v for k_, v in SeqConfig().resolved().to_dict().items() if k_ != "steps_per_element"}
    assert SeqConfig.from_dict(old).steps_per_element == 1
    with pytest.raises(ConfigError, match="steps_per_element must be an integer >= 1"):
        SeqConfig(steps_per_element=0).validate()


@pytest.mark.parametrize("task, kw", [
    ("text", dict(hidden=64, train_samples=1500, test_samples=200, epochs=2, lr=3e-3, batch_size=32)),
    ("timeseries", dict(hidden=64, epochs=2, stride=2, lr=3e-3)),
])
def test_short_runs_learn_and_reload(task, kw, tmp_path):
    metrics = train_seq(SeqConfig(task=task, **kw), tmp_path, progress=False)
    hist = metrics["history"]
    assert len(hist) == 2 and set(hist[-1]["hamming"]) == {"layer h"} and len(hist[-1]["alignment"]) == 3
    if task == "text":
        assert hist[-1]["test_accuracy"] > 0.12  # 1 / vocabulary (~60 chars) is chance; ' ' alone ~0.17
        assert hist[-1]["firing_rates"]["sh"] > 0
    else:
        zero = float((load_timeseries("test").y ** 2).mean())  # predicting the train mean: ~0.72
        assert hist[-1]["test_mse"] < 0.8 * zero and hist[-1]["test_mae"] > 0
    model, cfg, vocab = load_seq_checkpoint(tmp_path / "model.pt")
    assert cfg.task == task and (vocab is not None) == (task == "text")
    raw = torch.load(tmp_path / "model.pt", weights_only=True)
    assert all(torch.equal(raw["state_dict"][k], v) for k, v in model.state_dict().items())


def test_seq_config_errors(tmp_path):
    with pytest.raises(ConfigError, match="lam must be"):
        train_seq(SeqConfig(lam=-1.0), tmp_path)
    with pytest.raises(ConfigError, match="v_th must be"):
        train_seq(SeqConfig(v_th=0.0), tmp_path)
    with pytest.raises(ConfigError, match="unknown task"):
        train_seq(SeqConfig(task="audio"), tmp_path)
    with pytest.raises(SequenceError, match="not found"):
        train_seq(SeqConfig(data_path=str(tmp_path / "missing.txt"), epochs=1), tmp_path)
