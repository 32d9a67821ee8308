"""GEMM half of `npm run bench -- gemm`: torch.mm of two square f32 matrices, ns per call for each size.

config: {"sizes": [256, ...], "measure": {...}, "threads": n}; results: {"<n>": {"ns": [...], "callsPerSample": k}}
"""
import torch

from common import config, emit, measure


def main():
    cfg = config()
    torch.manual_seed(0)
    results = {}
    for n in cfg["sizes"]:
        a = torch.randn(n, n, dtype=torch.float32)
        b = torch.randn(n, n, dtype=torch.float32)
        # The result is freed as soon as the lambda returns (refcount), as modalab's side disposes its output.
        results[str(n)] = measure(lambda: torch.mm(a, b), cfg["measure"])
    emit(results)


if __name__ == "__main__":
    with torch.no_grad():
        main()
