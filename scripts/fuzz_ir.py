"""Fuzz the spike-graph loader at scale: N mutants of the seed files (snncc.ir.fuzz), over worker processes.

    .venv/bin/python scripts/fuzz_ir.py --cases 100000 --workers 2 [--timeout 5] [--out DIR]

Case i is mutated by a Chooser seeded with i, so any case replays alone (``--replay I``).
Each case must either be rejected with SerializeError or load, validate and run
(snncc.ir.fuzz.check); anything else is an escape. A case that takes longer than
--timeout seconds is a hang: a SIGALRM aborts it and it is counted (each worker first runs the
seeds once, so numba's one-off kernel compilation is not charged to the first accepted mutant). Escaping and hanging
mutants are written to --out (if given) as case-I.snn.onnx. Prints a JSON summary;
exit 1 if there was any escape or hang.
"""
from __future__ import annotations

import argparse
import collections
import json
import multiprocessing as mp
import os
import random
import signal
import sys
import time


class _Hang(Exception):
    pass


def _alarm(signum, frame):
    raise _Hang()


_SEEDS = None


def _init():
    global _SEEDS
    import warnings
    warnings.simplefilter("ignore")
    from snncc.ir import fuzz
    _SEEDS = fuzz.seed_files()
    for seed in _SEEDS:   # compile the numba kernels once per worker: a one-off cost, not a per-file one
        fuzz.check(seed)
    signal.signal(signal.SIGALRM, _alarm)


def mutant(i: int) -> bytes:
    from snncc.ir import fuzz
    c = fuzz.Chooser(random.Random(i))
    return fuzz.mutate(c.pick(_SEEDS), c)


def _case(args):
    i, timeout = args
    from snncc.ir import fuzz
    try:
        data = mutant(i)
    except Exception as e:  # noqa: BLE001 -- a bug of the mutator, not of the loader: reported apart
        return i, "mutator-error", 0.0, f"mutator {type(e).__name__}: {str(e)[:200]}", b""
    t0 = time.perf_counter()
    signal.setitimer(signal.ITIMER_REAL, timeout)
    try:
        outcome, detail = fuzz.check(data), None
    except _Hang:
        outcome, detail = "hang", f"over {timeout} s"
    except BaseException as e:  # noqa: BLE001 -- this is what we are counting
        outcome, detail = "escape", f"{type(e).__name__}: {str(e)[:200]}"
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
    dt = time.perf_counter() - t0
    if outcome not in ("hang", "escape") and dt > timeout:
        outcome, detail = "hang", f"{dt:.1f} s"
    return i, outcome, dt, detail, data if detail else None


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", type=int, default=100_000)
    ap.add_argument("--start", type=int, default=0, help="first case index")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--timeout", type=float, default=5.0, help="seconds per case before it counts as a hang")
    ap.add_argument("--out", default=None, help="folder for escaping/hanging mutants")
    ap.add_argument("--replay", type=int, default=None, help="run case I alone and show its outcome")
    args = ap.parse_args(argv)
    if args.replay is not None:
        _init()
        i, outcome, dt, detail, _ = _case((args.replay, args.timeout))
        print(json.dumps({"case": i, "outcome": outcome, "seconds": round(dt, 3), "detail": detail}))
        return 0 if outcome not in ("escape", "hang") else 1
    t0 = time.time()
    counts, details, slowest = collections.Counter(), collections.Counter(), (0.0, None)
    jobs = ((i, args.timeout) for i in range(args.start, args.start + args.cases))
    with mp.get_context("fork").Pool(args.workers, initializer=_init) as pool:
        for i, outcome, dt, detail, data in pool.imap_unordered(_case, jobs, chunksize=64):
            counts[outcome] += 1
            slowest = max(slowest, (dt, i))
            if detail:
                details[detail] += 1
                if args.out:
                    os.makedirs(args.out, exist_ok=True)
                    with open(os.path.join(args.out, f"case-{i}.snn.onnx"), "wb") as f:
                        f.write(data)
                print(f"case {i}: {outcome}: {detail}", file=sys.stderr)
    summary = {"cases": args.cases, "start": args.start, "workers": args.workers, "timeout_s": args.timeout,
               "rejected": counts["rejected"], "accepted": counts["accepted"],
               "accepted_refused_at_run": counts["accepted-refused"], "escapes": counts["escape"],
               "hangs": counts["hang"], "mutator_errors": counts["mutator-error"],
               "slowest_case_s": round(slowest[0], 3), "slowest_case": slowest[1],
               "wall_s": round(time.time() - t0, 1), "distinct_failures": dict(details.most_common(20))}
    print(json.dumps(summary, indent=2))
    return 1 if counts["escape"] or counts["hang"] else 0


if __name__ == "__main__":
    sys.exit(main())
