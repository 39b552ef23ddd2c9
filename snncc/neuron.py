"""The one definition of snncc's spiking neuron (BSD paper, eqs. 1-3 and 10; MSKD paper, eq. 1).

Every consumer -- training modules (torch, with a surrogate spike), the IR
reference executor (torch, hard threshold), the Numba simulator (compiled from
these same functions with ``numba.njit``) and the Lava lowering (which maps
:class:`NeuronParams` onto Lava's LIF parameters) -- uses the functions below.
They are plain arithmetic so they run unchanged on Python floats, numpy arrays,
torch tensors and inside ``numba.njit`` (``register_jitable`` lets jitted code
call them while leaving them ordinary Python functions everywhere else).

Discrete-time update for one step, input current ``x``::

    LIF:  h = v + (x - (v - v_rest)) / tau          (BSD eq. 2, spikingjelly decay_input=True)
    LIF without input decay (decay_input=False):
          h = v - (v - v_rest) / tau + x            (spikingjelly decay_input=False; MSKD eq. 1:
                                                      h = alpha v + x, alpha = 1 - 1/tau, v_rest = 0)
    LIF with tau = 1 (either form): h = x + v_rest, no memory, formed exactly (NIR's Threshold)
    IF:   h = v + x                                 (eq. 10)
    CUBA: i = i + (x - i) / tau_syn;  h = LIF charge with i as the input current
    s   = 1 if h >= v_th else 0                     (eq. 3, Heaviside with H(0) = 1)
    hard reset:  v' = h * (1 - s) + v_reset * s     (eq. 1)
    soft reset:  v' = h - v_th * s                  (reset by subtraction)

The current-based LIF (CUBA; NIR's CubaLIF, Loihi's and Lava's LIF with ``du < 1``) is the
LIF with ``tau_syn > 1``: a synaptic current state ``i`` (starting at 0) low-pass filters the
input current first, and the membrane integrates the *new* current (Lava's and snnTorch's
order). ``tau_syn = 1`` means no filter: the plain LIF (the current state is not kept).

The two LIF forms differ only in the input's gain (1/tau or 1); both leak ``v - v_rest`` by
1/tau per step. ``NeuronParams.decay_input`` chooses (default True, BSD's form); IF has no leak
and takes the default.

``v_rest`` is ``v_reset`` under hard reset and 0 under soft reset (spikingjelly's
convention when ``v_reset=None``). The state starts at ``v_rest``.

Firing comparison: ``>=``. This is chosen once, here, because it is what
spikingjelly's surrogate functions compute in their forward pass
(``heaviside(x) = (x >= 0)``), so trained networks deploy with the exact
spikes they were trained with. Backends whose hardware fires on ``>`` (Lava:
``v > vth``) must compensate in their lowering.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

from numba.extending import register_jitable

LIF = "lif"
IF = "if"
MEMORYLESS = 2  # charge's model code of a LIF with tau = 1 (0: IF, 1: LIF)
HARD = "hard"
SOFT = "soft"


@dataclass(frozen=True)
class NeuronParams:
    """Parameters of a LIF/IF population. ``tau`` is ignored for IF; a LIF with ``tau = 1`` keeps no
    memory (a stateless threshold on its input: fires iff ``x + v_rest >= v_th``)."""

    model: str = LIF
    tau: float = 2.0
    v_th: float = 1.0
    v_reset: float = 0.0
    reset: str = HARD
    tau_syn: float = 1.0  # > 1: current-based LIF (CUBA), in steps; 1: no synaptic filter
    decay_input: bool = True  # LIF: the input is scaled by 1/tau (BSD eq. 2); False: added as is (MSKD eq. 1)

    def __post_init__(self):
        if self.model not in (LIF, IF):
            raise ValueError(f"unknown neuron model {self.model!r} (expected 'lif' or 'if')")
        if self.reset not in (HARD, SOFT):
            raise ValueError(f"unknown reset rule {self.reset!r} (expected 'hard' or 'soft')")
        if self.model == LIF and not self.tau >= 1.0:
            raise ValueError(f"LIF tau must be >= 1 (got {self.tau})")
        if not self.tau_syn >= 1.0:
            raise ValueError(f"synaptic tau_syn must be >= 1 (got {self.tau_syn})")
        if not isinstance(self.decay_input, bool):
            raise ValueError(f"decay_input must be True or False (got {self.decay_input!r})")
        if not self.decay_input and self.model != LIF:
            raise ValueError("decay_input=False is a form of the leaky model 'lif' (IF does not decay)")
        if self.tau_syn != 1.0 and self.model != LIF:
            raise ValueError("a synaptic current (tau_syn > 1) needs the leaky model 'lif'")
        if not self.v_th > self.v_rest and not self.memoryless:
            raise ValueError(f"threshold {self.v_th} must exceed the resting potential {self.v_rest}")

    @property
    def v_rest(self) -> float:
        return self.v_reset if self.reset == HARD else 0.0

    @property
    def leaky(self) -> bool:
        return self.model == LIF

    @property
    def memoryless(self) -> bool:
        """tau = 1: the LIF keeps no state (fires iff x + v_rest >= v_th; any threshold is meaningful)."""
        return self.model == LIF and self.tau == 1.0

    @property
    def soft(self) -> bool:
        return self.reset == SOFT

    @property
    def current_based(self) -> bool:
        """CUBA: a synaptic current state filters the input (tau_syn > 1)."""
        return self.tau_syn != 1.0

    @property
    def decay(self) -> float:
        """The membrane's decay factor per step, 1 - 1/tau (MSKD eq. 1's alpha); 1 for IF."""
        return 1.0 - 1.0 / self.tau if self.leaky else 1.0

    @property
    def input_gain(self) -> float:
        """What one unit of input current adds to the membrane: 1/tau (LIF with decay_input), else 1."""
        return 1.0 / self.tau if self.leaky and self.decay_input else 1.0

    @classmethod
    def from_decay(cls, alpha: float, v_th: float, v_reset: float = 0.0, reset: str = HARD) -> "NeuronParams":
        """MSKD eq. 1's neuron u = alpha u (1 - z) + I: the LIF without input decay, tau = 1 / (1 - alpha)."""
        if not 0.0 < alpha < 1.0:
            raise ValueError(f"decay factor alpha must be in (0, 1) (got {alpha})")
        return cls(LIF, 1.0 / (1.0 - alpha), v_th, v_reset, reset, decay_input=False)

    def as_dict(self) -> dict:
        return asdict(self)

    def scalars(self) -> tuple:
        """(leaky, inv_tau, v_th, v_reset, v_rest, soft, decay_input) as plain numbers for kernels; leaky
        is the model code of :func:`charge` (0 IF, 1 LIF, 2 memoryless LIF)."""
        inv_tau = 1.0 / self.tau if self.leaky else 1.0
        leaky = MEMORYLESS if self.memoryless else int(self.leaky)
        return (leaky, inv_tau, self.v_th, self.v_reset, self.v_rest, int(self.soft), int(self.decay_input))

    def firing_current(self, steps: int) -> float:
        """The smallest constant input current with which a neuron starting at rest fires within ``steps`` steps.

        From the update above with constant ``x`` and no spike yet, ``u_t = h_t - v_rest`` is
        ``x * (1 - (1 - 1/tau)^t)`` (LIF), ``tau`` times that without input decay, or ``t * x``
        (IF), increasing in t, so the neuron fires by step ``steps`` iff ``u_steps >= v_th - v_rest``.
        """
        if steps < 1:
            raise ValueError(f"steps must be >= 1, got {steps}")
        gain = self.input_gain * self.tau * (1.0 - self.decay ** steps) if self.leaky else float(steps)
        return (self.v_th - self.v_rest) / gain


