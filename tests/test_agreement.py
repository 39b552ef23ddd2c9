"""snncc.agreement: spikes compared exactly as integers, analog values within the stated tolerance.

The regression this guards: the demo once compared whole activity dicts, which include float sums of
synapse currents; summed in another order those differ in the last bit on some machines, and the demo
failed although every spike agreed."""
import dataclasses

import numpy as np
import pytest
from click.testing import CliRunner

import graphs
from snncc import evaluate as evaluate_mod
from snncc.agreement import ANALOG_RTOL, compare_runs
from snncc.backends import torch_ref as torch_backend
from snncc.cli import main
from snncc.evaluate import evaluate_agreement
from snncc.ir import serialize
from snncc.ir.ops import Neuron
from snncc.sims import numba_sim


def _runs(rng, batch=7):
    g = graphs.mlp(rng)
    x = rng.random((batch, 1, 8, 8))
    return g, x, numba_sim.run(g, x, 6, record=True), torch_backend.run(g, x, 6, record=True)


def _last_bit(res):
    """The same run, with every analog (non-population) activity total moved by one ulp."""
    pops = {n for n in res.trains}
    act = {n: (v if n in pops else float(np.nextafter(v, np.inf))) for n, v in res.activity.items()}
    return dataclasses.replace(res, activity=act)


def test_backends_agree_on_a_real_graph(rng):
    g, _, a, b = _runs(rng)
    agr = compare_runs(g, a, b, names=("numba", "torch"))
    assert agr.agree and agr.spikes_equal
    assert set(agr.compared) == set(g.populations())
    assert all(agr.compared[p] == a.trains[p].size for p in g.populations())
    assert sum(int(a.trains[p].sum()) for p in g.populations()) > 0  # not a silent network
    assert "agree spike for spike" in agr.lines()[0]


def test_analog_sums_differing_in_last_bit_still_agree(rng):
    g, _, a, b = _runs(rng)
    nudged = _last_bit(b)
    analog = [n for n in a.activity if n not in a.trains and a.activity[n] != 0.0]
    assert analog and all(nudged.activity[n] != b.activity[n] for n in analog)  # the sums really differ
    assert nudged.activity != a.activity  # what the old dict comparison saw
    assert compare_runs(g, a, nudged).agree


def test_one_flipped_spike_is_found_and_located(rng):
    g, _, a, b = _runs(rng)
    pop = g.nodes(Neuron)[1]
    trains = {p: t.copy() for p, t in b.trains.items()}
    trains[pop][3, 5, 17] ^= 1
    agr = compare_runs(g, a, dataclasses.replace(b, trains=trains), names=("numba", "torch"), sample_offset=100)
    assert not agr.agree and not agr.spikes_equal
    assert agr.differing[pop] == 1 and sum(agr.differing.values()) == 1
    m = agr.first[pop]
    assert (m.population, m.step, m.sample, m.neuron) == (pop, 3, 105, (17,))
    assert m.values == (int(a.trains[pop][3, 5, 17]), int(trains[pop][3, 5, 17]))
    assert agr.fraction(pop) == pytest.approx(1 - 1 / a.trains[pop].size)
    assert "DISAGREE" in agr.lines()[0] and "step 3, sample 105" in "\n".join(agr.lines())


def test_equal_totals_with_moved_spikes_disagree(rng):
    """A spike moved to another step keeps every total equal: only a per-step comparison sees it."""
    g, _, a, b = _runs(rng)
    pop = g.nodes(Neuron)[0]
    t = b.trains[pop].copy()
    step, sample, neuron = np.argwhere((t[:-1] == 1) & (t[1:] == 0))[0].tolist()
    t[step, sample, neuron], t[step + 1, sample, neuron] = 0, 1
    moved = dataclasses.replace(b, trains={**b.trains, pop: t})
    assert moved.trains[pop].sum() == a.trains[pop].sum()
    agr = compare_runs(g, a, moved)
    assert not agr.agree and agr.differing[pop] == 2


def test_analog_beyond_tolerance_disagrees(rng):
    g, _, a, b = _runs(rng)
    n = next(n for n in a.activity if n not in a.trains and a.activity[n] != 0.0)
    off = dataclasses.replace(b, activity={**b.activity, n: b.activity[n] * (1 + 1e3 * ANALOG_RTOL)})
    agr = compare_runs(g, a, off)
    assert agr.spikes_equal and not agr.agree and set(agr.analog) == {n}


def test_unrecorded_runs_are_an_error(rng):
    g, x, a, _ = _runs(rng)
    with pytest.raises(ValueError, match="record=True"):
        compare_runs(g, a, torch_backend.run(g, x, 6))


class _LastBitTorch(type(torch_backend.BACKEND)):
    """The torch reference whose analog sums come out one ulp higher (another summation order)."""

    def run(self, program, x, timesteps, record=False):
        return _last_bit(super().run(program, x, timesteps, record=record))


def _with_lastbit_torch(monkeypatch):
    real = evaluate_mod.get_backend
    monkeypatch.setattr(evaluate_mod, "get_backend", lambda name: _LastBitTorch() if name == "torch" else real(name))


def test_evaluate_agreement_merges_batches(rng, monkeypatch):
    _with_lastbit_torch(monkeypatch)
    g = graphs.mlp(rng)
    x, y = rng.random((50, 1, 8, 8)), rng.integers(0, 10, 50)
    res, agr = evaluate_agreement(g, ("numba", "torch"), x, y, 6, batch_size=16)
    _, whole = evaluate_agreement(g, ("numba", "torch"), x, y, 6, batch_size=64)
    assert agr.agree and agr.samples == 50 and agr.compared == whole.compared
    assert res["numba"]["accuracy"] == res["torch"]["accuracy"]
    assert res["numba"]["activity"] != res["torch"]["activity"]  # analog sums differ, spikes do not


def test_demo_passes_when_only_analog_sums_differ(monkeypatch, tmp_path):
    """The reported failure: spikes equal, analog sums one ulp apart -> the demo must pass."""
    from snncc.demo import run_demo
    _with_lastbit_torch(monkeypatch)
    summary = run_demo(tmp_path / "demo", epochs=1)
    assert summary["backends_agree"] is True


def test_cli_run_compare(rng, tmp_path):
    g = graphs.mlp(rng)
    serialize.save(g, tmp_path / "m.snn.onnx")
    runner = CliRunner(mix_stderr=False)
    res = runner.invoke(main, ["run", str(tmp_path / "m.snn.onnx"), "--backend", "numba", "--compare", "torch",
                               "--limit", "20", "--json"])
    assert res.exit_code == 0, res.stderr
    import json
    out = json.loads(res.stdout)
    assert out["agreement"]["agree"] is True and out["agreement"]["samples"] == 20
    assert set(out["agreement"]["populations"]) == set(g.populations())
    res = runner.invoke(main, ["run", str(tmp_path / "m.snn.onnx"), "--backend", "torch", "--compare", "torch"])
    assert res.exit_code == 2 and "with itself" in res.stderr
