"""Check snncc.bench.lava_mlp builds the intended Dense->LIF chain in Lava."""
import numpy as np

from snncc.bench.lava_mlp import lava_ms_per_step
from snncc.compat.lava import LAVA_DENSE_DELAY


def numpy_lava_mlp(weights, x, vth, du, dv):
    """Independent re-implementation of Lava's float Dense+LIF dynamics.

    Each Dense delays by LAVA_DENSE_DELAY (=1) step; LIF per step:
    u = u(1-du) + a; v = v(1-dv) + u (bias 0); spike if v > vth; v[spike] = 0.
    The Dense sum is done as Lava does it (sum of the selected columns) so
    float rounding matches bit for bit.
    """
    s = x.astype(bool)
    for w in weights:
        steps = s.shape[1]
        u, v = np.zeros(w.shape[0]), np.zeros(w.shape[0])
        out = np.zeros((w.shape[0], steps), dtype=bool)
        for t in range(steps):
            src = t - LAVA_DENSE_DELAY
            a = w[:, s[:, src]].sum(axis=1) if src >= 0 else np.zeros(w.shape[0])
            u = u * (1 - du) + a
            v = v * (1 - dv) + u
            out[:, t] = v > vth
            v[out[:, t]] = 0.0
        s = out
    return s.astype(np.uint8)


def test_tiny_mlp_matches_numpy_reference():
    rng = np.random.default_rng(1)
    sizes, T = [20, 30, 5], 20
    ws = [rng.normal(0.15, 0.5, (b, a)) for a, b in zip(sizes[:-1], sizes[1:])]
    x = (rng.random((sizes[0], T)) < 0.3).astype(np.uint8)
    r = lava_ms_per_step(ws, x, vth=1.0, du=0.2, dv=0.1, steps=T)
    out = r["output_spikes"]
    assert out.shape == (sizes[-1], T)
    assert set(np.unique(out)) <= {0, 1}
    assert r["ms_per_step"] > 0 and r["compile_s"] > 0
    ref = numpy_lava_mlp(ws, x, vth=1.0, du=0.2, dv=0.1)
    assert 0 < ref.sum() < ref.size  # non-trivial activity, so the match means something
    np.testing.assert_array_equal(out, ref)
    # Two Dense layers => nothing can come out before step 2.
    assert not out[:, : 2 * LAVA_DENSE_DELAY].any()
