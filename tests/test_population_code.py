"""BSD label codes with P output neurons per class (--population): the code, the top losses, the cosine rule
against the same rule written out, the readout of the exported graph, the file and NIR round trips, and errors."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from snncc.ir.graph import SpikeGraph
from snncc.ir.ops import Dense, Input, Neuron, Readout
from snncc.ir.serialize import from_onnx, load, save, to_onnx
from snncc.ir.types import GraphError
from snncc.models.cnn import BSDCNN
from snncc.models.mlp import BSDMLP
from snncc.neuron import NeuronParams
from snncc.runtime import RunResult
from snncc.training.methods.bsd import cosine_predict, label_code, repeat_time, top_loss
from snncc.training.train import ConfigError, TrainConfig, build_model, load_checkpoint, train


def test_label_code_gives_each_class_a_block_of_p_ones():
    code = label_code(torch.tensor([2, 0]), 3, timesteps=2, population=4)
    assert code.shape == (2, 2, 12)
    want = torch.zeros(2, 12)
    want[0, 8:12] = 1.0
    want[1, 0:4] = 1.0
    assert torch.equal(code[0], want) and torch.equal(code[1], want)
    assert torch.equal(label_code(torch.tensor([1]), 3, 1), F.one_hot(torch.tensor([1]), 3).float()[None])


def test_cosine_rule_equals_the_cosine_written_out():
    """argmax_j cos(counts, T x code_j), computed from its definition, on random integer counts with ties."""
    g = torch.Generator().manual_seed(0)
    for p in (1, 2, 5):
        counts = torch.randint(0, 5, (400, 3 * p), generator=g).double()
        codes = label_code(torch.arange(3), 3, 4, p).sum(0).double()  # (classes, 3p): T x code_j
        cos = torch.stack([F.cosine_similarity(counts, c[None].expand_as(counts), dim=1, eps=1e-30)
                           for c in codes], dim=1)
        # equal-norm codes: the cosine is the block sum over one common factor, so ties are exact ties
        best = cos.max(1, keepdim=True).values
        tied = (cos >= best * (1 - 1e-12)).double()
        first = tied.argmax(1)  # the lowest class among the tied
        assert torch.equal(cosine_predict(counts, p), first)
        sums = counts.reshape(400, 3, p).sum(2).numpy()
        readout = Readout("count", population=p)
        assert np.array_equal(readout.predict(counts.numpy()), sums.argmax(1))
        assert np.array_equal(readout.predict(counts.numpy()), cosine_predict(counts, p).numpy())


def test_top_losses_with_blocks_by_hand():
    neuron = NeuronParams(model="lif", tau=2.0, v_th=0.3)
    g = torch.Generator().manual_seed(1)
    v = torch.randn(4, 5, 6, generator=g, dtype=torch.float64)  # T=4, B=5, 3 classes x P=2
    y = torch.tensor([0, 2, 1, 1, 0])
    logits = v.mean(0).reshape(5, 3, 2).mean(2)
    assert top_loss("ce", v, y, neuron, 2).item() == pytest.approx(
        F.cross_entropy(logits, y, reduction="sum").item(), rel=1e-12)
    level = 0.3 / (1 - 0.5 ** 4)
    m = v.mean(0) - level
    target = F.one_hot(y, 3).double().repeat_interleave(2, dim=1)
    want = -(target * torch.log(torch.sigmoid(m)) + (1 - target) * torch.log(1 - torch.sigmoid(m))).sum()
    assert top_loss("firing", v, y, neuron, 2).item() == pytest.approx(want.item(), rel=1e-12)


def test_mlp_and_cnn_take_the_population_locally():
    torch.manual_seed(0)
    mlp = BSDMLP([16, 12, 6], timesteps=2, population=3, top="firing")
    assert mlp.theta[-1].in_features == 6  # the label path reads the 6-wide code
    x, y = torch.rand(5, 16), torch.tensor([0, 1, 1, 0, 1])
    losses, info = mlp.training_losses(repeat_time(x, 2), y)
    assert info["output"].shape == (2, 5, 6)
    # locality (C2) is unchanged: the top loss reaches only the last W
    top = losses["forward layer 3 (W2)"]
    grads = torch.autograd.grad(top, [p for p in mlp.parameters()], allow_unused=True)
    owners = [n for (n, _), gr in zip(mlp.named_parameters(), grads) if gr is not None and gr.abs().sum() > 0]
    assert owners == ["forward_path.4.module.weight"]
    with pytest.raises(ValueError, match="blocks of 4"):
        BSDMLP([16, 12, 6], population=4)
    cnn = BSDCNN((1, 8, 8), num_classes=3, width=1 / 32, timesteps=2, population=2)
    assert cnn.num_classes == 6 and cnn(torch.zeros(2, 1, 1, 8, 8)).shape == (2, 1, 6)
    losses, info = cnn.training_losses(torch.rand(2, 4, 1, 8, 8), torch.tensor([0, 2, 1, 2]))
    assert info["output"].shape == (2, 4, 6) and all(torch.isfinite(v) for v in losses.values())


def test_config_sizes_and_refusals():
    cfg = TrainConfig(method="bsd", dataset="digits", population=4).resolved()
    assert cfg.sizes[-1] == 40 and cfg.population == 4
    assert build_model(cfg).forward_path[-2].module.out_features == 40
    for bad, match in [(dict(population=0), "population must be an integer"),
                       (dict(population=2.5), "population must be an integer"),
                       (dict(population=3, sizes=(64, 32, 10)), r"the last 30 \(10 classes x 3"),
                       (dict(method="bptt", population=2), "population applies to --method bsd")]:
        with pytest.raises(ConfigError, match=match) as info:
            TrainConfig(dataset="digits", **bad).validate()
        assert "\n" not in str(info.value)


def test_readout_op_checks_and_file_round_trip(tmp_path):
    g = SpikeGraph("pop")
    g.add("in", Input((4,)))
    g.add("fc", Dense(np.eye(6, 4)), ["in"])
    g.add("lif", Neuron(NeuronParams(model="lif", tau=2.0, v_th=0.5)), ["fc"])
    g.add("out", Readout("count", population=3), ["lif"])
    g.infer()
    back = from_onnx(to_onnx(g))
    assert back.readout_op().population == 3
    save(g, tmp_path / "g.snn.onnx")
    assert load(tmp_path / "g.snn.onnx").readout_op().population == 3
    res = RunResult(output=np.array([[1, 0, 2, 0, 0, 2.0], [0, 0, 0, 4, 0, 0.0]]), timesteps=4, batch=2)
    assert res.predictions(g).tolist() == [0, 1]  # blocks (3, 2), (0, 4)
    bad = SpikeGraph("bad")
    bad.add("in", Input((4,)))
    bad.add("fc", Dense(np.eye(5, 4)), ["in"])
    bad.add("lif", Neuron(NeuronParams(model="lif", tau=2.0, v_th=0.5)), ["fc"])
    bad.add("out", Readout("count", population=2), ["lif"])
    with pytest.raises(GraphError, match="cannot be split into blocks of 2"):
        bad.infer()
    for p in (0, -1, 1.5, True):
        with pytest.raises(GraphError, match="population must be an integer"):
            Readout("count", population=p)


def test_trained_population_model_exports_and_runs_like_the_module(tmp_path):
    """digits, P = 4: the exported graph's readout (numba) predicts as the module does, sample for sample;
    the checkpoint records P; the NIR round trip keeps it."""
    from snncc.cli.cmd_train import export_checkpoint
    from snncc.data.datasets import load_split
    from snncc.nir import from_nir, to_nir
    from snncc.sims import numba_sim
    cfg = TrainConfig(method="bsd", dataset="digits", epochs=6, lr=5e-3, population=4)
    metrics = train(cfg, tmp_path, progress=False)
    assert metrics["config"]["population"] == 4 and metrics["test_accuracy"] > 0.5
    model, loaded = load_checkpoint(tmp_path / "model.pt")
    assert loaded.population == 4 and model.population == 4
    graph = export_checkpoint(tmp_path / "model.pt")
    assert graph.readout_op().population == 4
    x, y = load_split("digits", "test")
    with torch.no_grad():
        counts = model(repeat_time(torch.as_tensor(x, dtype=torch.float32), cfg.timesteps)).sum(0)
    res = numba_sim.run(graph, x, cfg.timesteps)
    assert np.array_equal(res.output.reshape(len(x), -1), counts.numpy())
    assert np.array_equal(res.predictions(graph), cosine_predict(counts, 4).numpy())
    assert float((res.predictions(graph) == y).mean()) == pytest.approx(metrics["test_accuracy"])
    back = from_nir(to_nir(graph), dt=1e-4)
    assert back.readout_op().population == 4
