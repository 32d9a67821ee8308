"""PyTorch half of `npm run bench -- clip`: one AdamW training step of the stage-1 dual encoder (bench/torch/clip_model.py,
the same model as modalab's createAlignModel) on a batch of image-caption pairs.

config: {"model": {AlignModelConfig keys}, "batch": 128, "lr": ..., "weightDecay": ..., "numBatches": k,
"measure": {...}, "threads": n}; results: {"step": {"ns": [...], "callsPerSample": 1}, "firstLoss": x, "lastLoss": y}
A step is zero_grad(set_to_none), forward, InfoNCE, backward, AdamW step (decay on tensors of >= 2 dims), in float32.
"""
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import clip_model  # noqa: E402
from common import config, emit, measure  # noqa: E402


def main():
    cfg = config()
    torch.manual_seed(0)
    c = dict(clip_model.DEFAULTS, **cfg["model"])
    model = clip_model.create(c)
    opt = clip_model.adamw(model, cfg["lr"], [0.9, 0.98], 1e-6, cfg["weightDecay"])
    B, T = cfg["batch"], c["contextLength"]
    nb = cfg["numBatches"]
    batches = []
    for _ in range(nb):
        images = torch.randn(B, c["channels"], c["imageSize"], c["imageSize"])
        lengths = torch.randint(1, T + 1, (B,), dtype=torch.int32)
        tokens = torch.randint(1, c["vocabSize"], (B, T), dtype=torch.int32)
        tokens[torch.arange(T)[None, :] >= lengths[:, None]] = 0
        batches.append((images, tokens, lengths))
    losses = []

    def step():
        images, tokens, lengths = batches[len(losses) % nb]
        opt.zero_grad(set_to_none=True)
        loss, _ = model.loss(images, tokens, lengths)
        loss.backward()
        opt.step()
        losses.append(loss.item())

    s = measure(step, cfg["measure"])
    emit({"step": s, "firstLoss": losses[0], "lastLoss": losses[-1]})


if __name__ == "__main__":
    main()
