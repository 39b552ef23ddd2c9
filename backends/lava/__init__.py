"""Lower a fully spiking SpikeGraph onto Lava processes and run it (lava-nc 0.10, CPU sim).

Package layout (no module imports a sibling's private names; no import cycles)::

    plan.py      LavaOptions, the plan data (Pop, Conn, Dyn, LavaPlan; role/kind enums), FloatParams
    matrices.py  conv/pool matrices, the lava Conv kernel layout
    lowering.py  RULES (one per op class), requirements (the validation stage), lower_float
    fixed.py     the fixed-point parameters and Lava process arguments (docstring: the arithmetic)
    quant.py     integer ranges and weight quantisation;  quantizer.py  scale search, lower_fixed
    integer.py   snncc's integer reference (simulate, run_integer)
    host.py      direct-input currents and the readout replay (torch reference rules)
    build.py     plan -> Lava processes;  execute.py  run_plan
    netx.py      lava-dl netx HDF5 export;  backend.py  LavaBackend (the Backend interface)

Pipeline (:func:`snncc.runtime.lower`): the validation stage refuses graphs that are not fully
spiking with ``check_fully_spiking``'s first violation (``lowering.requirements``); ops without
a rule are refused by name (``Backend.check_ops``); then one rule per IR op class (``RULES``)::

    Input  direct  -> no process: its constant current is folded into a population bias
           spike   -> lava.proc.io.source.RingBuffer (one buffer holding the whole batch)
    Dense          -> lava.proc.dense.Dense (weights scaled by the target's 1/tau)
    Conv           -> chosen per synapse (Conn.kind / Conn.note, in lava.json and summary.txt):
                      * lava.proc.conv.process.Conv when the conv reads a spike source's
                        (C, H, W) vector directly (a population, an OR pool, the spike input)
                        and kernel, stride, padding, dilation, groups fit its int8 fields (<= 127).
                        Populations stay 1-D C-order vectors; Lava's Conv ports are (X, Y, C),
                        here (H, W, C), bridged with virtual ports:
                        s_out.reshape((C, H, W)).transpose((1, 2, 0)) -> Conv.s_in and
                        Conv.a_out.transpose((2, 0, 1)).reshape((n,)) -> LIF.a_in. Weight
                        (C_out, kh, kw, C_in) spatially flipped (:func:`lava_kernel`: the CPU
                        model uses scipy convolve2d, a true convolution); padding/stride/dilation
                        given as (H, W), groups as is (Lava 0.10 supports both). Same one-step
                        delay as Dense (sends a_buf first).
                      * otherwise (an avg/sum pool folded in front of it, a larger geometry) the unrolled (Toeplitz)
                        matrix, built sparse and vectorised: lava Dense when it has <=
                        DENSE_MAX_ENTRIES entries, else lava Sparse (CSR).
                      The plan keeps the kernel in snncc's layout; no out x in matrix is built.
    Identity spike paths, relays, OR windows -> lava.proc.sparse.process.Sparse (CSR)
    Pool  avg/sum  -> folded into the consuming synapse's matrix (W_syn @ P), no process
          max      -> an "OR" population (IF, du = dv = 1, vth = 0.5, weight 1 from each
                      window element): adds one Dense hop; see Timing.
    Flatten        -> index identity on C-order vectors (folded, no process)
    Neuron         -> lava.proc.lif.LIF
    Readout        -> lava.proc.io.sink.RingBuffer on every recorded population; the
                      readout counts come from the (re-aligned) recorded trains
    recurrent delayed edge -> the Dense's natural one-step delay (see Timing); an edge of d steps
                      gets identity relay populations for the other steps (lava's DelayDense,
                      which would hold them in one process, is not used yet)
    Add            -> only with graded spikes (below); otherwise refused (a SEW spike ADD
                      first by the validator, with a hint at the option)

Graded spikes (``lower(graph, Options(graded_spikes=True))``, CLI ``--graded-spikes``; Loihi 2 sends
integer payloads with a spike). A graph that is not fully spiking only because spike counts
(Kind.COUNT: a SEW spike ADD of spike sources/counts) reach a synapse or a population is
then lowered with graded messages instead of being refused:

    Add (COUNT)    -> lava.proc.graded.process.GradedVec (vth = 0, exp = 0): v = a_in,
                      s_out = v * (|v| > 0), i.e. it forwards its input, the spike count,
                      as a graded spike in the same step. Each addend reaches it through
                      an identity (or sum-pool 0/1) Sparse, one hop like any synapse, so a
                      GradedVec has a depth like a population. Its outgoing Dense / Sparse /
                      Conv get num_message_bits = bit length of the largest possible count
                      (> 0: Lava's models then use the payload, weights.dot(s_in), instead of
                      the binary spike mask); relays of a count are GradedVec too.
    ANALOG values  -> still refused (a MS membrane shortcut, an analog readout ...): the
                      validator's first non-count violation, one line, naming the node.

Lava 0.10 ships GradedVec with a fixed_pt model only; the float run uses
:func:`graded_float_model`, Lava's own AbstractGradedVecModel with float ports, chosen with
``Loihi2SimCfg(exception_proc_model_map=...)``. In fixed point Lava's PyGradedVecModelFixed
is used: the counts are exact integers and the bit-accurate Dense/Sparse/Conv models compute
the same integer sums (integer.py reproduces them; Lava == integer reference, tested).
The plan lists the graded edges (``LavaPlan.graded_edges``, lava.json ``graded_edges``,
summary "graded messages").

Parameter mapping (derivation). snncc's LIF step with input current x is
``h = v + (x - (v - v_rest)) / tau``, fire on ``h >= v_th``, hard reset to ``v_reset``
(``v_rest = v_reset``). Shift the state, w = v - v_reset: w starts at 0, resets to 0
(exactly Lava's reset) and ``w' = w (1 - 1/tau) + x / tau``. Lava's float LIF is
``u = u (1 - du) + a_in; v = v (1 - dv) + u + bias; spike if v > vth; v = 0``. So:

    du = 1            (u = a_in: it carries only this step's input; u is never reset,
                       but du = 1 overwrites it every step)
    dv = 1 / tau      (IF: dv = 0)
    weights, synapse bias and direct-input currents scaled by 1/tau (IF: by 1)
    bias = b / tau    (the brief's extra v_rest/tau term cancels in shifted coordinates)
    vth  = nextafter(v_th - v_reset, -inf)   (w >= a  <=>  w > nextafter(a, -inf) in float)

The LIF without input decay (``decay_input=False``, MSKD eq. 1: ``w' = w (1 - 1/tau) + x``)
is Lava's LIF natively: the same du, dv and vth with the inputs not scaled
(``NeuronParams.input_gain`` is the scale: 1/tau or 1). The current-based LIF (``tau_syn > 1``)
is Lava's LIF with ``du = 1/tau_syn``: ``u`` is the synaptic current times the input gain, and
the inputs are scaled by ``input_gain / tau_syn``.

Soft reset (v' = h - v_th s) has no Lava LIF equivalent (Lava zeroes v and loses the
residual h - v_th) and is refused. A memoryless LIF (tau = 1, NIR's Threshold) is dv = 1: Lava's
v (1 - dv) is 0, so v = u + bias, exact in float; fixed point refuses it (dv would be 4096), and a
threshold at or below rest (firing without input) is refused, since the alignment below needs every
population silent before its depth.

Inputs. A direct-encoded (analog) input reaches the first synapse as the same current
W x + b at every step, so that current (computed with the reference's own torch rules,
bit-identical to the oracle) becomes the first populations' bias, set per sample with
``bias_mant.set``. A spike-encoded input is replayed by a source RingBuffer.

Timing. Every Dense hop adds one step. Each spike source S (population, OR pool, spike
input) gets a depth d(S): Lava column k of a sample carries reference step k - d(S).
Direct-input-fed populations and the spike input have depth 0; a population B gets
d(B) = max over its same-step inputs of d(S) + 1 - delay. An edge S -> B with reference
delay delta then needs H = d(B) - d(S) + delta >= 1 Lava hops: one Dense hop plus H - 1
identity relay populations (IF, du = dv = 1, vth = 0.5). A recurrent delay-1 self edge
needs exactly the Dense's one hop; an edge that would need H < 1 is refused.
Synapse biases must start at column d(B) (+ the synapse->neuron delay), not at column 0,
so they are fed through a Dense from a "clock" relay chain that fires at every column
from k on; only biases starting at column 0 use bias_mant. Each sample runs
T + max depth steps from zero state (v, u, Dense a_buff set to 0 between samples, no
rebuild), and each population's train is read from columns d .. d + T - 1.
With all state zero and no input before its depth, a population is silent there, so the
re-aligned trains are the reference trains exactly (up to float rounding order: the
tests compare them spike for spike).

The runtime is always stopped (try/finally).

Performance note (measured, 784-1024-1024-10 LIF MLP, T=100, CPU float sim): about
2.5-4.7 ms per Lava step, but reading the sinks back dominates (about 8 s for ~420k
recorded values): lava 0.10's Var.get sends arrays one element per message. A packed
(bit-per-step) recorder process would cut that ~50x; not done yet. Lava's CPU Conv model
is a Python loop of scipy convolve2d calls over (C_out, C_in) pairs per step: fine for
small CNNs; from reading the model (not measured), a 512x512-channel layer means ~262k
scipy calls per step, so ResNet-sized graphs lower/compile fast (snncc.bench.compile_bench)
but are not practical to simulate on Lava's CPU backend.

Fixed point: ``lower(graph, Options(fixed_point=True))`` is this float plan plus integer
parameters from :mod:`.fixed` (its docstring: Lava's bit-accurate arithmetic, the quantisation,
what is exact); ``run`` then builds the LIF/Dense processes from those (``plan.params``) and uses
``Loihi2SimCfg(select_tag="fixed_pt")``. The per-layer report is ``plan.fixed.report``.
"""
from __future__ import annotations
from snncc.backends.lava.backend import BACKEND, LavaBackend, compile_graph, load_artifact, lower, run
from snncc.backends.lava.build import graded_float_model
from snncc.backends.lava.matrices import conv_matrix, conv_matrix_sparse, lava_kernel, pool_matrix_sparse
from snncc.backends.lava.plan import (FORMAT, Conn, ConnKind, ConnRole, Dyn, LavaOptions, LavaPlan, LoweringError,
                                      Pop, PopRole, Precision)

Options = LavaOptions

__all__ = ["BACKEND", "LavaBackend", "Options", "LavaOptions", "LoweringError", "LavaPlan", "Pop", "Conn", "Dyn",
           "PopRole", "ConnRole", "ConnKind", "Precision", "FORMAT", "lower", "run", "compile_graph",
           "load_artifact", "graded_float_model", "conv_matrix", "conv_matrix_sparse", "pool_matrix_sparse",
           "lava_kernel"]
