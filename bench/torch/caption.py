"""PyTorch half of `npm run bench -- caption`: one training step of the caption stage's model
(src/experiments/stages/caption/model.ts), built from the mirrored classes: clip_model.VisionTransformer as the frozen
image encoder (forward only, eval mode, under torch.no_grad), a projector Linear-GELU-Linear, and gpt.GPT reading the
projected image tokens as a prefix (GPT.loss with lengths: cross entropy on the caption tokens only).

config: {"align": {AlignModelConfig keys}, "gpt": {GPTConfig keys}, "projectorHidden": 256, "batch": 24,
"lr", "betas", "eps", "weightDecay", "gradClip", "init": safetensors written by bench/cases/caption.ts (modalab's
initial weights under visual.*, projector.*, gpt.*, and the batches as batch<i>.images / .tokens / .lengths),
"measure": {...}, "threads": n}
results: {"step": {"ns": [...], "callsPerSample": 1}, "firstLoss": x, "lastLoss": y, "loss0": loss of batch 0 at
the initial weights (no update), for the same-computation check}.
A step is zero_grad(set_to_none), frozen encoder forward, projector + GPT loss (the tied head on the caption positions only), backward, clip_grad_norm_, AdamW step
(decay on tensors of >= 2 dims), in float32.
"""
import os
import sys

import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import clip_model  # noqa: E402
import st  # noqa: E402
from common import config, emit, measure  # noqa: E402
from gpt import GPT  # noqa: E402


class Encoder(nn.Module):
    """Only the align model's image tower: its state_dict keys are modalab's `visual.*` names."""

    def __init__(self, c):
        super().__init__()
        self.visual = clip_model.VisionTransformer(c)


class CaptionNet(nn.Module):
    """modalab's CaptionNet: projector (Sequential: 0 Linear, 1 GELU, 2 Linear) + gpt."""

    def __init__(self, vision_width, hidden, gpt):
        super().__init__()
        self.projector = nn.Sequential(nn.Linear(vision_width, hidden), nn.GELU(), nn.Linear(hidden, gpt.tokenEmbed.weight.shape[1]))
        self.gpt = gpt


def shifted_targets(tokens, lengths):
    """Position t < length - 1 predicts tokens[t + 1]; the rest are -100 (ignored), as GPT.loss with lengths."""
    B, T = tokens.shape
    targets = torch.full((B, T), -100, dtype=torch.long)
    targets[:, :-1] = tokens[:, 1:].long()
    targets[torch.arange(T)[None, :] >= lengths[:, None].long() - 1] = -100
    return targets


def main():
    cfg = config()
    torch.manual_seed(0)
    c = dict(clip_model.DEFAULTS, **cfg["align"])
    encoder = Encoder(c)
    net = CaptionNet(c["visionWidth"], cfg["projectorHidden"], GPT(**cfg["gpt"]))
    tensors, _ = st.load(cfg["init"])
    st.load_exact(encoder.visual, tensors, "caption.py: image encoder", "visual.")
    st.load_exact(net.projector, tensors, "caption.py: projector", "projector.")
    st.load_exact(net.gpt, tensors, "caption.py: GPT", "gpt.")
    encoder.requires_grad_(False)
    encoder.eval()
    net.train()
    nb = sum(1 for k in tensors if k.endswith(".images"))
    batches = [(tensors[f"batch{i}.images"], tensors[f"batch{i}.tokens"], tensors[f"batch{i}.lengths"]) for i in range(nb)]

    def loss_of(images, tokens, lengths):
        with torch.no_grad():
            feats = encoder.visual.forward_tokens(images)
        # As modalab's GPT.loss: the head runs on the caption positions only (gpt.GPT.loss would run it on the
        # prefix positions too and slice afterwards, extra work that modalab does not do).
        B, T = tokens.shape
        h = net.gpt.hidden(tokens, prefix=net.projector(feats))[:, -T:]
        logits = h @ net.gpt.tokenEmbed.weight.t()
        targets = shifted_targets(tokens, lengths)  # per step, as modalab's GPT.loss builds them from lengths
        return F.cross_entropy(logits.reshape(B * T, -1), targets.reshape(-1), ignore_index=-100)

    with torch.no_grad():
        loss0 = loss_of(*batches[0]).item()

    opt = clip_model.adamw(net, cfg["lr"], cfg["betas"], cfg["eps"], cfg["weightDecay"])
    params = [p for p in net.parameters()]
    clip = cfg["gradClip"] if cfg["gradClip"] > 0 else float("inf")
    losses = []

    def step():
        images, tokens, lengths = batches[len(losses) % nb]
        opt.zero_grad(set_to_none=True)
        loss = loss_of(images, tokens, lengths)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, clip)
        opt.step()
        losses.append(loss.item())

    s = measure(step, cfg["measure"])
    emit({"step": s, "firstLoss": losses[0], "lastLoss": losses[-1], "loss0": loss0})


if __name__ == "__main__":
    main()
