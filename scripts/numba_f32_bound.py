"""The float32 path's per-neuron bound: S bounded by the m largest |w| per channel (the code) vs the constant
||w_c||_1 per output channel. Spike-ResNet-18 1/2, spike input, 25 %, T 4, batch 16, one thread, float32 conv product
from 15 % input density: neurons recomputed in float64 and the profile's check costs, twice each, interleaved.
    python scripts/numba_f32_bound.py"""
import time, cProfile, pstats, numpy as np, os, io
from snncc.bench.sim_matrix import base_graph, sample, calibrate
from snncc.sims import numba_sim, numba_rules, numba_f32
T=4; B=16
for rate in (0.25,):
    rng=np.random.default_rng(0)
    g0=base_graph("resnet18-0.5","spike"); x=sample(g0,B,T,rate,rng); g=calibrate(g0,x[:4],T,rate)
    plan=numba_sim.Plan(g,threads=1)
    numba_rules.CONV_F32_MIN_DENSITY=0.15
    orig=numba_f32._bound
    const=lambda info, m: orig(info, np.full(m.shape, info["field"]))
    for name, fn in (("m-largest", orig), ("constant ||w||_1", const), ("m-largest", orig), ("constant ||w||_1", const)):
        numba_f32._bound=fn
        plan.run(x,T); plan.float32_stats(reset=True)
        pr=cProfile.Profile(); pr.enable(); t0=time.perf_counter(); plan.run(x,T); tot=time.perf_counter()-t0; pr.disable()
        st=pstats.Stats(pr).stats
        f=lambda k: sum(v[3] for kk,v in st.items() if kk[2]==k)
        print(name, "rate",rate,"total %.3f s"%tot, plan.float32_stats(), "conv_exact %.3f _stats %.3f neuron_checked %.3f torch.conv2d %.3f"%(f("conv_exact"),f("_stats"),f("neuron_checked"),f("<built-in method torch.conv2d>")), "load", os.getloadavg()[0], flush=True)
