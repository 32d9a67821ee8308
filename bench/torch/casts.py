"""Casts half of `npm run bench -- casts`: f32 <-> bf16 / f16 of n elements.

config: {"n": 16777216, "convs": [{"name": "f32->bf16", "from": "f32", "to": "bf16"}, ...], "measure": {...},
"threads": k}; results: {"<name> alloc": samples of x.to(dtype), "<name> into": samples of out.copy_(x)}.
"""
import torch

from common import config, emit, measure

DTYPES = {"f32": torch.float32, "bf16": torch.bfloat16, "f16": torch.float16}


def main():
    cfg = config()
    torch.manual_seed(0)
    n = cfg["n"]
    x32 = torch.randn(n)
    src = {"f32": x32, "bf16": x32.to(torch.bfloat16), "f16": x32.to(torch.float16)}
    results = {}
    for c in cfg["convs"]:
        x, dt = src[c["from"]], DTYPES[c["to"]]
        # The new tensor is freed as soon as the lambda returns (refcount), as modalab's side disposes it.
        results[c["name"] + " alloc"] = measure(lambda: x.to(dt), cfg["measure"])
        out = torch.empty(n, dtype=dt)
        results[c["name"] + " into"] = measure(lambda: out.copy_(x), cfg["measure"])
    emit(results)


if __name__ == "__main__":
    with torch.no_grad():
        main()
