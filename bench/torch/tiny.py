"""Tiny-op half of `npm run bench -- tiny`: per-call time of `a + b` on two [16] f32 tensors in a Python loop.

config: {"n": 16, "measure": {...}, "threads": k}; results: {"add": {"ns": [...], "callsPerSample": c}}
The loop is written out (no lambda per call) so that torch is timed at its best: `c = a + b`, the previous
result freed by refcount when c is rebound, which is what a user's loop does.
"""
import gc
import time

import torch

from common import config, emit


def main():
    cfg = config()
    o = cfg["measure"]
    torch.manual_seed(0)
    a = torch.randn(cfg["n"], dtype=torch.float32)
    b = torch.randn(cfg["n"], dtype=torch.float32)
    calls = o["callsPerSample"]
    for _ in range(o["warmup"]):
        c = a + b
    gc.collect()
    ns = []
    start = time.perf_counter_ns()
    while len(ns) < o["maxSamples"]:
        t0 = time.perf_counter_ns()
        for _ in range(calls):
            c = a + b
        ns.append((time.perf_counter_ns() - t0) / calls)
        if len(ns) >= o["minSamples"] and (time.perf_counter_ns() - start) / 1e6 >= o["minTimeMs"]:
            break
    del c
    emit({"add": {"ns": ns, "callsPerSample": calls}})


if __name__ == "__main__":
    main()
