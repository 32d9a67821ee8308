"""The stage-1 image-text models of src/experiments/models in PyTorch, parameter for parameter.

state_dict() keys equal modalab's stateDict() names (visual.blocks.0.attn.qkv.weight, ...), so weights move both
ways through safetensors (bench/torch/st.py). Config keys are AlignModelConfig's (camelCase); the three
architectures are 'dual', 'shared' and 'fusion'. The masked objectives are not mirrored (their random masks
come from modalab's generator).

Layouts that must match modalab:
- patchify: [B, C, H, W] -> [B, C, g, p, g, p] -> [B, g, g, C, p, p] -> [B, g*g, C*p*p].
- attention: one qkv Linear(E, 3E) whose output is viewed as [B, N, 3, H, D]; cross-attention projects the
  queries with rows [0, E) of that weight and the context with rows [E, 3E).
- MLP: Linear layers named mlp.layers.0 and mlp.layers.1 with exact GELU between.
- text pooling at position length - 1; key padding at positions >= length.
"""
import math

import torch
import torch.nn as nn
import torch.nn.functional as F

DEFAULTS = dict(arch="dual", imageSize=32, patchSize=4, channels=3, visionWidth=128, visionLayers=4, visionHeads=4,
                vocabSize=1024, contextLength=32, textWidth=128, textLayers=4, textHeads=4, embedDim=128, mlpRatio=4,
                dropout=0.0, learnableTemperature=True, fusionLayers=2, itmWeight=1.0)


class MultiheadAttention(nn.Module):
    def __init__(self, dim, heads):
        super().__init__()
        self.dim, self.heads = dim, heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x, context=None, causal=False, key_padding_mask=None):
        B, N, E = x.shape
        H, D = self.heads, E // self.heads
        if context is None:
            q, k, v = self.qkv(x).view(B, N, 3, H, D).permute(2, 0, 3, 1, 4)
        else:
            M = context.shape[1]
            q = F.linear(x, self.qkv.weight[:E], self.qkv.bias[:E]).view(B, N, H, D).transpose(1, 2)
            k, v = F.linear(context, self.qkv.weight[E:], self.qkv.bias[E:]).view(B, M, 2, H, D).permute(2, 0, 3, 1, 4)
        s = q @ k.transpose(-1, -2) / math.sqrt(D)
        M = k.shape[2]
        if causal:
            keep = torch.ones(N, M, dtype=torch.bool).tril(M - N)
            s = s.masked_fill(~keep, float("-inf"))
        if key_padding_mask is not None:
            s = s.masked_fill(key_padding_mask[:, None, None, :], float("-inf"))
        o = torch.softmax(s, -1) @ v
        return self.proj(o.transpose(1, 2).reshape(B, N, E))


class MLP(nn.Module):
    def __init__(self, dim, hidden):
        super().__init__()
        self.layers = nn.ModuleList([nn.Linear(dim, hidden), nn.Linear(hidden, dim)])

    def forward(self, x):
        return self.layers[1](F.gelu(self.layers[0](x)))


class TransformerBlock(nn.Module):
    def __init__(self, dim, heads, mlp_ratio):
        super().__init__()
        self.ln1 = nn.LayerNorm(dim)
        self.attn = MultiheadAttention(dim, heads)
        self.ln2 = nn.LayerNorm(dim)
        self.mlp = MLP(dim, max(1, round(dim * mlp_ratio)))

    def forward(self, x, causal=False, key_padding_mask=None):
        h = x + self.attn(self.ln1(x), causal=causal, key_padding_mask=key_padding_mask)
        return h + self.mlp(self.ln2(h))


class CrossAttentionBlock(nn.Module):
    def __init__(self, dim, heads, mlp_ratio):
        super().__init__()
        self.lnQ = nn.LayerNorm(dim)
        self.lnKV = nn.LayerNorm(dim)
        self.attn = MultiheadAttention(dim, heads)
        self.ln2 = nn.LayerNorm(dim)
        self.mlp = MLP(dim, max(1, round(dim * mlp_ratio)))

    def forward(self, x, context):
        h = x + self.attn(self.lnQ(x), context=self.lnKV(context))
        return h + self.mlp(self.ln2(h))


