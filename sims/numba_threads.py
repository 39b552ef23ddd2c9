"""Work sharing for the simulator's kernels (serial nogil functions over a task range).

Not numba.prange: a prange loop calling the kernel helpers took ~10x longer to compile
(12 s vs 1 s for the conv), and its static fork/join stalls for a whole scheduler slice
when another process holds a core. Here the calling thread takes tasks too, and a worker
that has not started by the time the work is done is simply cancelled. The pools start on
the first parallel call (nothing at import).
"""
from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import numba

PARALLEL_MIN_WORK = 1 << 20  # below this (~element operations) one thread is faster
TASKS = 8  # tasks per thread and kernel call: small tasks even out uneven spike counts

_EXECUTORS: dict = {}   # thread count -> pool of count - 1 workers, created on first use
_EXECUTORS_LOCK = threading.Lock()
_BLAS: list = []  # threadpoolctl's controller of numpy's BLAS, created on first use


def default_threads() -> int:
    return max(1, numba.config.NUMBA_NUM_THREADS)


def started() -> bool:
    """Whether any worker pool exists yet (none after import)."""
    return bool(_EXECUTORS)


def _executor(threads: int) -> ThreadPoolExecutor:
    with _EXECUTORS_LOCK:
        if threads not in _EXECUTORS:
            _EXECUTORS[threads] = ThreadPoolExecutor(threads - 1, "snncc-sim")
        return _EXECUTORS[threads]


def run_tasks(fn, count: int, threads: int) -> list:
    """[fn(i) for i in range(count)], shared among ``threads`` threads (the caller included)."""
    results = [None] * count
    if threads == 1 or count == 1:
        return [fn(i) for i in range(count)]
    todo = iter(range(count))
    lock = threading.Lock()

    def worker():
        while True:
            with lock:
                i = next(todo, None)
            if i is None:
                return
            results[i] = fn(i)

    pool = _executor(threads)
    helpers = [pool.submit(worker) for _ in range(threads - 1)]
    worker()
    for f in helpers:
        if not f.cancel():
            f.result()
    return results


def share(kernel, ranges, args, work: int, threads: int) -> float:
    """sum(kernel(*r, *args) for r in ranges), on ``threads`` threads when the work is large;
    summed in task order (deterministic)."""
    calls = [r + args for r in ranges]
    if work < PARALLEL_MIN_WORK:
        threads = 1
    return float(sum(run_tasks(lambda i: kernel(*calls[i]), len(calls), threads)))


def ranges(n: int, parts: int) -> list:
    parts = max(1, min(n, parts))
    return [(i * n // parts, (i + 1) * n // parts) for i in range(parts)]


def blas_one_thread():
    """Context in which numpy's BLAS runs on the calling thread only: dense products are shared out
    by :func:`run_tasks` like every kernel (BLAS's own threads busy-wait, and stall as OpenMP does
    when another process holds a core)."""
    with _EXECUTORS_LOCK:
        if not _BLAS:
            from threadpoolctl import ThreadpoolController
            _BLAS.append(ThreadpoolController())
    return _BLAS[0].limit(limits=1, user_api="blas")
