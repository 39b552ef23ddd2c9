"""Break-even firing rates: the spike rate at which the SNN stops saving energy against the same ANN.

Every model here is linear in spike counts (SOPs, events, output spikes), so the energy of a layer
with every spike rate set to ``r`` spikes per neuron per step is ``E(r) = E(0) + r * (E(1) - E(0))``
and the break-even rate is the closed form ``r* = (E_ANN - E(0)) / (E(1) - E(0))``. Linearity is
checked at ``r = 1/2`` (a plug-in model that is not linear gets ``None``, not a wrong number).

``r*`` is per step; ``r* x T`` is spikes per neuron per inference. ``r* <= 0``: the SNN never saves
(its rate-independent costs alone exceed the ANN's); ``r* > 1``: it saves at every possible rate.
A layer whose synapse does dense MACs (analog input, or graded input counted as MACs) has none.
"""
from __future__ import annotations


def _solve(e0: float, half: float, e1: float, target: float) -> float | None:
    slope = e1 - e0
    if slope <= 0 or abs(half - (e0 + e1) / 2) > 1e-9 * max(abs(e0), abs(e1), 1.0):
        return None
    return (target - e0) / slope


def breakeven_rates(model, counts: list, ann: list[dict]) -> tuple[list, float | None]:
    """Per-layer break-even rates (``None`` for dense layers) and the network's (all rates one value)."""
    energy = {}
    for r in (0.0, 0.5, 1.0):
        energy[r] = [sum(snn.values()) for snn, _ in model.price([c.at_rate(r) for c in counts])]
    ann_pj = [sum(a.values()) for a in ann]
    per_layer = [_solve(energy[0.0][i], energy[0.5][i], energy[1.0][i], ann_pj[i]) if c.event_driven else None
                 for i, c in enumerate(counts)]
    if not any(c.event_driven for c in counts):
        return per_layer, None
    return per_layer, _solve(sum(energy[0.0]), sum(energy[0.5]), sum(energy[1.0]), sum(ann_pj))
