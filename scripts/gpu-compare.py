#!/usr/bin/env python3
"""Pair our GPU benchmark lines (modalab_cuda_test --bench) with PyTorch's (scripts/gpu-bench-torch.py) and print
the ratios the CUDA backend issue asks for: attention against scaled_dot_product_attention (goal >= 0.7x now),
InfoNCE against logits + cross-entropy (goal: faster), casts against the device copy (goal: 80 %).

  scripts/gpu-compare.py cuda-bench.log torch-bench.log
"""
import re
import sys

LINE = re.compile(r"^(bench|torch) (.+?)\s{2,}(\S.*?)\s{2,}\s*([0-9.]+) ms\s+([0-9.]+) (\S+)")


def read(path):
    out = {}
    try:
        with open(path) as f:
            for raw in f:
                m = LINE.match(raw.rstrip())
                if m:
                    what = re.sub(r" \((wmma|f32)\)$", "", m.group(2).strip())
                    out[(what, m.group(3).strip())] = (float(m.group(4)), float(m.group(5)), m.group(6))
    except FileNotFoundError:
        pass
    return out


ours, torch = read(sys.argv[1]), read(sys.argv[2])
if not ours or not torch:
    print(f"compare: nothing to pair ({len(ours)} of our lines, {len(torch)} of PyTorch's)")
    sys.exit(0)
print(f"{'work':<44} {'ours ms':>10} {'torch ms':>10} {'speed vs torch':>15}")
rows = [
    ("attention fwd bf16", "B4 H16 N4096 D128", "attention fwd bf16"),
    ("attention fwd bf16", "B4 H16 N4096 D128 causal", "attention fwd bf16"),
    ("attention fwd+bwd bf16", "B4 H16 N4096 D128", "attention fwd+bwd bf16"),
    ("attention fwd+bwd bf16", "B4 H16 N4096 D128 causal", "attention fwd+bwd bf16"),
    ("infonce_forward f32", "N65536 D512", "infonce fwd f32"),
]
for ours_key, size, torch_key in rows:
    o, t = ours.get((ours_key, size)), torch.get((torch_key, size))
    if o and t:
        print(f"{ours_key + ' ' + size:<44} {o[0]:10.3f} {t[0]:10.3f} {t[0] / o[0]:14.2f}x")
f, b = ours.get(("infonce_forward f32", "N65536 D512")), ours.get(("infonce_backward f32", "N65536 D512"))
t = torch.get(("infonce fwd+bwd f32", "N65536 D512"))
if f and b and t:
    print(f"{'infonce fwd+bwd f32 N65536 D512':<44} {f[0] + b[0]:10.3f} {t[0]:10.3f} {t[0] / (f[0] + b[0]):14.2f}x")
copy = ours.get(("memcpy d2d (f32 bytes)", "64M x 4 B"))
for cast in ("cast f32->bf16", "cast bf16->f32", "cast f32->f16", "cast f16->f32"):
    c = ours.get((cast, "64M"))
    if c and copy:
        print(f"{cast + ' (GB/s, share of the d2d copy)':<44} {c[1]:10.1f} {copy[1]:10.1f} {100 * c[1] / copy[1]:13.0f} %")
