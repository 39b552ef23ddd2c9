"""Energy report: Kundu-style op counts from measured activity, checked by hand-computed values."""
import pytest
from graphs import mlp, residual

from snncc.backends import torch_ref as torch_backend
from snncc.energy import EnergyModel, energy_report


def test_mlp_energy_matches_hand_computation(rng):
    g = mlp(rng)
    T, B = 6, 5
    res = torch_backend.run(g, rng.random((B, 1, 8, 8)), T, record=True)
    rep = energy_report(g, res.activity, B, T)
    fc0, fc1, fc2 = rep["layers"]
    # first layer: analog direct input -> MACs once per inference
    assert fc0["macs"] == 64 * 48 and fc0["sops"] == 0
    # hidden layers: FLOPs x spikes per presynaptic neuron per inference
    spikes0 = res.trains["lif0"].sum() / (48 * B)
    assert fc1["sops"] == pytest.approx(48 * 32 * spikes0) and fc1["macs"] == 0
    assert fc1["input_rate"] == pytest.approx(spikes0 / T)
    assert fc2["firing_rate"] == pytest.approx(res.trains["lif2"].mean())
    total = 4.6 * 64 * 48 + 0.9 * (fc1["sops"] + fc2["sops"])
    assert rep["total_energy_pj"] == pytest.approx(total)
    assert rep["ann_energy_pj"] == pytest.approx(4.6 * (64 * 48 + 48 * 32 + 32 * 10))
    assert rep["ann_over_snn"] == pytest.approx(rep["ann_energy_pj"] / total)


def test_first_layer_per_step_flag(rng):
    g = mlp(rng)
    res = torch_backend.run(g, rng.random((2, 1, 8, 8)), 6)
    once = energy_report(g, res.activity, 2, 6)["layers"][0]["macs"]
    per_step = energy_report(g, res.activity, 2, 6, EnergyModel(first_layer="per_step"))["layers"][0]["macs"]
    assert per_step == 6 * once
    with pytest.raises(ValueError, match="first_layer"):
        EnergyModel(first_layer="sometimes")


def test_conv_flops_and_hybrid_counts(rng):
    g = residual(rng, "sew")
    T, B = 4, 3
    res = torch_backend.run(g, rng.random((B, 2, 6, 6)), T)
    rep = energy_report(g, res.activity, B, T)
    rows = {r["name"]: r for r in rep["layers"]}
    assert rows["stem"]["flops"] == 3 * 3 * 6 * 6 * 2 * 4
    # the fc after the SEW add receives counts: ACs = FLOPs x counts per neuron (pooled)
    assert rows["fc"]["sops"] == pytest.approx(36 * 5 * res.activity["flat"] / (36 * B))
    g = residual(rng, "ms")
    res = torch_backend.run(g, rng.random((B, 2, 6, 6)), T)
    rows = {r["name"]: r for r in energy_report(g, res.activity, B, T)["layers"]}
    assert rows["down"]["macs"] == rows["down"]["flops"] * T  # analog-input synapse: MACs every step
    assert rows["conv2"]["population"] is None and rows["conv2"]["firing_rate"] is None
