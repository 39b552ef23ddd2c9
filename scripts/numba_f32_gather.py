"""Per-layer timings: the float64 event gather (conv_events) vs the float32-accumulator gather (conv_events32),
16 rows."""
import time, numpy as np
from snncc.sims.numba_kernels import conv_events
from snncc.sims.numba_events32 import conv_events32
rng=np.random.default_rng(0)
def best(f, n=5):
    ts=[]
    for _ in range(n):
        t0=time.perf_counter(); f(); ts.append(time.perf_counter()-t0)
    return min(ts)*1e3
for c, hw in [(32,32),(64,16),(128,8),(256,4)]:
    wg=rng.normal(0,0.05,(3,3,c,c)).astype(np.float32); bias=np.zeros(c)
    dims=(hw,hw,hw,hw,1,1,1,1,1,1)
    for rho in (0.1,0.25):
        R=16; x=(rng.random((R,c*hw*hw))<rho).astype(np.float64); o1=np.empty((R,c*hw*hw)); o2=o1.copy()
        conv_events(0,R,x,wg,bias,o1,*dims,c); conv_events32(0,R,x,wg,bias,o2,*dims,c)
        a=best(lambda: conv_events(0,R,x,wg,bias,o1,*dims,c)); b=best(lambda: conv_events32(0,R,x,wg,bias,o2,*dims,c))
        print(c, hw, rho, f"f64 acc {a:.1f} ms, f32 acc {b:.1f} ms, x{a/b:.2f}, "
              f"maxdiff {np.abs(o1-o2).max():.1e}", flush=True)
