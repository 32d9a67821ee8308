"""InfoNCE half of `npm run bench -- infonce`: CLIP's loss forward + backward, written as a PyTorch user writes it.

config: {"N": 4096, "D": 256, "logitScale": 2.659, "measure": {...}, "threads": k};
results: {"step": {"ns": [...], "callsPerSample": 1}, "loss": x, "peakExtraBytes": b, "peakMethod": "..."}

A step is
    s = logit_scale.exp().clamp(max=100)
    logits = s * a @ b.T                                    # the N x N matrix
    loss = (F.cross_entropy(logits, t) + F.cross_entropy(logits.T, t)) / 2
    loss.backward()
with a, b [N, D] (L2-normalised rows) and logit_scale requiring grad, and the gradients dropped after each step
(set to None, as zero_grad(set_to_none=True) does), the same as the modalab side.

Peak memory: the process's peak resident set during one step above its resident set just before it. Linux resets
the peak (VmHWM) when "5" is written to /proc/self/clear_refs; where that is not allowed, the fallback is the
growth of ru_maxrss over the step (exact here too: this process has done nothing larger before).
"""
import gc
import resource

import torch
import torch.nn.functional as F

from common import config, emit, measure


def _status_kb(key):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    raise KeyError(key)


def peak_extra_bytes(fn):
    """(bytes, method): the peak resident memory of fn() above the resident memory before it."""
    gc.collect()
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        base = _status_kb("VmRSS")
        fn()
        return (_status_kb("VmHWM") - base) * 1024, "VmHWM after clear_refs"
    except OSError:
        base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        fn()
        return (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base) * 1024, "ru_maxrss growth"


def main():
    cfg = config()
    torch.manual_seed(0)
    n, d = cfg["N"], cfg["D"]
    a = F.normalize(torch.randn(n, d), dim=1).requires_grad_()
    b = F.normalize(torch.randn(n, d), dim=1).requires_grad_()
    logit_scale = torch.tensor(float(cfg["logitScale"]), requires_grad=True)
    target = torch.arange(n)
    losses = []

    def step():
        s = logit_scale.exp().clamp(max=100)
        logits = s * a @ b.T
        loss = (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)) / 2
        loss.backward()
        losses.append(loss.item())
        a.grad = None
        b.grad = None
        logit_scale.grad = None

    step()  # first call outside the peak measurement: lazy initialisation is not the op's memory
    peak, method = peak_extra_bytes(step)
    s = measure(step, cfg["measure"])
    emit({"step": s, "loss": losses[-1], "peakExtraBytes": peak, "peakMethod": method})


if __name__ == "__main__":
    main()
