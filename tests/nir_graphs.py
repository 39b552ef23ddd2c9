"""Small NIR graphs shared by the NIR tests (built with nir's own node constructors)."""
import nir
import numpy as np


def chain(node, shape=(4,)):
    """Input -> Affine (identity) -> node 'x' -> Output."""
    nodes = {"input": nir.Input(input_type=np.array(shape)),
             "fc": nir.Affine(weight=np.eye(shape[0]), bias=np.zeros(shape[0])), "x": node,
             "output": nir.Output(output_type=np.array(shape))}
    return nir.NIRGraph(nodes=nodes, edges=[("input", "fc"), ("fc", "x"), ("x", "output")], type_check=False)


def lif(n=4, **kw):
    """A LIF population of n neurons (tau 5 ms, threshold 1), any parameter overridden by ``kw``."""
    p = dict(tau=np.full(n, 5e-3), r=np.ones(n), v_leak=np.zeros(n), v_threshold=np.ones(n), v_reset=np.zeros(n))
    p.update(kw)
    return nir.LIF(**p)
