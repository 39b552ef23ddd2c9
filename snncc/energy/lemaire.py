"""Lemaire et al. (ICONIP 2022, arXiv 2210.13107): operations + memory accesses + addressing.

Per layer and inference, with theta_in = presynaptic events (value-weighted for graded inputs),
theta_out = spikes of the driven population, N = neurons, T = steps, and E_rd(S) the SRAM access
energy of a memory of S bytes (32-bit words):

SNN, event-driven synapse (spike / graded input)
  compute         SOPs * E_ADD                                    (one add per synaptic event)
  neuron updates  N*T*E_ADD (+ N*T*E_MUL if leaky) + theta_out*E_ADD     (integrate, leak, reset)
  memory          SOPs * E_rd(weights)                            (one weight read per synaptic op)
                  + 2*(SOPs + N*T) * E_rd(membranes)              (membrane read + write per op and update)
                  + theta_in * E_rd(input buffer) + theta_out * E_rd(output buffer)
  addressing      conv: theta_in * (2*E_MAC + C_out*k^2*E_ADD); dense: theta_in * C_out * E_ADD
SNN, dense synapse (analog input, or graded counted as MACs): as the ANN below, at every step it
  runs (the direct-encoded first layer once, unless counted per step), plus its neuron updates.
ANN (same memory accounting; ReLU free, bias ignored as in Kundu)
  compute         FLOPs * E_MAC
  memory          FLOPs * E_rd(weights) + reads of the input (conv: FLOPs, no reuse; dense: N_in)
                  + N_out writes of the output
  addressing      conv: (N_in + N_out + C_out*k^2) * E_ADD; dense: FLOPs * E_ADD

SRAM energy by memory size: linear through (8 kB, 10 pJ), (32 kB, 20 pJ), (1 MB, 100 pJ), 10 pJ below
8 kB, the last segment extended above 1 MB.
"""
from __future__ import annotations

import numpy as np

from snncc.energy.base import Constant, EnergyModel
from snncc.energy.counts import LayerCounts

_HOROWITZ = "Horowitz, ISSCC 2014 (45 nm), as used by Lemaire et al. 2022"
_SEC = "circuit estimate [secondary source: Lemaire et al. 2022 via its public reimplementation]"
WORD_BYTES = 4  # 32-bit operands and memory words (int32, as the constants)


class Lemaire(EnergyModel):
    name = "lemaire"
    DEFAULTS = {
        "E_ADD": Constant(0.1, f"{_HOROWITZ}, int32 add", _SEC),
        "E_MUL": Constant(3.1, f"{_HOROWITZ}, int32 multiply", _SEC),
        "SRAM_8KB": Constant(10.0, f"{_HOROWITZ}, 8 kB SRAM access (64-bit)", _SEC),
        "SRAM_32KB": Constant(20.0, f"{_HOROWITZ}, 32 kB SRAM access (64-bit)", _SEC),
        "SRAM_1MB": Constant(100.0, f"{_HOROWITZ}, 1 MB SRAM access (64-bit)", _SEC),
    }

    def sram(self, n_words: float) -> float:
        """Energy of one access to an SRAM holding ``n_words`` 32-bit words (pJ)."""
        xs = (8 * 1024, 32 * 1024, 1024 * 1024)
        ys = (self.e("SRAM_8KB"), self.e("SRAM_32KB"), self.e("SRAM_1MB"))
        size = n_words * WORD_BYTES
        if size > xs[-1]:
            return ys[2] + (size - xs[2]) * (ys[2] - ys[1]) / (xs[2] - xs[1])
        return float(np.interp(size, xs, ys))

    def _mac(self) -> float:
        return self.e("E_MUL") + self.e("E_ADD")

    def _dense(self, c: LayerCounts, runs: float) -> dict:
        """One dense evaluation of the synapse, ``runs`` times."""
        conv = c.op == "Conv"
        reads_in = c.flops if conv else c.in_size
        addr = (c.in_size + c.out_size + c.out_channels * c.kernel_area) if conv else c.flops
        return {"compute": runs * c.flops * self._mac(),
                "memory": runs * (c.flops * self.sram(c.weights) + reads_in * self.sram(c.in_size)
                                  + c.out_size * self.sram(c.out_size)),
                "addressing": runs * addr * self.e("E_ADD")}

    def _updates(self, c: LayerCounts) -> dict:
        if not c.population:
            return {}
        n_upd = c.neurons * c.timesteps
        per = self.e("E_ADD") + (self.e("E_MUL") if c.leaky else 0.0)
        return {"neuron updates": n_upd * per + c.out_spikes * self.e("E_ADD"),
                "memory": 2 * n_upd * self.sram(c.neurons) + c.out_spikes * self.sram(c.neurons)}

    def layer_energy(self, c: LayerCounts) -> dict:
        if c.event_driven:
            conv = c.op == "Conv"
            per_event = (2 * self._mac() if conv else 0.0) + c.out_channels * c.kernel_area * self.e("E_ADD")
            out = {"compute": c.sops * self.e("E_ADD"),
                   "memory": c.sops * (self.sram(c.weights) + 2 * self.sram(c.out_size))
                   + c.in_events * self.sram(c.in_size),
                   "addressing": c.in_events * per_event}
        else:
            out = self._dense(c, c.macs / c.flops if c.flops else 0.0)
        for k, v in self._updates(c).items():
            out[k] = out.get(k, 0.0) + v
        return out

    def ann_layer_energy(self, c: LayerCounts) -> dict:
        return self._dense(c, 1.0)
