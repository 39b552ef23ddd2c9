"""Per-step training time and memory of direct vs vanilla KD vs MSKD on the same student.

All methods share the student architecture, the batch and cached teacher logits (the
teacher itself never runs inside the timed steps, as in training with a logits cache).
Steps are interleaved method by method so machine noise hits all of them alike.
Besides wall-clock time the report gives the CPU time of each step (``time.process_time``):
on a machine shared with other jobs the process is descheduled for stretches that wall
time counts and CPU time does not, so the CPU-time ratio is the steadier one there.

Memory on CPU: torch has no allocator peak counter for the CPU, so the report gives
the bytes a training step must hold at its peak, measured exactly rather than sampled:
parameters + gradients + optimizer state + every tensor autograd saves for the
backward pass (recorded with ``saved_tensors_hooks``, unique storages counted once).
"""
from __future__ import annotations

import statistics
import time

import torch

from snncc.training.mskd import MSKDConfig, make_optimizer, build_net, train_step

METHODS = ("direct", "kd", "mskd")


def _saved_bytes(step) -> int:
    """Run ``step`` and return the bytes of all distinct storages saved for backward."""
    seen: dict[int, int] = {}

    def pack(t):
        if isinstance(t, torch.Tensor) and t.device.type == "cpu":
            st = t.untyped_storage()
            seen[st.data_ptr()] = st.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        step()
    return sum(seen.values())


def _state_bytes(net, optimizer) -> int:
    params = sum(p.numel() * p.element_size() for p in net.parameters())
    opt = sum(v.numel() * v.element_size() for s in optimizer.state.values() for v in s.values()
              if isinstance(v, torch.Tensor))
    return 2 * params + opt  # weights + gradients + optimizer moments


def bench_mskd(model: str = "spike-resnet18", width: float = 0.25, timesteps: int = 2, batch_size: int = 32,
               steps: int = 8, input_shape=(1, 28, 28), num_classes: int = 10, seed: int = 0,
               threads: int | None = None) -> dict:
    """Time ``steps`` training steps of each method (after one warm-up round) and measure their memory.
    ``threads``: torch CPU threads for the run (None: leave torch's setting)."""
    previous = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        return _bench(model, width, timesteps, batch_size, steps, input_shape, num_classes, seed)
    finally:
        torch.set_num_threads(previous)


def _bench(model, width, timesteps, batch_size, steps, input_shape, num_classes, seed) -> dict:
    torch.manual_seed(seed)
    x = torch.rand(batch_size, *input_shape)
    y = torch.randint(0, num_classes, (batch_size,))
    teacher_logits = torch.randn(batch_size, num_classes)  # a cached teacher: no teacher compute per step
    runs = {}
    for method in METHODS:
        cfg = MSKDConfig(method=method, model=model, width=width, timesteps=timesteps, optimizer="adamw",
                         lr=1e-3, seed=seed)
        torch.manual_seed(seed)
        net = build_net(cfg)
        opt = make_optimizer(cfg, net.parameters())
        logits = None if method == "direct" else teacher_logits
        runs[method] = (net, opt, cfg, logits)
    times = {m: [] for m in METHODS}
    cpu = {m: [] for m in METHODS}
    for i in range(steps + 1):
        order = METHODS if i % 2 == 0 else tuple(reversed(METHODS))
        for m in order:
            net, opt, cfg, logits = runs[m]
            start, start_cpu = time.perf_counter(), time.process_time()
            train_step(net, opt, x, y, logits, cfg)
            if i:  # the first round is a warm-up
                times[m].append(time.perf_counter() - start)
                cpu[m].append(time.process_time() - start_cpu)
    out = {"model": model, "width": width, "timesteps": timesteps, "batch_size": batch_size, "steps": steps,
           "threads": torch.get_num_threads()}
    for m in METHODS:
        net, opt, cfg, logits = runs[m]
        saved = _saved_bytes(lambda: train_step(net, opt, x, y, logits, cfg))
        out[f"{m}_ms_per_step"] = 1e3 * statistics.median(times[m])
        out[f"{m}_cpu_ms_per_step"] = 1e3 * statistics.median(cpu[m])
        out[f"{m}_saved_activation_mb"] = saved / 2**20
        out[f"{m}_peak_mb"] = (saved + _state_bytes(net, opt)) / 2**20
        out[f"{m}_parameters"] = sum(p.numel() for p in net.parameters())
    kd = out["kd_ms_per_step"]
    out["mskd_vs_kd_time"] = out["mskd_ms_per_step"] / kd
    out["mskd_vs_kd_cpu_time"] = out["mskd_cpu_ms_per_step"] / out["kd_cpu_ms_per_step"]
    out["kd_vs_direct_time"] = kd / out["direct_ms_per_step"]
    out["mskd_vs_kd_memory"] = out["mskd_peak_mb"] / out["kd_peak_mb"]
    out["target_mskd_vs_kd_time"] = 1.20
    return out
