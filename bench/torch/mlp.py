"""MLP half of `npm run bench -- mlp`: one training step of 256 -> 512 -> 512 -> 10 with GELU on a batch of 128.

config: {"batch": 128, "sizes": [256, 512, 512, 10], "lr": 1e-3, "weightDecay": 0.01, "numBatches": 64,
"measure": {...}, "threads": k}; results: {"step": {"ns": [...], "callsPerSample": 1}, "firstLoss": x, "lastLoss": y}
The steps cycle through numBatches batches of random inputs with random labels, so that the loss stays near
ln 10 (a memorised fixed batch drives gradients and AdamW's moments into denormals, which times the FPU's
denormal path instead of the libraries).
A step is zero_grad (set_to_none, PyTorch 2's default), forward, cross_entropy, backward, AdamW step: the same
five things the modalab side does, in the same order.
"""
import torch
import torch.nn.functional as F

from common import config, emit, measure


def main():
    cfg = config()
    torch.manual_seed(0)
    sizes = cfg["sizes"]
    layers = []
    for i in range(len(sizes) - 1):
        layers.append(torch.nn.Linear(sizes[i], sizes[i + 1]))
        if i < len(sizes) - 2:
            layers.append(torch.nn.GELU())  # exact (erf) GELU, as ml.gelu's default
    model = torch.nn.Sequential(*layers)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg["lr"], weight_decay=cfg["weightDecay"])
    nb = cfg["numBatches"]
    xs = [torch.randn(cfg["batch"], sizes[0]) for _ in range(nb)]
    ys = [torch.randint(0, sizes[-1], (cfg["batch"],)) for _ in range(nb)]
    losses = []

    def step():
        k = len(losses) % nb
        x, y = xs[k], ys[k]
        opt.zero_grad(set_to_none=True)
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        losses.append(loss.item())

    s = measure(step, cfg["measure"])
    emit({"step": s, "firstLoss": losses[0], "lastLoss": losses[-1]})


if __name__ == "__main__":
    main()
