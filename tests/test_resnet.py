"""Spike / SEW / MS ResNets (snncc.models.resnet): shapes, export, validation, graph == module."""
import numpy as np
import pytest
import torch
from torch import nn

from snncc.backends import torch_ref as torch_backend
from snncc.export import ExportError, export
from snncc.ir.ops import Add
from snncc.models.resnet import ANN_NAMES, MODEL_NAMES, ModelError, build_resnet
from snncc.passes.validate import check_fully_spiking

T = 2
SHAPE = (1, 28, 28)


def small(name, **kw):
    kw = {"stem": "small", "width": 0.25, "timesteps": T, "input_size": SHAPE[1:], **kw}
    return build_resnet(name, 10, SHAPE[0], **kw)


def calibrate(m, seed=0):
    """Give the eval-mode network non-trivial batch-norm statistics and enough drive that
    spikes reach the output (so comparisons are not vacuous)."""
    g = torch.Generator().manual_seed(seed)
    dtype = next(m.parameters()).dtype
    for mod in m.modules():
        if isinstance(mod, nn.BatchNorm2d):
            mod.momentum = 1.0  # running stats := the statistics of the calibration batch
            mod.weight.data = 0.5 + torch.rand(mod.num_features, generator=g, dtype=dtype)
            mod.bias.data = 0.4 * torch.rand(mod.num_features, generator=g, dtype=dtype)
    m.fc.module.bias.data = 3.0 * torch.rand(m.fc.module.out_features, generator=g, dtype=dtype)  # some fire
    m.train()
    with torch.no_grad():
        m(m.encode(torch.rand(16, *SHAPE, generator=g, dtype=dtype)))
    return m.eval()


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_forward_shapes(name):
    m = small(name)
    x = torch.rand(2, *SHAPE)
    out, stem, blocks = m.forward_features(m.encode(x))
    assert out.shape == (T, 2, 10)
    assert m.logits(out).shape == (2, 10)
    assert stem.shape == (T, 2, m.stem_channels, 28, 28)
    assert len(blocks) == len(m.blocks()) == {18: 8, 34: 16, 50: 16, 101: 33}[m.depth]
    assert [b.shape[2] for b in blocks] == m.block_channels()
    assert blocks[-1].shape[-2:] == m.final_size == (4, 4)
    if m.family != "ms":  # Spike / SEW blocks emit spikes (SEW: spike counts 0..2)
        assert set(torch.unique(blocks[0]).tolist()) <= ({0.0, 1.0} if m.family == "spike" else {0.0, 1.0, 2.0})


@pytest.mark.parametrize("name", ANN_NAMES)
def test_ann_resnet_forward(name):
    assert small(name)(torch.rand(2, *SHAPE)).shape == (2, 10)


def test_imagenet_stem_and_readout_defaults():
    m = build_resnet("spike-resnet18", 5, 3, stem="imagenet", width=0.25, timesteps=2, input_size=(32, 32))
    assert m.final_size == (1, 1) and m.readout == "spike"
    assert m(m.encode(torch.rand(2, 3, 32, 32))).shape == (2, 2, 5)
    assert small("ms-resnet18").readout == "mean" and small("sew-resnet18").readout == "mean"
    g = export(m, torch.zeros(2, 1, 3, 32, 32))
    assert check_fully_spiking(g).fully_spiking
    with pytest.raises(ModelError, match="unknown model"):
        build_resnet("spike-resnet19", 10)
    with pytest.raises(ModelError, match="connect"):
        build_resnet("ms-resnet18", 10, connect="and")


@pytest.mark.parametrize("name", ["spike-resnet18", "spike-resnet50"])
def test_spike_resnet_is_fully_spiking(name):
    m = small(name)
    g = export(m, torch.zeros(T, 1, *SHAPE), timesteps=T)
    rep = check_fully_spiking(g)
    assert rep.fully_spiking, rep.violations
    assert not g.nodes(Add)  # every block's add was fused into its last population
    assert g.op(g.output_nodes[0]).mode == "count"
    # downsampling blocks: the block's conv-BN current and the 1x1 conv-BN current converge on one population
    last = "sn2" if m.depth < 50 else "sn3"
    assert len(g.inputs(f"layer2.0.{last}")) == 2
    assert [p.src for p in g.inputs(f"layer2.0.{last}")][1] == "layer2.0.downsample.0"
    assert len(g.inputs(f"layer1.1.{last}")) == 2  # identity spikes + current
    names = set(g.nodes())
    assert not any(k in n for n in names for k in ("adapter", "head", "recon"))