def patchify(x, p):
    B, C, H, W = x.shape
    g = H // p
    return x.reshape(B, C, g, p, g, p).permute(0, 2, 4, 1, 3, 5).reshape(B, g * g, C * p * p)


def padding_mask(lengths, T):
    return torch.arange(T)[None, :] >= lengths[:, None].long()


def pool_at(h, lengths):
    return h[torch.arange(h.shape[0]), lengths.long() - 1]


def l2normalize(x):
    return x / x.norm(dim=-1, keepdim=True)


class VisionTransformer(nn.Module):
    def __init__(self, c):
        super().__init__()
        W, p = c["visionWidth"], c["patchSize"]
        P = (c["imageSize"] // p) ** 2
        self.p = p
        self.patchEmbed = nn.Linear(c["channels"] * p * p, W)
        self.classToken = nn.Parameter(torch.randn(1, 1, W) * W ** -0.5)
        self.posEmbed = nn.Parameter(torch.randn(1 + P, W) * W ** -0.5)
        self.blocks = nn.ModuleList([TransformerBlock(W, c["visionHeads"], c["mlpRatio"]) for _ in range(c["visionLayers"])])
        self.lnPost = nn.LayerNorm(W)
        self.proj = nn.Linear(W, c["embedDim"], bias=False)

    def forward_tokens(self, images):
        x = self.patchEmbed(patchify(images, self.p))
        x = torch.cat([self.classToken.expand(x.shape[0], 1, -1), x], 1) + self.posEmbed
        for b in self.blocks:
            x = b(x)
        return self.lnPost(x)

    def pool(self, tokens):
        return self.proj(tokens[:, 0])


class TextTransformer(nn.Module):
    def __init__(self, c):
        super().__init__()
        W = c["textWidth"]
        self.tokenEmbed = nn.Embedding(c["vocabSize"], W)
        nn.init.normal_(self.tokenEmbed.weight, std=0.02)
        self.posEmbed = nn.Parameter(torch.randn(c["contextLength"], W) * 0.01)
        self.blocks = nn.ModuleList([TransformerBlock(W, c["textHeads"], c["mlpRatio"]) for _ in range(c["textLayers"])])
        self.lnFinal = nn.LayerNorm(W)
        self.proj = nn.Linear(W, c["embedDim"], bias=False)

    def forward_tokens(self, tokens, lengths):
        T = tokens.shape[1]
        x = self.tokenEmbed(tokens.long()) + self.posEmbed[:T]
        kpm = padding_mask(lengths, T)
        for b in self.blocks:
            x = b(x, causal=True, key_padding_mask=kpm)
        return self.lnFinal(x)

    def pool(self, hidden, lengths):
        return self.proj(pool_at(hidden, lengths))


def info_nce(a, b, logit_scale):
    s = logit_scale.exp().clamp(max=100)
    logits = s * a @ b.t()
    target = torch.arange(a.shape[0])
    return (F.cross_entropy(logits, target) + F.cross_entropy(logits.t(), target)) / 2


class AlignModel(nn.Module):
    def finish(self, c):
        ls = torch.tensor(math.log(1 / 0.07))
        if c["learnableTemperature"]:
            self.logitScale = nn.Parameter(ls)
        else:
            self.register_buffer("logitScale", ls)

    def encode(self, images, tokens, lengths):
        it = self.image_tokens(images)
        th = self.text_hidden(tokens, lengths)
        return it, th, l2normalize(self.pool_image(it)), l2normalize(self.pool_text(th, lengths))

    def extra_losses(self, enc, lengths):
        return []

    def loss(self, images, tokens, lengths):
        enc = self.encode(images, tokens, lengths)
        total = info_nce(enc[2], enc[3], self.logitScale)
        parts = {"infonce": total.item()}
        for name, value, weight in self.extra_losses(enc, lengths):
            parts[name] = value.item()
            total = total + value * weight
        return total, parts


class DualEncoder(AlignModel):
    def __init__(self, c, finish=True):
        super().__init__()
        self.c = c
        self.visual = VisionTransformer(c)
        self.text = TextTransformer(c)
        if finish:
            self.finish(c)

    def image_tokens(self, images):
        return self.visual.forward_tokens(images)

    def pool_image(self, tokens):
        return self.visual.pool(tokens)

    def text_hidden(self, tokens, lengths):
        return self.text.forward_tokens(tokens, lengths)

    def pool_text(self, hidden, lengths):
        return self.text.pool(hidden, lengths)


class FusionEncoder(DualEncoder):
    def __init__(self, c):
        super().__init__(c, finish=False)
        self.fusionContext = nn.Linear(c["visionWidth"], c["textWidth"])
        self.fusion = nn.ModuleList([CrossAttentionBlock(c["textWidth"], c["textHeads"], c["mlpRatio"])
                                     for _ in range(c["fusionLayers"])])
        self.itmHead = nn.Linear(c["textWidth"], 2)
        self.finish(c)

    def itm_logits(self, text_hidden, image_tokens, lengths):
        ctx = self.fusionContext(image_tokens)
        h = text_hidden
        for layer in self.fusion:
            h = layer(h, ctx)
        return self.itmHead(pool_at(h, lengths))

    def extra_losses(self, enc, lengths):
        it, th, ie, te = enc
        B = ie.shape[0]
        with torch.no_grad():
            sim = te @ ie.t()
            sim.fill_diagonal_(float("-inf"))
            neg = sim.argmax(1)  # the hardest non-matching image of each caption
        self.last_hard_negatives = neg.tolist()
        images = torch.cat([it, it[neg]], 0)
        texts = torch.cat([th, th], 0)
        lens = torch.cat([lengths, lengths], 0)
        labels = torch.cat([torch.ones(B, dtype=torch.long), torch.zeros(B, dtype=torch.long)])
        return [("itm", F.cross_entropy(self.itm_logits(texts, images, lens), labels), self.c["itmWeight"])]


class SharedEncoder(AlignModel):
    def __init__(self, c):
        super().__init__()
        self.c = c
        W, p = c["visionWidth"], c["patchSize"]
        P = (c["imageSize"] // p) ** 2
        self.p = p
        self.patchEmbed = nn.Linear(c["channels"] * p * p, W)
        self.classToken = nn.Parameter(torch.randn(1, 1, W) * W ** -0.5)
        self.imagePos = nn.Parameter(torch.randn(1 + P, W) * W ** -0.5)
        self.tokenEmbed = nn.Embedding(c["vocabSize"], W)
        nn.init.normal_(self.tokenEmbed.weight, std=0.02)
        self.textPos = nn.Parameter(torch.randn(c["contextLength"], W) * 0.01)
        self.modalityEmbed = nn.Parameter(torch.randn(2, W) * 0.02)
        self.blocks = nn.ModuleList([TransformerBlock(W, c["visionHeads"], c["mlpRatio"]) for _ in range(c["visionLayers"])])
        self.lnFinal = nn.LayerNorm(W)
        self.visualProj = nn.Linear(W, c["embedDim"], bias=False)
        self.textProj = nn.Linear(W, c["embedDim"], bias=False)
        self.finish(c)

    def image_tokens(self, images):
        x = self.patchEmbed(patchify(images, self.p))
        x = torch.cat([self.classToken.expand(x.shape[0], 1, -1), x], 1) + self.imagePos + self.modalityEmbed[0]
        for b in self.blocks:
            x = b(x)
        return self.lnFinal(x)

    def pool_image(self, tokens):
        return self.visualProj(tokens[:, 0])

    def text_hidden(self, tokens, lengths):
        T = tokens.shape[1]
        x = self.tokenEmbed(tokens.long()) + self.textPos[:T] + self.modalityEmbed[1]
        kpm = padding_mask(lengths, T)
        for b in self.blocks:
            x = b(x, key_padding_mask=kpm)
        return self.lnFinal(x)

    def pool_text(self, hidden, lengths):
        return self.textProj(pool_at(hidden, lengths))


def create(config):
    c = dict(DEFAULTS, **config)
    return {"dual": DualEncoder, "shared": SharedEncoder, "fusion": FusionEncoder}[c["arch"]](c)


def adamw(model, lr, betas, eps, weight_decay):
    """torch.optim.AdamW with modalab's default grouping: decay only for tensors of two or more dims."""
    decay = [p for p in model.parameters() if p.ndim >= 2]
    rest = [p for p in model.parameters() if p.ndim < 2]
    return torch.optim.AdamW([{"params": decay, "weight_decay": weight_decay}, {"params": rest, "weight_decay": 0.0}],
                             lr=lr, betas=tuple(betas), eps=eps)
