"""Per-layer timings behind docs/methods.md "Simulator kernels" (float32 path): one thread, 64 rows of random
binary input per 3x3 conv of Spike-ResNet-18 1/2 widths; event kernels vs float32 im2col + sgemm vs float64
im2col + dgemm."""
import time, numpy as np
from snncc.ir.graph import SpikeGraph
from snncc.ir.ops import Conv, Input, Neuron, Readout
from snncc.neuron import NeuronParams
from snncc.sims import numba_sim, numba_rules
rng = np.random.default_rng(0)
def best(f, n=5):
    ts=[]
    for _ in range(n):
        t0=time.perf_counter(); f(); ts.append(time.perf_counter()-t0)
    return min(ts)
for c, hw in [(32, 32), (64, 16), (128, 8), (256, 4)]:
    g = SpikeGraph("c"); g.add("x", Input((c, hw, hw), encoding="spike"))
    w = np.float32(rng.normal(0, 1/np.sqrt(9*c), (c, c, 3, 3))).astype(np.float64)
    g.add("c", Conv(w, np.zeros(c), (1, 1), (1, 1)), ["x"])
    g.add("n", Neuron(NeuronParams("lif", tau=2.0, v_th=0.5)), ["c"])
    g.add("o", Readout("count"), ["n"])
    plan = numba_sim.Plan(g, threads=1); nd = plan.nodes["c"]
    R = 64
    for rho in (0.1, 0.25, 0.5):
        x = (rng.random((R, c*hw*hw)) < rho).astype(np.float64); o = np.empty((R, nd.size))
        res = []
        for mode in ("event", "f32", "f64gemm"):
            numba_rules.CONV_F32_MIN_DENSITY = 0.0 if mode == "f32" else 2.0
            numba_rules.CONV_MIN_DENSITY = 0.0 if mode == "f64gemm" else 2.0
            f = lambda: numba_rules.RULES[Conv][1](nd, [x[None]], o[None], {}, 1)
            f(); res.append(best(f))
        macs = R*c*c*9*hw*hw
        print(f"C={c} hw={hw} rho={rho}: event {res[0]*1e3:.1f} ms, f32 {res[1]*1e3:.1f} ms "
              f"({macs/res[1]/1e9:.1f} GMAC/s), f64gemm {res[2]*1e3:.1f} ms", flush=True)
