"""bf16 GEMM half of `npm run bench -- gemm_bf16`: torch.mm of two square bfloat16 matrices, ns per call.

config: {"sizes": [512, ...], "measure": {...}, "threads": n}; results: {"<n>": {"ns": [...], "callsPerSample": k}}
"""
import torch

from common import config, emit, measure


def main():
    cfg = config()
    torch.manual_seed(0)
    results = {}
    for n in cfg["sizes"]:
        a = torch.randn(n, n).to(torch.bfloat16)
        b = torch.randn(n, n).to(torch.bfloat16)
        results[str(n)] = measure(lambda: torch.mm(a, b), cfg["measure"])
    emit(results)


if __name__ == "__main__":
    with torch.no_grad():
        main()
