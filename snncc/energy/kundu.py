"""Kundu et al. (2021)'s compute-only operation-count model: MACs x E_MAC + SOPs x E_AC.

It charges arithmetic only: no memory accesses, addressing or neuron updates (see docs/energy.md for
what that leaves out). Constants: Horowitz, "Computing's energy problem", ISSCC 2014, 45 nm CMOS.
"""
from __future__ import annotations

from snncc.energy.base import Constant, EnergyModel
from snncc.energy.counts import LayerCounts

_HOROWITZ = "Horowitz, ISSCC 2014 (45 nm)"
# preset: (E_MAC, E_AC, what the operands are)
PRESETS = {
    "fp32-45nm": (4.6, 0.9, "32-bit float multiply-add / add"),
    "int32-45nm": (3.2, 0.1, "32-bit integer multiply + add / add"),
}


class Kundu(EnergyModel):
    name = "kundu"

    def __init__(self, e_mac_pj: float | None = None, e_ac_pj: float | None = None):
        """Default: the fp32-45nm preset; explicit energies make a user-constant model."""
        mac, ac, _ = PRESETS["fp32-45nm"]
        preset = "fp32-45nm" if e_mac_pj is None and e_ac_pj is None else "user"
        e_mac_pj = mac if e_mac_pj is None else e_mac_pj
        e_ac_pj = ac if e_ac_pj is None else e_ac_pj
        for label, v in (("e_mac_pj", e_mac_pj), ("e_ac_pj", e_ac_pj)):
            if not (v >= 0.0 and v < float("inf")):
                raise ValueError(f"{label} must be a finite non-negative energy, got {v!r}")
        self.e_mac_pj, self.e_ac_pj, self.preset_name = float(e_mac_pj), float(e_ac_pj), preset

    @classmethod
    def preset(cls, name: str) -> "Kundu":
        if name not in PRESETS:
            raise ValueError(f"unknown kundu preset {name!r} (choose from {', '.join(PRESETS)})")
        model = cls()
        model.e_mac_pj, model.e_ac_pj, _ = PRESETS[name]
        model.preset_name = name
        return model

    def constants(self) -> dict:
        what = PRESETS.get(self.preset_name, (0, 0, "user constants"))[2]
        src = f"{_HOROWITZ}, {what}" if self.preset_name in PRESETS else "user constants"
        grade = "circuit estimate" if self.preset_name in PRESETS else "user"
        return {"E_MAC": Constant(self.e_mac_pj, src, grade), "E_AC": Constant(self.e_ac_pj, src, grade)}

    def layer_energy(self, c: LayerCounts) -> dict:
        return {"compute": c.macs * self.e_mac_pj + c.sops * self.e_ac_pj}

    def ann_layer_energy(self, c: LayerCounts) -> dict:
        return {"compute": c.flops * self.e_mac_pj}
