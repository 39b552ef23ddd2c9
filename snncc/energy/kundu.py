"""Kundu et al. (2021)'s compute-only operation-count model: MACs x E_MAC + SOPs x E_AC.

It charges arithmetic only: no memory accesses, addressing or routing, and (by default) no neuron
updates (see docs/energy.md for what that leaves out). ``E_UPDATE`` (0 by default) lets a user file
add a per-neuron-per-step update cost on top. Constants: Horowitz, "Computing's energy problem",
ISSCC 2014, 45 nm CMOS.
"""
from __future__ import annotations

from snncc.energy.base import Constant, EnergyModel, EnergyModelError
from snncc.energy.counts import LayerCounts

_HOROWITZ = "Horowitz, ISSCC 2014 (45 nm)"
_GRADE = "circuit estimate [verified: Horowitz 2014 table, as used by Kundu 2021]"
# preset: (E_MAC, E_AC, what the operands are)
PRESETS = {
    "fp32-45nm": (4.6, 0.9, "32-bit float multiply-add / add"),
    "int32-45nm": (3.2, 0.1, "32-bit integer multiply + add / add"),
}


def _preset_constants(name: str) -> dict:
    mac, ac, what = PRESETS[name]
    src = f"{_HOROWITZ}, {what}"
    return {"E_MAC": Constant(mac, src, _GRADE), "E_AC": Constant(ac, src, _GRADE)}


class Kundu(EnergyModel):
    name = "kundu"
    DEFAULTS = {**_preset_constants("fp32-45nm"),
                "E_UPDATE": Constant(0.0, "not charged: Kundu et al. 2021 count synaptic arithmetic only",
                                     "convention")}

    def __init__(self, e_mac_pj: float | None = None, e_ac_pj: float | None = None,
                 constants: dict | None = None, label: str | None = None):
        """Default: the fp32-45nm preset; explicit energies make a user-constant model."""
        constants = dict(constants or {})
        for key, v in (("E_MAC", e_mac_pj), ("E_AC", e_ac_pj)):
            if v is not None:
                constants[key] = Constant(v, "user constants", "user")
        super().__init__(constants, label)

    @classmethod
    def preset(cls, name: str) -> "Kundu":
        if name not in PRESETS:
            raise EnergyModelError(f"unknown kundu preset {name!r} (choose from {', '.join(PRESETS)})")
        return cls(constants=_preset_constants(name), label=f"kundu:{name}")

    def layer_energy(self, c: LayerCounts) -> dict:
        out = {"compute": c.macs * self.e("E_MAC") + c.sops * self.e("E_AC")}
        if self.e("E_UPDATE") and c.population:
            out["neuron updates"] = c.neurons * c.timesteps * self.e("E_UPDATE")
        return out

    def ann_layer_energy(self, c: LayerCounts) -> dict:
        return {"compute": c.flops * self.e("E_MAC")}
