"""Shared by the PyTorch halves of the benchmarks: the same timing protocol as bench/harness.ts `measure`.

Each suite script is run as `/usr/bin/python3 bench/torch/<suite>.py '<json config>'` by bench/main.ts and prints
one JSON object on its last stdout line: {"info": info(), "results": ...}. Times are nanoseconds per call.
"""
import ctypes
import gc
import json
import re
import sys
import time

import torch


def config():
    """The JSON config from argv, with the thread count applied to torch before anything runs."""
    cfg = json.loads(sys.argv[1]) if len(sys.argv) > 1 else {}
    threads = int(cfg.get("threads", 0))
    if threads > 0:
        torch.set_num_threads(threads)
    return cfg


def measure(fn, o):
    """Warm up, calibrate calls per sample to reach sampleMs, then sample until minSamples and minTimeMs."""
    for _ in range(o["warmup"]):
        fn()
    calls = o.get("callsPerSample") or 0
    if not calls:
        t0 = time.perf_counter_ns()
        fn()
        one = time.perf_counter_ns() - t0
        calls = max(1, -(-int(o["sampleMs"] * 1e6) // max(one, 1)))
    gc.collect()
    ns = []
    start = time.perf_counter_ns()
    while len(ns) < o["maxSamples"]:
        t0 = time.perf_counter_ns()
        for _ in range(calls):
            fn()
        ns.append((time.perf_counter_ns() - t0) / calls)
        if len(ns) >= o["minSamples"] and (time.perf_counter_ns() - start) / 1e6 >= o["minTimeMs"]:
            break
    return {"ns": ns, "callsPerSample": calls}


def _blas_libs():
    libs = []
    try:
        with open("/proc/self/maps") as f:
            for line in f:
                p = line.split()[-1]
                name = p.rsplit("/", 1)[-1].lower()
                if p.startswith("/") and any(k in name for k in ("blas", "mkl", "lapack", "blis")) and p not in libs:
                    libs.append(p)
    except OSError:
        pass
    return libs


def _openblas_threads(libs):
    for p in libs:
        try:
            lib = ctypes.CDLL(p)
            return int(lib.openblas_get_num_threads())
        except (OSError, AttributeError):
            continue
    return None


def info():
    show = torch.__config__.show()
    m = re.search(r"BLAS_INFO=([^,\s]+)", show)
    blas = m.group(1) if m else "unknown"
    mkldnn = next((line.strip(" -") for line in show.split("\n") if "MKL-DNN" in line or "oneDNN" in line), None)
    cap = next((line.split(":", 1)[1].strip() for line in show.split("\n") if "CPU capability usage" in line), None)
    libs = _blas_libs()
    return {
        "version": torch.__version__,
        "threads": torch.get_num_threads(),
        "blasInfo": blas.strip(),
        "blasLibs": libs,
        "openblasThreads": _openblas_threads(libs),
        "mkldnn": mkldnn,
        "capability": cap,
    }


def emit(results):
    print(json.dumps({"info": info(), "results": results}))
    sys.stdout.flush()
