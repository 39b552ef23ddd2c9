"""Per conv layer of Spike-ResNet-18 1/2 (64 and 4 rows, 35 % binary input, one thread, best of 2 x 5): the float32
product by torch's direct conv (sims/numba_torch32.py) vs float32 im2col + numpy sgemm vs the float64 kernels,
each through the conv rule (record_conv's input statistics included).    python scripts/numba_f32_torch_layers.py"""
import time, numpy as np, os
from snncc.bench.sim_matrix import base_graph, sample, calibrate
from snncc.sims import numba_sim, numba_rules
from snncc.ir.ops import Conv
rng=np.random.default_rng(0)
g0=base_graph("resnet18-0.5","spike"); x=sample(g0,16,4,0.25,rng); g=calibrate(g0,x[:4],4,0.25)
plan=numba_sim.Plan(g,threads=1)
numba_rules.CONV_F32_MIN_DENSITY=0.0
ev=numba_rules.RULES[Conv][1]
for name in ("layer1.0.conv2","layer2.1.conv1","layer3.1.conv1","layer4.1.conv1"):
    nd=plan.nodes[name]
    for rows in (64, 4):
        n_in=[p for p in nd.ports][0]
        size_in=nd.data["dims"][0]*nd.data["dims"][1]*nd.data["w_g"].shape[2]
        xin=(rng.random((1,rows,size_in))<0.35).astype(np.float64); out=np.empty((1,rows,nd.size))
        res={}
        for mode in ("torch","im2col","torch","im2col","f64 (off)"):
            numba_rules.CONV_F32_TORCH = mode=="torch"
            numba_rules.CONV_F32_MIN_DENSITY = 2.0 if mode.startswith("f64") else 0.0
            ts=[]
            for r in range(5):
                t0=time.perf_counter(); ev(nd,[xin],out,{},1); ts.append(time.perf_counter()-t0)
            res[mode]=min(ts+[res.get(mode,9)])
        macs=rows*nd.size*nd.data["w_g"].shape[0]*nd.data["w_g"].shape[1]*nd.data["c_grp"]
        print(name, rows, "rows, 35% input:", {k:"%.2f ms"%(v*1e3) for k,v in res.items()}, "torch G MAC/s %.1f"%(macs/res["torch"]/1e9), "load %.1f"%os.getloadavg()[0], flush=True)
