"""The PyTorch half of bench/align_results.ts: train bench/torch/clip_model.py on batches streamed from modalab.

Run by the driver (not by hand) as

    /usr/bin/python3 bench/torch/train_align.py '<json config>'  < batches

The config: {"model": AlignModelConfig, "init": modalab's initial weights (safetensors), "out": a directory,
"threads": N, "steps", "runSteps" (optional: stop after this many), "lr", "betas", "eps", "weightDecay",
"warmupSteps", "minLrRatio", "gradClip", "checkpointEvery" (optional: every this many steps, and at the last step
of the sitting, write <out>/torch_ckpt.pt, then <out>/torch_ckpt.json {"step": k, "wallS": the process wall time
so far}, each through a temporary file and a rename), "startStep" (optional: resume from <out>/torch_ckpt.pt,
which must hold that step; the driver then sends batches from that step on)}.
A resumed run continues exactly: model, AdamW moments, schedule, RNG, and the per-step records so far all come
from the checkpoint, and its timings add to the earlier sittings'.

stdin carries messages, each a header of four little-endian int32 [kind, a, b, c] and a raw little-endian payload:
  kind 1, a training batch: [1, B, S, T], then images f32 [B, 3, S, S], tokens i32 [B, T], lengths i32 [B];
  kind 2, an evaluation split: [2, split id, N images, M texts], then images f32 [N, 3, S, S], tokens i32 [M, T],
          lengths i32 [M] (S and T from the model config; split id 0 = test, 1 = heldout);
  kind 0: the end.
It trains on `steps` batches with the same optimizer as modalab's align stage (AdamW, decay on tensors of >= 2
dims only; cosine with warmup as src/api/optim/schedule.ts; clip_grad_norm_), then embeds every evaluation split
in eval mode and writes <out>/torch_embeddings.safetensors ({split}.img, {split}.txt, unit rows) and
<out>/torch_train.json (losses, gradient norms, lrs, per-step seconds, waits for data, wall times).
"""
import json
import math
import os
import sys
import time

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.dont_write_bytecode = True  # no __pycache__ in the working tree
sys.path.insert(0, HERE)
import clip_model  # noqa: E402
import st  # noqa: E402

SPLITS = {0: "test", 1: "heldout"}


class Reader:
    """Exact reads of raw little-endian arrays from a binary stream."""

    def __init__(self, f):
        self.f = f
        self.wait = 0.0

    def read(self, n, what):
        buf = bytearray(n)
        view = memoryview(buf)
        got = 0
        t0 = time.perf_counter()
        while got < n:
            k = self.f.readinto(view[got:])
            if not k:
                raise SystemExit(f"train_align.py: stdin ended {got} bytes into {what} ({n} bytes expected)")
            got += k
        self.wait += time.perf_counter() - t0
        return buf

    def ints(self, count, what):
        return torch.frombuffer(self.read(4 * count, what), dtype=torch.int32) if count else torch.empty(0, dtype=torch.int32)

    def floats(self, count, what):
        return torch.frombuffer(self.read(4 * count, what), dtype=torch.float32) if count else torch.empty(0)

    def header(self):
        return [int(v) for v in self.ints(4, "a message header")]


def cosine_with_warmup(W, T, r):
    """src/api/optim/schedule.ts cosineWithWarmup, as a LambdaLR factor."""
    def f(step):
        if step < W:
            return (step + 1) / (W + 1)
        if step >= T:
            return r
        return r + (1 - r) * 0.5 * (1 + math.cos(math.pi * (step - W) / (T - W)))
    return f


def save_checkpoint(out, state):
    """<out>/torch_ckpt.pt, then <out>/torch_ckpt.json naming its step; both written whole or not at all."""
    os.makedirs(out, exist_ok=True)
    pt = os.path.join(out, "torch_ckpt.pt")
    torch.save(state, pt + ".tmp")
    os.replace(pt + ".tmp", pt)
    js = os.path.join(out, "torch_ckpt.json")
    with open(js + ".tmp", "w") as f:
        json.dump({"step": state["step"], "wallS": state["records"]["wallS"]}, f)
    os.replace(js + ".tmp", js)


def load_checkpoint(out, step):
    pt = os.path.join(out, "torch_ckpt.pt")
    if not os.path.exists(pt):
        raise SystemExit(f"train_align.py: startStep {step} but there is no checkpoint {pt} to resume from")
    state = torch.load(pt)
    if state["step"] != step:
        raise SystemExit(f"train_align.py: {pt} holds step {state['step']}, not the startStep {step} the driver asked for")
    return state


def load_init(model, path):
    weights, _ = st.load(path)
    return st.load_exact(model, weights, f"train_align.py: {path}")


@torch.no_grad()
def embed(model, images, tokens, lengths, chunk=256):
    img = [clip_model.l2normalize(model.pool_image(model.image_tokens(images[i:i + chunk])))
           for i in range(0, images.shape[0], chunk)]
    txt = [clip_model.l2normalize(model.pool_text(model.text_hidden(tokens[i:i + chunk], lengths[i:i + chunk]),
                                                  lengths[i:i + chunk]))
           for i in range(0, tokens.shape[0], chunk)]
    return torch.cat(img).contiguous(), torch.cat(txt).contiguous()


