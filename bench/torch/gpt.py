"""The GPT decoder of src/experiments/models/gpt.ts in PyTorch, parameter for parameter.

state_dict() keys equal modalab's stateDict() names (tokenEmbed.weight, posEmbed, blocks.0.attn.qkv.weight, ...,
lnFinal.weight), so weights move both ways through safetensors (bench/torch/st.py). The blocks are
clip_model.TransformerBlock (pre-norm, one qkv Linear viewed as [B, N, 3, H, D], exact GELU); the head is tied:
logits = lnFinal(h) @ tokenEmbed.weight^T. A prefix of embeddings [B, P, W] goes before the token embeddings;
positions count from the prefix's first row.
"""
import torch
import torch.nn as nn
import torch.nn.functional as F

from clip_model import TransformerBlock, adamw  # noqa: F401  (adamw: modalab's parameter grouping)


class GPT(nn.Module):
    def __init__(self, vocabSize, contextLength=128, width=128, layers=4, heads=4, mlpRatio=4, dropout=0.0, **_):
        super().__init__()
        self.contextLength = contextLength
        self.tokenEmbed = nn.Embedding(vocabSize, width)
        self.posEmbed = nn.Parameter(torch.zeros(contextLength, width))
        self.blocks = nn.ModuleList([TransformerBlock(width, heads, mlpRatio) for _ in range(layers)])
        self.lnFinal = nn.LayerNorm(width)

    def hidden(self, tokens, prefix=None):
        x = self.tokenEmbed(tokens.long())
        if prefix is not None:
            x = torch.cat([prefix, x], 1)
        x = x + self.posEmbed[: x.shape[1]]
        for b in self.blocks:
            x = b(x, causal=True)
        return self.lnFinal(x)

    def forward(self, tokens, prefix=None):
        return self.hidden(tokens, prefix) @ self.tokenEmbed.weight.t()

    def loss(self, tokens, lengths=None, prefix=None):
        """Mean next-token cross entropy over positions t < length - 1 (GPT.loss with lengths)."""
        B, T = tokens.shape
        logits = self.forward(tokens, prefix)[:, -T:]
        targets = torch.full((B, T), -100, dtype=torch.long)
        for b in range(B):
            n = T if lengths is None else int(lengths[b])
            targets[b, : n - 1] = tokens[b, 1:n].long()
        return F.cross_entropy(logits.reshape(B * T, -1), targets.reshape(-1), ignore_index=-100)

    @torch.no_grad()
    def greedy(self, prompt, new_tokens):
        """Greedy continuation by re-running the whole sequence each step (no cache): the reference for the KV cache."""
        seq = prompt.clone()
        for _ in range(new_tokens):
            nxt = self.forward(seq)[:, -1].argmax(-1, keepdim=True).to(seq.dtype)
            seq = torch.cat([seq, nxt], 1)
        return seq[:, prompt.shape[1]:]
