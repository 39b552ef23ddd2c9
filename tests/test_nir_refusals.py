"""NIR import refusals: each node snncc cannot represent exactly is refused with one line naming the node
and the reason (and what looks similar but is representable is accepted)."""
import numpy as np
import pytest

nir = pytest.importorskip("nir")

from nir_graphs import chain, lif  # noqa: E402
from snncc.nir import NIRImportError, from_nir  # noqa: E402

DT = 1e-3


REFUSALS = [
    (lambda: chain(nir.LI(tau=np.array([5e-3, 4e-3, 5e-3, 5e-3]), r=np.ones(4), v_leak=np.zeros(4))),
     "node 'x' (LI): per-neuron tau in an integrator"),
    (lambda: nir.NIRGraph(nodes={"input": nir.Input(input_type=np.array([4])),
                                 "x": nir.I(r=np.full(4, 2.0)), "output": nir.Output(output_type=np.array([4]))},
                          edges=[("input", "x"), ("x", "output")], type_check=False),
     "node 'x' (I): its input gain (r, w_in, dt) must fold into a synapse"),
    (lambda: chain(nir.CubaLI(tau_syn=np.full(4, 1e-4), tau_mem=np.full(4, 5e-3), r=np.ones(4),
                               v_leak=np.zeros(4))), "node 'x' (CubaLI): tau_syn must be at least dt"),
    (lambda: chain(nir.Delay(delay=np.array([DT, 2 * DT, DT, DT]))),
     "node 'x' (Delay): delays of [1, 2] steps: an snncc edge delays every element by the same number of steps"),
    (lambda: chain(nir.Delay(delay=np.full(4, 1.5 * DT))),
     "node 'x' (Delay): delays of [1.5] steps: snncc edges delay by whole steps"),
    (lambda: chain(nir.Delay(delay=np.full(4, 2000 * DT))),
     "node 'x' (Delay): a delay of 2000 steps exceeds snncc's 1024"),
    (lambda: chain(nir.Threshold(threshold=np.ones(3))), "node 'x' (Threshold): parameter shapes do not match"),
    (lambda: chain(nir.Conv1d(input_shape=4, weight=np.ones((1, 1, 1)), stride=1, padding=0, dilation=1,
                               groups=1, bias=np.zeros(1))), "node 'x' (Conv1d): input of shape [4]"),
    (lambda: nir.NIRGraph(nodes={"input": nir.Input(input_type=np.array([1, 6])),
                                 "x": nir.Conv1d(input_shape=6, weight=np.ones((1, 1, 2)), stride=1, padding="same",
                                                 dilation=3, groups=1, bias=np.zeros(1)),
                                 "output": nir.Output(output_type=np.array([1, 6]))},
                          edges=[("input", "x"), ("x", "output")], type_check=False),
     "node 'x' (Conv1d): padding 'same' needs stride 1 and an odd (dilated) kernel"),
    (lambda: chain(lif(tau=np.full(4, 5e-4))), "node 'x' (LIF): tau must exceed dt"),
    (lambda: chain(lif(r=np.array([1.0, 0.0, 1.0, 1.0]))), "node 'x' (LIF): r (and w_in) must be finite and > 0"),
    (lambda: chain(lif(v_threshold=np.full(4, -1.0))), "node 'x' (LIF): v_threshold must exceed v_reset"),
    (lambda: chain(nir.Scale(scale=np.ones(4))), None),  # a Scale after an Affine folds: accepted
    (lambda: nir.NIRGraph(nodes={"input": nir.Input(input_type=np.array([4])), "x": nir.Scale(scale=np.ones(4)),
                                 "output": nir.Output(output_type=np.array([4]))},
                          edges=[("input", "x"), ("x", "output")], type_check=False),
     "node 'x' (Scale): Scale is folded into the synapse"),
    (lambda: nir.NIRGraph(nodes={"input": nir.Input(input_type=np.array([4])), "x": lif(v_leak=np.ones(4)),
                                 "output": nir.Output(output_type=np.array([4]))},
                          edges=[("input", "x"), ("x", "output")], type_check=False),
     "node 'x' (LIF): v_leak != v_reset needs a synapse"),
    (lambda: nir.NIRGraph(nodes={"input": nir.Input(input_type=np.array([1, 5, 5])),
                                 "x": nir.Conv2d(input_shape=(5, 5), weight=np.ones((2, 1, 3, 3)), stride=1, padding=0,
                                                 dilation=3, groups=1, bias=np.zeros(2)),
                                 "output": nir.Output(output_type=np.array([2, 1, 1]))},
                          edges=[("input", "x"), ("x", "output")], type_check=False),
     "node 'x': (dilated) kernel larger than padded input [1, 5, 5]"),
    (lambda: nir.NIRGraph(nodes={"input": nir.Input(input_type=np.array([2, 5, 5])),
                                 "x": nir.Conv2d(input_shape=(5, 5), weight=np.ones((3, 1, 3, 3)), stride=1, padding=0,
                                                 dilation=1, groups=2, bias=np.zeros(3)),
                                 "output": nir.Output(output_type=np.array([3, 3, 3]))},
                          edges=[("input", "x"), ("x", "output")], type_check=False),
     "node 'x': groups=2 must be >= 1 and divide the 3 output channels"),
    (lambda: nir.NIRGraph(nodes={"input": nir.Input(input_type=np.array([2, 3, 3])),
                                 "x": nir.Flatten(input_type={"input": np.array([2, 3, 3])}, start_dim=1, end_dim=-1),
                                 "output": nir.Output(output_type=np.array([2, 9]))},
                          edges=[("input", "x"), ("x", "output")], type_check=False),
     "node 'x' (Flatten): flattening axes 1..-1 of [2, 3, 3] is partial"),
    (lambda: nir.NIRGraph(nodes={"input": nir.Input(input_type=np.array([4])), "x": lif(),
                                 "o1": nir.Output(output_type=np.array([4])), "o2": nir.Output(output_type=np.array([4]))},
                          edges=[("input", "x"), ("x", "o1"), ("x", "o2")], type_check=False),
     "one input and one output; the NIR graph has 1 Input and 2 Output"),
]


@pytest.mark.parametrize("make, message", REFUSALS)
def test_unrepresentable_nodes_are_refused_by_node(make, message):
    if message is None:
        from_nir(make(), dt=DT)
        return
    with pytest.raises(NIRImportError) as e:
        from_nir(make(), dt=DT)
    assert message in str(e.value)
    assert "\n" not in str(e.value)