def main():
    t_start = time.perf_counter()
    cfg = json.loads(sys.argv[1])
    if int(cfg.get("threads", 0)) > 0:
        torch.set_num_threads(int(cfg["threads"]))
    mc = cfg["model"]
    S, T = int(mc["imageSize"]), int(mc["contextLength"])
    C = int(mc.get("channels", 3))
    torch.manual_seed(0)
    model = clip_model.create(mc)
    n_tensors = load_init(model, cfg["init"])
    model.train()
    params = list(model.parameters())
    opt = clip_model.adamw(model, cfg["lr"], cfg["betas"], cfg["eps"], cfg["weightDecay"])
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, cosine_with_warmup(int(cfg["warmupSteps"]), int(cfg["steps"]), float(cfg["minLrRatio"])))
    clip = float(cfg["gradClip"]) if cfg["gradClip"] > 0 else float("inf")
    rd = Reader(sys.stdin.buffer)
    rec = {"losses": [], "gradNorms": [], "lrs": [], "stepS": [], "waitS": [], "trainS": 0.0, "trainCpuS": 0.0,
           "cpuS": 0.0, "wallS": 0.0, "sittings": 0}
    start = int(cfg.get("startStep", 0))
    if start > 0:
        state = load_checkpoint(cfg["out"], start)
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["opt"])
        sched.load_state_dict(state["sched"])
        torch.set_rng_state(state["rng"])
        rec = state["records"]
        print(f"torch: resumed at step {start} from {os.path.join(cfg['out'], 'torch_ckpt.pt')}", file=sys.stderr, flush=True)
    losses, norms, lrs, step_s, wait_s = rec["losses"], rec["gradNorms"], rec["lrs"], rec["stepS"], rec["waitS"]
    steps = int(cfg.get("runSteps", cfg["steps"]))  # runSteps < steps: stop early, on the full run's schedule
    every = int(cfg.get("checkpointEvery", 0))
    t_train = time.perf_counter()
    c_train = time.process_time()

    def checkpoint(step):
        state = {"step": step, "model": model.state_dict(), "opt": opt.state_dict(), "sched": sched.state_dict(),
                 "rng": torch.get_rng_state(), "records": {
                     **rec, "trainS": rec["trainS"] + time.perf_counter() - t_train,
                     "trainCpuS": rec["trainCpuS"] + time.process_time() - c_train,
                     "cpuS": rec["cpuS"] + time.process_time(), "wallS": rec["wallS"] + time.perf_counter() - t_start,
                     "sittings": rec["sittings"] + 1}}
        save_checkpoint(cfg["out"], state)
        print(f"torch: checkpoint at step {step}", file=sys.stderr, flush=True)

    for i in range(start, steps):
        t0 = time.perf_counter()
        w0 = rd.wait
        kind, B, s, t = rd.header()
        if kind != 1 or s != S or t != T:
            raise SystemExit(f"train_align.py: step {i}: expected a training batch [1, B, {S}, {T}], got {[kind, B, s, t]}")
        images = rd.floats(B * C * S * S, f"batch {i} images").view(B, C, S, S)
        tokens = rd.ints(B * T, f"batch {i} tokens").view(B, T)
        lengths = rd.ints(B, f"batch {i} lengths")
        lrs.append(opt.param_groups[0]["lr"])
        opt.zero_grad(set_to_none=True)
        loss, _ = model.loss(images, tokens, lengths)
        loss.backward()
        norms.append(float(torch.nn.utils.clip_grad_norm_(params, clip)))
        opt.step()
        sched.step()
        losses.append(loss.item())
        step_s.append(time.perf_counter() - t0)
        wait_s.append(rd.wait - w0)
        if (i + 1) % 50 == 0 or i + 1 == steps:
            print(f"torch step {i + 1}/{steps} loss {losses[-1]:.4f} {step_s[-1] * 1e3:.0f} ms/step", file=sys.stderr, flush=True)
        if every > 0 and ((i + 1) % every == 0 or i + 1 == steps):
            checkpoint(i + 1)
    train_s = rec["trainS"] + time.perf_counter() - t_train
    train_cpu_s = rec["trainCpuS"] + time.process_time() - c_train
    model.eval()
    t_eval = time.perf_counter()
    emb = {}
    while True:
        kind, a, n, m = rd.header()
        if kind == 0:
            break
        if kind != 2 or a not in SPLITS:
            raise SystemExit(f"train_align.py: expected an evaluation split [2, 0|1, N, M] or the end [0, ...], got {[kind, a, n, m]}")
        name = SPLITS[a]
        images = rd.floats(n * C * S * S, f"{name} images").view(n, C, S, S)
        tokens = rd.ints(m * T, f"{name} tokens").view(m, T)
        lengths = rd.ints(m, f"{name} lengths")
        emb[f"{name}.img"], emb[f"{name}.txt"] = embed(model, images, tokens, lengths)
    eval_s = time.perf_counter() - t_eval
    os.makedirs(cfg["out"], exist_ok=True)
    st.save(os.path.join(cfg["out"], "torch_embeddings.safetensors"), emb)
    report = {
        "torch": torch.__version__, "threads": torch.get_num_threads(), "tensors": n_tensors,
        "losses": losses, "gradNorms": norms, "lrs": lrs, "stepS": step_s, "waitS": wait_s,
        "trainS": train_s, "trainCpuS": train_cpu_s, "cpuS": rec["cpuS"] + time.process_time(), "evalS": eval_s,
        "wallS": rec["wallS"] + time.perf_counter() - t_start, "sittings": rec["sittings"] + 1, "startStep": start,
    }
    tmp = os.path.join(cfg["out"], "torch_train.json.tmp")
    with open(tmp, "w") as f:
        json.dump(report, f)
    os.replace(tmp, os.path.join(cfg["out"], "torch_train.json"))


if __name__ == "__main__":
    main()
