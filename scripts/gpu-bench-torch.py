#!/usr/bin/env python3
"""The PyTorch side of the GPU benchmarks (scripts/gpu-check.sh runs it right after `modalab_cuda_test --bench`,
on the same card): the same work as our fused kernels, timed the same way (CUDA events, median of timed runs after
warm-up), printed in the same line format with the prefix `torch`, so scripts/gpu-compare.py can pair the lines.

  attention: scaled_dot_product_attention, B4 H16 N4096 D128 bf16, causal and not, forward and forward+backward
  InfoNCE:   N = 65536, D = 512 f32: logits = s a b^T, (CE(logits) + CE(logits^T)) / 2, forward and
             forward+backward, with the peak memory each needs (ours keeps O(N) beside the inputs)
  casts:     f32 <-> bf16 over 64M elements, and the device-to-device copy of the same bytes

Without a CUDA device it prints one line saying so and exits 0 (how it is dry-run on the CPU machines).
"""
import statistics
import sys

try:
    import torch
    import torch.nn.functional as F
except ImportError:
    print("torch: PyTorch is not installed here: skipped")
    sys.exit(0)

if not torch.cuda.is_available():
    print(f"torch: no CUDA device (torch {torch.__version__}): skipped")
    sys.exit(0)

dev = torch.device("cuda")
torch.backends.cuda.matmul.allow_tf32 = False   # our InfoNCE is plain f32: compare like with like
torch.backends.cudnn.allow_tf32 = False


def time_ms(fn, warmup, iters):
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(iters):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        fn()
        b.record()
        b.synchronize()
        times.append(a.elapsed_time(b))
    return statistics.median(times)


def line(what, size, ms, amount, unit, extra=""):
    print(f"torch {what:<34} {size:<22} {ms:9.3f} ms  {amount:9.1f} {unit}{extra}", flush=True)


print(f"torch {torch.__version__}, {torch.cuda.get_device_name(0)}, cuda {torch.version.cuda}")

# ---------------------------------------------------------------------------------------------- attention
B, H, N, D = 4, 16, 4096, 128
g = torch.Generator(device=dev).manual_seed(0)
q, k, v = (torch.randn(B, H, N, D, device=dev, dtype=torch.bfloat16, generator=g) for _ in range(3))
dout = torch.randn(B, H, N, D, device=dev, dtype=torch.bfloat16, generator=g)
for causal in (False, True):
    fwd_flop = 4.0 * B * H * N * N * D * (0.5 if causal else 1.0)
    size = "B4 H16 N4096 D128 causal" if causal else "B4 H16 N4096 D128"
    with torch.no_grad():
        ms = time_ms(lambda: F.scaled_dot_product_attention(q, k, v, is_causal=causal), 3, 10)
    line("attention fwd bf16", size, ms, fwd_flop / ms / 1e9, "TFLOP/s")
    qg, kg, vg = (t.detach().requires_grad_(True) for t in (q, k, v))

    def fwd_bwd():
        o = F.scaled_dot_product_attention(qg, kg, vg, is_causal=causal)
        o.backward(dout)

    ms = time_ms(fwd_bwd, 2, 5)
    line("attention fwd+bwd bf16", size, ms, 3.5 * fwd_flop / ms / 1e9, "TFLOP/s")
del q, k, v, dout, qg, kg, vg
torch.cuda.empty_cache()

# ---------------------------------------------------------------------------------------------- InfoNCE
N, D = 65536, 512
a = torch.randn(N, D, device=dev, generator=g)
b = torch.randn(N, D, device=dev, generator=g)
a = a / a.norm(dim=1, keepdim=True)
b = b / b.norm(dim=1, keepdim=True)
s = torch.tensor(2.6593, device=dev).exp()
labels = torch.arange(N, device=dev)
flop = 2.0 * N * N * D
base = torch.cuda.memory_allocated()


def infonce(x, y):
    logits = s * x @ y.t()
    return (F.cross_entropy(logits, labels) + F.cross_entropy(logits.t(), labels)) / 2


try:
    torch.cuda.reset_peak_memory_stats()
    with torch.no_grad():
        ms = time_ms(lambda: infonce(a, b), 1, 3)
    peak = (torch.cuda.max_memory_allocated() - base) / 2**30
    line("infonce fwd f32", "N65536 D512", ms, flop / ms / 1e9, "TFLOP/s", f"  peak +{peak:.2f} GiB")
    ag, bg = a.clone().requires_grad_(True), b.clone().requires_grad_(True)
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    ms = time_ms(lambda: infonce(ag, bg).backward(), 1, 3)
    peak = (torch.cuda.max_memory_allocated() - base) / 2**30
    line("infonce fwd+bwd f32", "N65536 D512", ms, 3 * flop / ms / 1e9, "TFLOP/s", f"  peak +{peak:.2f} GiB")
except torch.cuda.OutOfMemoryError as e:
    print(f"torch infonce: out of memory at N65536 D512 ({str(e).splitlines()[0]})")
del a, b
torch.cuda.empty_cache()

# ---------------------------------------------------------------------------------------------- casts
n = 64 * 2**20
x32 = torch.randn(n, device=dev, generator=g)
x16 = x32.to(torch.bfloat16)
ms = time_ms(lambda: x32.to(torch.bfloat16), 3, 10)
line("cast f32->bf16", "64M", ms, n * 6 / ms / 1e6, "GB/s")
ms = time_ms(lambda: x16.to(torch.float32), 3, 10)
line("cast bf16->f32", "64M", ms, n * 6 / ms / 1e6, "GB/s")
ms = time_ms(lambda: x32.clone(), 3, 10)
line("memcpy d2d (f32 bytes)", "64M x 4 B", ms, 2.0 * n * 4 / ms / 1e6, "GB/s")
