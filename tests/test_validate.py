"""Fully-spiking validation: Spike-ResNet passes; SEW ADD, MS membrane shortcut and analog readouts are named."""
from graphs import mlp, residual, rnn

from snncc.ir.graph import SpikeGraph
from snncc.ir.ops import Dense, Flatten, Input, Neuron, Readout
from snncc.passes.validate import check_fully_spiking


def test_mlp_is_fully_spiking_with_direct_encoding_note(rng):
    rep = check_fully_spiking(mlp(rng))
    assert rep.fully_spiking and rep.violations == []
    assert [(d.node, d.kind) for d in rep.notes] == [("fc0", "analog")]
    assert "direct encoding" in rep.notes[0].reason


def test_spike_resnet_block_is_fully_spiking(rng):
    rep = check_fully_spiking(residual(rng, "spike"))
    assert rep.fully_spiking, rep.violations
    assert any("pooling of spikes" in d.reason for d in rep.notes)


def test_sew_add_is_named(rng):
    rep = check_fully_spiking(residual(rng, "sew"))
    assert not rep.fully_spiking
    assert [(d.node, d.kind) for d in rep.violations] == [("add", "count")]
    assert "spike ADD" in rep.violations[0].reason and "'fc'" in rep.violations[0].reason


def test_ms_shortcut_is_named(rng):
    rep = check_fully_spiking(residual(rng, "ms"))
    named = {(d.node, d.kind) for d in rep.violations}
    assert ("add", "analog") in named  # the membrane shortcut itself
    assert ("down", "analog") in named  # downsample conv receiving analog values
    assert ("conv2", "analog") in named and ("stem", "analog") in named  # currents not integrated by one population
    add = next(d for d in rep.violations if d.node == "add")
    assert "membrane shortcut" in add.reason and "'sn2'" in add.reason


def test_analog_readout_is_named(rng):
    g = SpikeGraph()
    g.add("x", Input((4,)))
    g.add("enc", Neuron(), ["x"])
    g.add("fc", Dense(rng.normal(size=(3, 4))), ["enc"])
    g.add("out", Readout("mean"), ["fc"])
    rep = check_fully_spiking(g)
    assert not rep.fully_spiking
    assert rep.violations[0].node == "fc" and "analog readout" in rep.violations[0].reason
    assert rep.as_dict() == {"fully_spiking": False, "notes": [],
                             "violations": [{"node": "fc", "kind": "analog", "reason": rep.violations[0].reason}]}


def test_recurrent_graph_is_fully_spiking(rng):
    assert check_fully_spiking(rnn(rng)).fully_spiking


def test_analog_into_hidden_synapse_is_named(rng):
    g = SpikeGraph()
    g.add("x", Input((4,)))
    g.add("fc1", Dense(rng.normal(size=(4, 4))), ["x"])
    g.add("flat", Flatten(), ["fc1"])
    g.add("fc2", Dense(rng.normal(size=(3, 4))), ["flat"])
    g.add("sn", Neuron(), ["fc2"])
    g.add("out", Readout(), ["sn"])
    rep = check_fully_spiking(g)
    assert ("fc2", "analog") in {(d.node, d.kind) for d in rep.violations}
    assert ("fc1", "analog") in {(d.node, d.kind) for d in rep.violations}