@register_jitable
def synapse(i, x, inv_tau_syn):
    """CUBA synaptic current I[t] = I[t-1] + (x[t] - I[t-1]) / tau_syn (forward Euler of tau_syn I' = -I + x)."""
    return i + (x - i) * inv_tau_syn


@register_jitable
def charge(v, x, leaky, inv_tau, v_rest, decay_input):
    """Pre-spike membrane potential H[t] from U[t-1] and input current I[t]. ``leaky``: 0 IF, 1 LIF,
    2 (:data:`MEMORYLESS`) a LIF with tau = 1, which forgets U[t-1] in either form: H[t] = I[t] + U_rest,
    formed without U[t-1] so that it is exact."""
    if leaky == MEMORYLESS:
        return x + v_rest
    if leaky:
        if decay_input:
            return v + (x - (v - v_rest)) * inv_tau
        return v - (v - v_rest) * inv_tau + x
    return v + x


@register_jitable
def fire(h, v_th):
    """Hard-threshold spike S[t] = Theta(H[t] - U_thr), Theta(0) = 1 (as 0/1 of h's type)."""
    return (h >= v_th) * 1.0


@register_jitable
def reset(h, s, v_th, v_reset, soft):
    """Post-spike membrane potential U[t]."""
    if soft:
        return h - v_th * s
    return h * (1.0 - s) + v_reset * s


@register_jitable
def step(v, x, leaky, inv_tau, v_th, v_reset, v_rest, soft, decay_input):
    """One full hard-threshold update; returns (spike, new_v)."""
    h = charge(v, x, leaky, inv_tau, v_rest, decay_input)
    s = fire(h, v_th)
    return s, reset(h, s, v_th, v_reset, soft)
