"""BSD for a one-layer spiking RNN (App. C, eqs. 11-12); its export is :func:`snncc.export.export_rnn`.

One hidden layer of pyramidal neurons, each with a Type 1 and a Type 2 neuron.
``steps_per_element`` K LIF steps per sequence element (App. E.2.3 "timesteps at 4": K = 4 under
``--recipe paper``; K = 1 is one step per element). Element i's input current is held for its K steps,
the recurrence runs step by step (W_hh s of the previous LIF step, also across elements) and the LIF
state carries across the whole sequence of N*K steps. With K = 1:

    Type 1, forward in time (eq. 11):   h_i  = W_ih x_i + W_hh s_{i-1},   s_i  = SN(h_i),   o_i = W_ho h_i
    Type 2, backward in time (eq. 12):  h'_i = Theta_oh y_i + Theta_hh s'_{i+1},  s'_i = SN(h'_i),  x^_i = Theta_hi h'_i

with s_0 = 0 and s'_{N+1} = 0. With K > 1, h and h' are (N*K, B, H) currents and spikes, and the
readouts o_i and x^_i are the mean over element i's K steps (W_ho of the mean current). Local losses
(C2; every synapse input detached):

* hidden Type 1 (W_ih, W_hh): ReCo(h, h') over the batch, currents flattened to N*H;
* hidden Type 2 (Theta_oh, Theta_hh): ReCo(h', h);
* output (W_ho): cross-entropy of o_i with the next character (text) or MSE with
  the next values (time series), on h detached;
* input reconstruction (Theta_hi): the same loss of x^_i against x_i.

Spikes never carry gradient here: the losses are on currents and the spikes
feeding back are detached, so no surrogate is needed.

The readout o_i = W_ho h_i is analog (a linear map of the hidden current, as in
the paper). The exported graph therefore contains the spiking part only --
``Input (spike-coded one-hot) -> Dense W_ih -> Neuron hidden <- Dense W_hh
(hidden at t-1)`` -- with a spike-count readout of the hidden layer; o_i is
computed off-graph from x_i and the recorded hidden spikes (``outputs_from_spikes``).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from snncc import neuron as nrn
from snncc.neuron import HARD, NeuronParams
from snncc.training.methods.bsd import flatten_time, interlayer_loss, weight_cosine

TASKS = ("text", "timeseries")


class BSDRNN(nn.Module):
    local_clipping = True

    def __init__(self, n_in: int, n_out: int, hidden: int = 300, task: str = "text", v_th: float = 1.0,
                 v_th_backward: float = 1.0, tau: float = 2.0, neuron_model: str = "lif", lam: float = 0.6,
                 interlayer: str = "reco", temperature: float = 0.1, steps_per_element: int = 1):
        super().__init__()
        if task not in TASKS:
            raise ValueError(f"unknown task {task!r} (choose from {', '.join(TASKS)})")
        if not (isinstance(steps_per_element, int) and steps_per_element >= 1):
            raise ValueError(f"steps_per_element must be an integer >= 1, got {steps_per_element!r}")
        self.steps_per_element = steps_per_element
        self.task, self.n_in, self.n_out, self.hidden = task, int(n_in), int(n_out), int(hidden)
        self.lam, self.interlayer, self.temperature = lam, interlayer, temperature
        self.params1 = NeuronParams(model=neuron_model, tau=tau, v_th=v_th, v_reset=0.0, reset=HARD)
        self.params2 = NeuronParams(model=neuron_model, tau=tau, v_th=v_th_backward, v_reset=0.0, reset=HARD)
        h = self.hidden
        self.w_ih, self.w_hh, self.w_ho = (nn.Linear(n_in, h, bias=False), nn.Linear(h, h, bias=False),
                                           nn.Linear(h, n_out, bias=False))
        self.theta_oh, self.theta_hh, self.theta_hi = (nn.Linear(n_out, h, bias=False), nn.Linear(h, h, bias=False),
                                                       nn.Linear(h, n_in, bias=False))

    # ------------------------------------------------------------ dynamics
    @staticmethod
    def _run(params: NeuronParams, drive: torch.Tensor, recurrent: nn.Linear, reverse: bool = False):
        """Currents and spikes of one population over the sequence (L, B, H); ``drive`` is the
        feedforward part of the current, ``recurrent`` maps the previous step's spikes."""
        leaky, inv_tau, v_th, v_reset, v_rest, soft, decay_input = params.scalars()
        length = drive.shape[0]
        v = torch.full_like(drive[0], v_rest).detach()
        s = torch.zeros_like(drive[0]).detach()
        cur, spk = [None] * length, [None] * length
        for t in (range(length - 1, -1, -1) if reverse else range(length)):
            h = drive[t] + recurrent(s)  # s carries no graph: the recurrent input is detached (C2)
            u = nrn.charge(v, h.detach(), leaky, inv_tau, v_rest, decay_input)
            s = nrn.fire(u, v_th).to(drive.dtype)
            v = nrn.reset(u, s, v_th, v_reset, soft)
            cur[t], spk[t] = h, s
        return torch.stack(cur), torch.stack(spk)

    def _hold(self, drive: torch.Tensor) -> torch.Tensor:
        """(L, B, H) per-element currents -> (L*K, B, H): each held for its element's K steps."""
        k = self.steps_per_element
        return drive if k == 1 else drive.repeat_interleave(k, dim=0)

    def _per_element(self, t: torch.Tensor) -> torch.Tensor:
        """(L*K, B, D) per-step values -> (L, B, D): the mean over each element's K steps."""
        k = self.steps_per_element
        return t if k == 1 else t.reshape(t.shape[0] // k, k, *t.shape[1:]).mean(1)

    def type1(self, x_seq: torch.Tensor):
        """(L, B, n_in) -> (currents h, spikes s), each (L*K, B, H)."""
        return self._run(self.params1, self._hold(self.w_ih(x_seq)), self.w_hh)

    def type2(self, y_seq: torch.Tensor):
        """(L, B, n_out) target codes -> (currents h', spikes s'), each (L*K, B, H), run backwards in time."""
        return self._run(self.params2, self._hold(self.theta_oh(y_seq)), self.theta_hh, reverse=True)

    def target_code(self, y: torch.Tensor) -> torch.Tensor:
        """(B, L) next-char indices -> one-hot (L, B, V); (B, L, D) values -> (L, B, D)."""
        if self.task == "text":
            return F.one_hot(y, self.n_out).to(self.w_ih.weight.dtype).transpose(0, 1)
        return y.transpose(0, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, L, n_in) -> outputs o (B, L, n_out) (logits or predicted values)."""
        h, _ = self.type1(x.transpose(0, 1))
        return self.w_ho(self._per_element(h)).transpose(0, 1)

    def outputs_from_spikes(self, x: torch.Tensor, spikes: torch.Tensor) -> torch.Tensor:
        """o_i = W_ho (W_ih x_i + W_hh s_{t-1}), averaged over element i's K steps t, from (B, L, n_in) inputs
        and (L*K, B, H) hidden spikes."""
        s_prev = torch.cat([torch.zeros_like(spikes[:1]), spikes[:-1]])
        h = self._hold(self.w_ih(x.transpose(0, 1))) + self.w_hh(s_prev)
        return self.w_ho(self._per_element(h)).transpose(0, 1)

    # ------------------------------------------------------------ training
    def named_weight_layers(self) -> list:
        return [("hidden Type 1 (W_ih, W_hh)", nn.ModuleList([self.w_ih, self.w_hh])),
                ("hidden Type 2 (Theta_oh, Theta_hh)", nn.ModuleList([self.theta_oh, self.theta_hh])),
                ("output (W_ho)", self.w_ho), ("input reconstruction (Theta_hi)", self.theta_hi)]

    def _top(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Per-sample loss summed over the batch, averaged over the sequence; (L, B, D) predictions."""
        length = pred.shape[0]
        if self.task == "text":
            return F.cross_entropy(pred.reshape(-1, pred.shape[-1]), target.reshape(-1), reduction="sum") / length
        return F.mse_loss(pred, target, reduction="sum") / (length * pred.shape[-1])

    def _align(self, v, target):
        return interlayer_loss(self.interlayer, flatten_time(v), flatten_time(target.detach()),
                               self.lam, self.temperature)

    def training_losses(self, x: torch.Tensor, y: torch.Tensor):
        """x (B, L, n_in), y (B, L) or (B, L, n_out) -> ({name: local loss}, info)."""
        xs = x.transpose(0, 1)
        h, s = self.type1(xs)
        hb, sb = self.type2(self.target_code(y))
        o = self.w_ho(self._per_element(h.detach()))
        x_rec = self.theta_hi(self._per_element(hb.detach()))
        y_t = y.transpose(0, 1)
        x_t = xs.argmax(-1) if self.task == "text" else xs
        losses = {"hidden Type 1 (W_ih, W_hh)": self._align(h, hb),
                  "hidden Type 2 (Theta_oh, Theta_hh)": self._align(hb, h),
                  "output (W_ho)": self._top(o, y_t),
                  "input reconstruction (Theta_hi)": self._top(x_rec, x_t)}
        own = dict(zip(losses, (h, hb, o, x_rec)))
        return losses, {"output": o.transpose(0, 1), "spikes": {"sh": s, "s'h": sb}, "currents": own}

    @torch.no_grad()
    def weight_alignment(self) -> dict:
        """App. F.4 for the RNN: cos(W, Theta^T) of the three mirrored pairs."""
        return {"W_ih~Theta_hi": weight_cosine(self.w_ih.weight, self.theta_hi.weight.T),
                "W_hh~Theta_hh": weight_cosine(self.w_hh.weight, self.theta_hh.weight.T),
                "W_ho~Theta_oh": weight_cosine(self.w_ho.weight, self.theta_oh.weight.T)}
