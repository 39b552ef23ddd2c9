"""An MSKD student with the paper's eq. 1 neuron on Lava float and fixed point, spike for spike.

Builds the Spike-ResNet-18 student as `snncc train --method direct --model spike-resnet18` builds it (MSKD eq. 1
neuron: decay 0.2, threshold 0.5), gives it non-trivial batch-norm statistics and drive (tests/test_resnet.py's
``calibrate``), exports it and compares integer spike trains population by population:
Lava float vs snncc's torch reference, and Lava fixed point vs its integer reference (bit-accurate Loihi arithmetic).
Too slow for the test suite (about 80 s per Lava run on 2 cores); the suite checks the same neuron on Lava with small
graphs (tests/test_lif_forms.py) and the student on torch and numba.

Usage: python scripts/mskd_student_lava.py [--width 0.25] [--samples 2]
"""
import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from test_resnet import SHAPE, T, calibrate  # noqa: E402

from snncc.backends import lava as lb  # noqa: E402
from snncc.backends.lava import fixed_point as lf  # noqa: E402
from snncc.backends import torch_ref  # noqa: E402
from snncc.export import export  # noqa: E402
from snncc.training.mskd_config import MSKDConfig, build_student  # noqa: E402


def trains_equal(a, b, pops) -> tuple:
    differ = sum(int((a.trains[n] != b.trains[n]).sum()) for n in pops)
    total = sum(int(a.trains[n].size) for n in pops)
    return differ, total


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--width", type=float, default=0.25)
    ap.add_argument("--samples", type=int, default=2)
    args = ap.parse_args()
    torch.manual_seed(0)
    m = build_student(MSKDConfig(method="direct", model="spike-resnet18", dataset="mnist", width=args.width,
                                 timesteps=T))
    m = calibrate(m.double())
    x = torch.rand(args.samples, *SHAPE, dtype=torch.float64).numpy()
    g = export(m, torch.zeros(T, 1, *SHAPE, dtype=torch.float64), timesteps=T)
    pops = g.populations()
    ref = torch_ref.run(g, x, T, record=True)
    t0 = time.perf_counter()
    flt = lb.run(g, x, T, record=True)
    t1 = time.perf_counter()
    plan = lb.lower(g, lb.Options(fixed_point=True))
    fix = lb.run((g, plan), x, T, record=True)
    t2 = time.perf_counter()
    integer = lf.run_integer(g, x, T, plan=plan, record=True)
    d_f, n = trains_equal(ref, flt, pops)
    d_x, _ = trains_equal(integer, fix, pops)
    spikes = sum(int(ref.trains[p].sum()) for p in pops)
    print(f"{len(pops)} populations, {n} spike-train entries, {spikes} spikes (torch reference), T = {T}")
    print(f"Lava float vs torch reference: {d_f} entries differ ({t1 - t0:.1f} s)")
    print(f"Lava fixed point vs integer reference: {d_x} entries differ ({t2 - t1:.1f} s, "
          f"{sum(int(fix.trains[p].sum()) for p in pops)} spikes)")
    return 0 if d_f == 0 and d_x == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
