"""A tiny safetensors reader and writer (F32, F64, I32, I64, F16, BF16), for machines without the `safetensors` package.

The format: 8 bytes little-endian header length N, N bytes of JSON {name: {dtype, shape, data_offsets: [begin, end]},
"__metadata__": {str: str}?}, then the raw little-endian data; offsets are relative to the end of the header.
"""
import json
import struct

import torch

_DT = {"F32": torch.float32, "F64": torch.float64, "I32": torch.int32, "I64": torch.int64, "F16": torch.float16,
       "BF16": torch.bfloat16}
_NAME = {v: k for k, v in _DT.items()}


def load(path):
    """name -> CPU tensor, and the metadata dict."""
    with open(path, "rb") as f:
        raw = f.read()
    if len(raw) < 8:
        raise ValueError(f"{path}: too short for a safetensors file")
    (n,) = struct.unpack("<Q", raw[:8])
    if 8 + n > len(raw):
        raise ValueError(f"{path}: header length {n} runs past the end of the file")
    header = json.loads(raw[8:8 + n].decode("utf-8"))
    meta = header.pop("__metadata__", {}) or {}
    data = raw[8 + n:]
    out = {}
    for name, info in header.items():
        dt = _DT.get(info["dtype"])
        if dt is None:
            raise ValueError(f"{path}: tensor {name!r}: unsupported dtype {info['dtype']}")
        b, e = info["data_offsets"]
        buf = bytearray(data[b:e])
        t = torch.frombuffer(buf, dtype=dt) if e > b else torch.empty(0, dtype=dt)
        out[name] = t.reshape(info["shape"]).clone()
    return out, meta


def save(path, tensors, metadata=None):
    """Write name -> tensor (contiguous copies are made) atomically (a temp file, then rename)."""
    import os
    header, blobs, off = {}, [], 0
    for name, t in tensors.items():
        t = t.detach().contiguous().cpu()
        b = t.numpy().tobytes() if t.dtype != torch.bfloat16 else t.view(torch.int16).numpy().tobytes()
        header[name] = {"dtype": _NAME[t.dtype], "shape": list(t.shape), "data_offsets": [off, off + len(b)]}
        blobs.append(b)
        off += len(b)
    if metadata:
        header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
    h = json.dumps(header, separators=(",", ":")).encode("utf-8")
    h += b" " * ((8 - len(h) % 8) % 8)
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for b in blobs:
            f.write(b)
    os.replace(tmp, path)


def load_exact(module, tensors, what, prefix=""):
    """Loads the tensors named `prefix` + a parameter name into `module`; exits naming the difference when the
    names or shapes are not exactly the module's own (modalab and torch must hold the same parameters)."""
    want = module.state_dict()
    got = {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}
    if set(want) != set(got):
        raise SystemExit(f"{what}: parameter names differ from modalab's: missing {sorted(set(want) - set(got))[:5]}, "
                         f"not in the torch model {sorted(set(got) - set(want))[:5]}")
    for k, v in want.items():
        if tuple(v.shape) != tuple(got[k].shape):
            raise SystemExit(f"{what}: {k} has shape {tuple(got[k].shape)} in the file, {tuple(v.shape)} in torch")
    module.load_state_dict(got)
    return len(got)
