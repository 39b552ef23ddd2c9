"""Spike-graph operations: small frozen dataclasses that infer their output type.

Adding a node type means: write its dataclass here with an ``infer`` method and
register it (``@register_op``, which appends it to :data:`OP_TYPES`). Serialization,
validation and every backend look ops up by class, and backends refuse (by name) any
op they have no rule for. Passes ask ops questions through class attributes
(``is_synapse``, ``is_population``, ``folds_into_synapse``, ``can_be_static``,
``passes_through``) instead of type-checking them; a new op answers them by
overriding the defaults of :class:`Op`.

Shapes are per sample, channel-first, without batch or time axes.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from snncc.ir.types import GraphError, Kind, StrEnum, TensorType
from snncc.neuron import NeuronParams


def conv_out(size: int, k: int, s: int, p: int, d: int = 1) -> int:
    """Output length of a window op: input ``size``, kernel ``k``, stride ``s``, padding ``p``, dilation ``d``."""
    return (size + 2 * p - d * (k - 1) - 1) // s + 1


def _same_shapes(name: str, types: list[TensorType]) -> tuple:
    shapes = {t.shape for t in types}
    if len(shapes) != 1:
        raise GraphError(f"node {name!r}: inputs have different shapes {sorted(map(list, shapes))}")
    return types[0].shape


def _summed_kind(types: list[TensorType]) -> Kind:
    """Kind of an element-wise sum: spikes add up to counts, anything analog stays analog."""
    kinds = {t.kind for t in types}
    if Kind.ANALOG in kinds:
        return Kind.ANALOG
    return Kind.COUNT


class Encoding(StrEnum):
    DIRECT = "direct"   # the analog sample is presented at every step
    SPIKE = "spike"     # the input is already a binary spike train


class PoolMode(StrEnum):
    MAX = "max"
    AVG = "avg"
    SUM = "sum"


class ReadoutMode(StrEnum):
    COUNT = "count"     # spike counts of a population
    MEAN = "mean"       # time-averaged analog value


OP_TYPES: tuple = ()
OP_BY_NAME: dict = {}


def register_op(cls):
    """Class decorator: make ``cls`` a spike-graph op (listed in OP_TYPES / OP_BY_NAME)."""
    global OP_TYPES
    if cls.__name__ in OP_BY_NAME:
        raise GraphError(f"op {cls.__name__!r} is already registered")
    OP_TYPES = OP_TYPES + (cls,)
    OP_BY_NAME[cls.__name__] = cls
    return cls


def unregister_op(cls) -> None:
    """Undo :func:`register_op` (for tests that add a toy op)."""
    global OP_TYPES
    OP_TYPES = tuple(c for c in OP_TYPES if c is not cls)
    OP_BY_NAME.pop(cls.__name__, None)


class Op:
    """Defaults of the questions passes and backends ask an op (override in a subclass)."""

    arity = (1, 1)
    is_synapse = False          # weighted map whose output current a population integrates
    is_population = False       # stateful neurons emitting spikes
    is_input = False
    is_readout = False
    folds_into_synapse = False  # linear and stateless: folds into the synapse that reads it
    can_be_static = True        # its value is constant over time when its inputs are
    passes_through = False      # output == input values (only reshaped)


@register_op
@dataclass(frozen=True, eq=False)
class Input(Op):
    """Network input. ``encoding='direct'``: the analog sample is presented at every step.
    ``encoding='spike'``: the input is already a binary spike train (B, T, *shape).

    A direct input may carry a per-channel normalisation (``mean``, ``std``, each of
    shape (C,) for C = shape[0]): the value the network sees is ``(x - mean[c]) / std[c]``
    (:meth:`present`). It is host-side preprocessing, part of the graph so that every
    backend and every run applies the one the network was trained with.
    """

    shape: tuple
    encoding: Encoding = Encoding.DIRECT
    mean: np.ndarray | None = None
    std: np.ndarray | None = None
    arity = (0, 0)
    is_input = True

    def __post_init__(self):
        object.__setattr__(self, "encoding", Encoding.coerce(self.encoding))

    @property
    def direct(self) -> bool:
        return self.encoding is Encoding.DIRECT

    def infer(self, name, types):
        if not isinstance(self.encoding, Encoding):
            raise GraphError(f"node {name!r}: unknown input encoding {self.encoding!r}")
        shape = tuple(int(d) for d in self.shape)
        if (self.mean is None) != (self.std is None):
            raise GraphError(f"node {name!r}: input normalisation needs both mean and std")
        if self.mean is not None:
            if not self.direct:
                raise GraphError(f"node {name!r}: a spike-encoded input cannot be normalised")
            mean, std = np.asarray(self.mean, np.float64), np.asarray(self.std, np.float64)
            channels = shape[0] if shape else 1
            if mean.shape != (channels,) or std.shape != (channels,):
                raise GraphError(f"node {name!r}: normalisation mean/std must have shape ({channels},), "
                                 f"got {list(mean.shape)} / {list(std.shape)}")
            if not (np.isfinite(mean).all() and np.isfinite(std).all() and (std > 0).all()):
                raise GraphError(f"node {name!r}: normalisation needs finite mean and std > 0")
        kind = Kind.ANALOG if self.direct else Kind.SPIKE
        return TensorType(kind, shape)

    def present(self, x: np.ndarray) -> np.ndarray:
        """The values the network sees for raw samples ``x`` (B, *shape): normalised if the input says so."""
        if self.mean is None:
            return x
        bcast = (-1,) + (1,) * (len(self.shape) - 1)
        mean = np.asarray(self.mean, np.float64).reshape(bcast)
        std = np.asarray(self.std, np.float64).reshape(bcast)
        return (x - mean) / std

    def value_bound(self, raw_bound: float) -> float:
        """max |present(x)| over |x| <= raw_bound."""
        if self.mean is None:
            return float(raw_bound)
        mean, std = np.asarray(self.mean, np.float64), np.asarray(self.std, np.float64)
        return float(np.max((np.abs(mean) + raw_bound) / std))


@register_op
@dataclass(frozen=True, eq=False)
class Dense(Op):
    """Fully connected synapse: current = weight @ x + bias. weight: (out, in)."""

    weight: np.ndarray
    bias: np.ndarray | None = None
    arity = (1, 1)
    is_synapse = True

    def infer(self, name, types):
        (t,) = types
        out_f, in_f = self.weight.shape
        if t.shape != (in_f,):
            raise GraphError(f"node {name!r}: dense expects input shape [{in_f}], got {list(t.shape)}")
        if self.bias is not None and self.bias.shape != (out_f,):
            raise GraphError(f"node {name!r}: bias shape {list(self.bias.shape)} != [{out_f}]")
        return TensorType(Kind.ANALOG, (out_f,))

    def flops(self, in_type, out_type) -> int:
        return int(self.weight.shape[0] * self.weight.shape[1])


@register_op
@dataclass(frozen=True, eq=False)
class Conv(Op):
    """2-D convolution synapse (cross-correlation, as torch's ``conv2d``). weight:
    (C_out, C_in / groups, kh, kw); kernel taps ``dilation`` apart; with ``groups`` g the
    channels split into g groups and output group j reads only input group j."""

    weight: np.ndarray
    bias: np.ndarray | None = None
    stride: tuple = (1, 1)
    padding: tuple = (0, 0)
    dilation: tuple = (1, 1)
    groups: int = 1
    arity = (1, 1)
    is_synapse = True

    def infer(self, name, types):
        (t,) = types
        c_out, c_grp, kh, kw = self.weight.shape
        g = int(self.groups)
        if g < 1 or c_out % g:
            raise GraphError(f"node {name!r}: groups={g} must be >= 1 and divide the {c_out} output channels")
        c_in = c_grp * g
        if len(t.shape) != 3 or t.shape[0] != c_in:
            raise GraphError(f"node {name!r}: conv expects input [{c_in}, H, W], got {list(t.shape)}")
        ho = conv_out(t.shape[1], kh, self.stride[0], self.padding[0], self.dilation[0])
        wo = conv_out(t.shape[2], kw, self.stride[1], self.padding[1], self.dilation[1])
        if ho <= 0 or wo <= 0:
            raise GraphError(f"node {name!r}: (dilated) kernel larger than padded input {list(t.shape)}")
        return TensorType(Kind.ANALOG, (c_out, ho, wo))

    def flops(self, in_type, out_type) -> int:
        """kh * kw * C_in / groups MACs per output element."""
        return int(self.weight.size * out_type.shape[1] * out_type.shape[2])


@register_op
@dataclass(frozen=True, eq=False)
class Pool(Op):
    """2-D pooling. max of spikes is an OR (stays SPIKE); sum of spikes is a COUNT;
    avg is ANALOG (sum / k*k, padding counted)."""

    mode: PoolMode
    kernel: tuple
    stride: tuple
    padding: tuple = (0, 0)
    arity = (1, 1)
    folds_into_synapse = True

    def __post_init__(self):
        object.__setattr__(self, "mode", PoolMode.coerce(self.mode))

    @property
    def window_value(self) -> float:
        """Weight of each window element when the pool is a linear map (avg: 1/k, sum: 1)."""
        return 1.0 / (self.kernel[0] * self.kernel[1]) if self.mode is PoolMode.AVG else 1.0

    def infer(self, name, types):
        (t,) = types
        if not isinstance(self.mode, PoolMode):
            raise GraphError(f"node {name!r}: unknown pooling mode {self.mode!r}")
        if len(t.shape) != 3:
            raise GraphError(f"node {name!r}: pooling expects [C, H, W], got {list(t.shape)}")
        ho = conv_out(t.shape[1], self.kernel[0], self.stride[0], self.padding[0])
        wo = conv_out(t.shape[2], self.kernel[1], self.stride[1], self.padding[1])
        if ho <= 0 or wo <= 0:
            raise GraphError(f"node {name!r}: pooling window larger than input {list(t.shape)}")
        kind = {PoolMode.MAX: t.kind, PoolMode.SUM: _summed_kind([t]), PoolMode.AVG: Kind.ANALOG}[self.mode]
        return TensorType(kind, (t.shape[0], ho, wo))


@register_op
@dataclass(frozen=True, eq=False)
class Flatten(Op):
    """Reshape to a vector (C-order); values and kind unchanged."""

    arity = (1, 1)
    folds_into_synapse = True
    passes_through = True

    def infer(self, name, types):
        (t,) = types
        return TensorType(t.kind, (t.size,))


@register_op
@dataclass(frozen=True, eq=False)
class Neuron(Op):
    """A LIF/IF population. It integrates the sum of all its inputs: synaptic currents
    and/or identity spike paths (a Spike-ResNet shortcut).

    Heterogeneous populations (e.g. imported from NIR) carry per-neuron arrays of the
    population's shape for ``tau``, ``v_th``, ``v_reset`` and ``tau_syn``; an array given
    overrides the scalar of the same name in ``params`` (which then holds neuron 0's values),
    with every neuron following :mod:`snncc.neuron` with its own parameters.
    """

    params: NeuronParams = field(default_factory=NeuronParams)
    tau: np.ndarray | None = None
    v_th: np.ndarray | None = None
    v_reset: np.ndarray | None = None
    tau_syn: np.ndarray | None = None
    arity = (1, None)
    is_population = True
    can_be_static = False
    ARRAYS = ("tau", "v_th", "v_reset", "tau_syn")

    def infer(self, name, types):
        shape = _same_shapes(name, types)
        for f in self.ARRAYS:
            a = getattr(self, f)
            if a is not None and np.shape(a) != tuple(shape):
                raise GraphError(f"node {name!r}: per-neuron {f} has shape {list(np.shape(a))}, "
                                 f"the population {list(shape)}")
        if self.heterogeneous:
            p = self.per_neuron(shape)
            prm = self.params
            if prm.leaky and self.tau is not None and not (p["tau"] > 1.0).all():
                raise GraphError(f"node {name!r}: a per-neuron LIF tau must be > 1 for every neuron "
                                 f"(tau = 1, no memory, is a population-wide scalar)")
            if not (p["tau_syn"] >= 1.0).all() or (not prm.leaky and (p["tau_syn"] != 1.0).any()):
                raise GraphError(f"node {name!r}: tau_syn must be >= 1 (and 1 for IF) for every neuron")
            if not prm.memoryless and not (p["v_th"] > p["v_rest"]).all():
                raise GraphError(f"node {name!r}: every threshold must exceed its resting potential")
        return TensorType(Kind.SPIKE, shape)

    @property
    def heterogeneous(self) -> bool:
        return any(getattr(self, f) is not None for f in self.ARRAYS)

    @property
    def current_based(self) -> bool:
        return self.params.current_based or (self.tau_syn is not None and bool((self.tau_syn != 1.0).any()))

    def per_neuron(self, shape) -> dict:
        """float64 arrays of ``shape``: tau, v_th, v_reset, v_rest, tau_syn (arrays override params)."""
        prm = self.params
        out = {}
        for f in self.ARRAYS:
            a = getattr(self, f)
            out[f] = np.broadcast_to(np.asarray(getattr(prm, f) if a is None else a, np.float64), tuple(shape))
        out["v_rest"] = out["v_reset"] if not prm.soft else np.zeros(tuple(shape))
        return out


@register_op
@dataclass(frozen=True, eq=False)
class Integrator(Op):
    """A non-spiking population (NIR's LI, CubaLI and I): each neuron integrates the sum of its
    inputs with the neuron update of :mod:`snncc.neuron` (``charge``; ``synapse`` first when
    ``tau_syn > 1``) and outputs its membrane potential (ANALOG), never firing or resetting.
    ``params.v_reset`` is the resting (leak) potential and the initial state; ``params.v_th`` is
    unused (give ``inf``)."""

    params: NeuronParams = field(default_factory=lambda: NeuronParams(v_th=float("inf")))
    arity = (1, None)
    can_be_static = False  # stateful: its membrane changes over time even under a constant input

    def infer(self, name, types):
        if self.params.soft:
            raise GraphError(f"node {name!r}: an integrator does not reset")
        return TensorType(Kind.ANALOG, _same_shapes(name, types))


@register_op
@dataclass(frozen=True, eq=False)
class Add(Op):
    """Element-wise sum (a SEW spike ADD or an MS membrane shortcut)."""

    arity = (2, None)

    def infer(self, name, types):
        return TensorType(_summed_kind(types), _same_shapes(name, types))


@register_op
@dataclass(frozen=True, eq=False)
class Readout(Op):
    """Network output, accumulated over the T steps.
    'count': spike counts of a population (prediction = argmax, which equals BSD's
    cosine similarity to one-hot label codes). 'mean': time-averaged analog value
    (e.g. a synapse's current used directly as logits: an analog readout).
    ``population``: output neurons per class, in consecutive blocks (class j owns outputs
    j*P .. j*P + P - 1); the prediction is the class whose block sums highest, which is the
    cosine rule for label codes of P ones per class. 1 (the default) is one neuron per class.
    The output values themselves are per neuron either way: backends never see the grouping."""

    mode: ReadoutMode = ReadoutMode.COUNT
    population: int = 1
    arity = (1, 1)
    is_readout = True
    can_be_static = False
    passes_through = True

    def __post_init__(self):
        object.__setattr__(self, "mode", ReadoutMode.coerce(self.mode))
        p = self.population
        if isinstance(p, bool) or not isinstance(p, (int, np.integer)) or p < 1:
            raise GraphError(f"readout population must be an integer >= 1, got {p!r}")
        object.__setattr__(self, "population", int(p))

    def class_scores(self, output: np.ndarray) -> np.ndarray:
        """(B, ...) readout values -> (B, classes) scores: each class's block of ``population`` outputs summed."""
        return np.asarray(output).reshape(len(output), -1, self.population).sum(axis=2)

    def predict(self, output: np.ndarray) -> np.ndarray:
        """(B, ...) readout values -> (B,) predicted classes (argmax of :meth:`class_scores`; ties: lowest class)."""
        return self.class_scores(output).argmax(axis=1)

    def infer(self, name, types):
        (t,) = types
        if t.size % self.population:
            raise GraphError(f"node {name!r}: a readout of {t.size} values cannot be split into blocks of "
                             f"{self.population} (population)")
        if self.mode is ReadoutMode.COUNT:
            if t.kind is Kind.ANALOG:
                raise GraphError(f"node {name!r}: a 'count' readout needs spikes, got {t.kind.value}")
            return TensorType(Kind.COUNT, t.shape)
        if self.mode is ReadoutMode.MEAN:
            return TensorType(Kind.ANALOG, t.shape)
        raise GraphError(f"node {name!r}: unknown readout mode {self.mode!r}")


def is_synapse(op) -> bool:
    return getattr(op, "is_synapse", False)