@pytest.mark.parametrize("name", ["sew-resnet18", "sew-resnet50"])
def test_sew_names_its_spike_adds(name):
    m = small(name)
    g = export(m, torch.zeros(T, 1, *SHAPE))
    rep = check_fully_spiking(g)
    adds = g.nodes(Add)
    assert len(adds) == len(m.blocks())  # one spike ADD per block, none fused
    named = {d.node: d for d in rep.violations}
    for a in adds:
        assert named[a].kind == "count" and "spike ADD (SEW)" in named[a].reason
    # the only other violation is the analog (mean) readout of the FC current
    assert set(named) - set(adds) == {"fc"}


@pytest.mark.parametrize("name", ["ms-resnet18", "ms-resnet50"])
def test_ms_names_membrane_shortcuts_and_analog_downsample_convs(name):
    m = small(name)
    g = export(m, torch.zeros(T, 1, *SHAPE))
    rep = check_fully_spiking(g)
    named = {}
    for d in rep.violations:
        named.setdefault(d.node, []).append(d)
    adds = g.nodes(Add)
    # every block's add is a membrane shortcut except the last one, fused into sn_final
    assert len(adds) == len(m.blocks()) - 1
    for a in adds:
        assert any("membrane shortcut" in d.reason and d.kind == "analog" for d in named[a])
    downs = [n for n in g.synapses() if ".downsample" in n]
    assert len(downs) == (3 if m.depth < 50 else 4)
    for n in downs:
        assert any("receives analog values" in d.reason for d in named[n]), named.get(n)


def test_sew_and_iand_are_refused_by_the_exporter():
    for connect in ("and", "iand"):
        m = small("sew-resnet18", connect=connect)
        assert m(m.encode(torch.rand(2, *SHAPE))).shape == (T, 2, 10)  # it trains / runs in torch
        with pytest.raises(ExportError, match=r"SEW connect function I?AND .* no spike-graph equivalent"):
            export(m, torch.zeros(T, 1, *SHAPE))


@pytest.mark.parametrize("name", ["spike-resnet18", "sew-resnet18", "ms-resnet18", "spike-resnet50"])
def test_exported_graph_matches_module_float64(name):
    """In float64 the module (BN applied after the conv) and the graph (BN folded into the conv
    weights) differ only by rounding ~1e-16, so no membrane lands on the other side of the threshold:
    spike counts agree exactly and mean readouts to 1e-9."""
    torch.manual_seed(0)
    m = calibrate(small(name).double())
    x = torch.rand(4, *SHAPE, dtype=torch.float64)
    with torch.no_grad():
        out = m(m.encode(x))
    g = export(m, torch.zeros(T, 1, *SHAPE, dtype=torch.float64), timesteps=T)
    res = torch_backend.run(g, x.numpy(), T)
    if m.readout == "spike":
        ref = out.sum(0).numpy()
        assert ref.sum() > 3 and ref.sum() < ref.size * T  # spikes reached the output, not saturated
        np.testing.assert_array_equal(res.output, ref)
    else:
        ref = out.mean(0).numpy()
        np.testing.assert_allclose(res.output, ref, rtol=1e-9, atol=1e-9)
    readout = g.output_nodes[0]
    assert g.op(readout).mode == ("count" if m.readout == "spike" else "mean")
    assert g.inputs(readout)[0].src == ("sn_out" if m.readout == "spike" else "fc")


def test_exported_graph_matches_module_float32_predictions():
    """A float32 module against the float64 graph: a membrane within ~1e-6 of threshold can flip,
    so only near-agreement is asserted (almost all counts equal)."""
    torch.manual_seed(1)
    m = calibrate(small("spike-resnet18"))
    x = torch.rand(8, *SHAPE)
    with torch.no_grad():
        ref = m(m.encode(x)).sum(0).numpy()
    res = torch_backend.run(export(m, torch.zeros(T, 1, *SHAPE)), x.numpy(), T)
    assert ref.sum() > 3
    assert (res.output == ref).mean() >= 0.95
