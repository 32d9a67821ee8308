"""Attention half of `npm run bench -- attention`: plain attention with autograd, as a PyTorch user writes it.

config: {"B", "H", "N", "D", "measure": {...}, "memory": {"N", "D"}, "threads": k}
results: {"step": {"plain": samples, "causal": samples}, "forward": {...}, "memory": {"rssMB": x}}

A step is s = (q @ k^T) * scale, masked_fill of the causal mask (bottom-right aligned, here N = M), softmax, @ v,
then backward of a fixed gradient, and the gradients dropped (q.grad = None), as modalab's step disposes them.
torch 1.13 has no fused scaled_dot_product_attention on the CPU (it arrived in 2.0), so this is what it offers.
The memory figure is measured in a fresh process (this script run with --memory): the growth of the peak resident
size (getrusage ru_maxrss) over one forward and backward at N = 8192, B = H = 1, after a small warm-up call.
"""
import json
import math
import resource
import subprocess
import sys

import torch

from common import config, emit, measure


def attention(q, k, v, causal):
    N, M = q.shape[-2], k.shape[-2]
    s = (q @ k.transpose(-1, -2)) * (1 / math.sqrt(q.shape[-1]))
    if causal:
        i = torch.arange(N)[:, None] + (M - N)
        j = torch.arange(M)[None, :]
        s = s.masked_fill(j > i, float("-inf"))
    return torch.softmax(s, -1) @ v


def leaves(B, H, N, D):
    return [torch.randn(B, H, N, D, requires_grad=True) for _ in range(3)]


def memory_child(N, D):
    """Runs in a fresh process: the peak RSS growth (MB) of one forward + backward."""
    q, k, v = leaves(1, 1, 8, D)
    attention(q, k, v, False).sum().backward()
    q, k, v = leaves(1, 1, N, D)
    g = torch.randn(1, 1, N, D)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    attention(q, k, v, False).backward(g)
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"rssMB": (after - before) / 1024}))


def main():
    cfg = config()
    torch.manual_seed(0)
    B, H, N, D = cfg["B"], cfg["H"], cfg["N"], cfg["D"]
    q, k, v = leaves(B, H, N, D)
    g = torch.randn(B, H, N, D)
    step, forward = {}, {}
    for name, causal in (("plain", False), ("causal", True)):
        def one_step():
            attention(q, k, v, causal).backward(g)
            q.grad = k.grad = v.grad = None

        def one_forward():
            with torch.no_grad():
                attention(q, k, v, causal)

        step[name] = measure(one_step, cfg["measure"])
        forward[name] = measure(one_forward, cfg["measure"])
    mem = cfg["memory"]
    r = subprocess.run([sys.executable, __file__, "--memory", str(mem["N"]), str(mem["D"])], capture_output=True,
                       text=True, timeout=600)
    memory = json.loads(r.stdout.strip().split("\n")[-1]) if r.returncode == 0 else {"error": r.stderr[-300:]}
    emit({"step": step, "forward": forward, "memory": memory})


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--memory":
        torch.manual_seed(0)
        memory_child(int(sys.argv[2]), int(sys.argv[3]))
    else:
        main()
