"""A PyTorch reference of the UMT vision tower + ToMe16 MLP projector, built from torch primitives.

Module and parameter names follow the original checkpoints (`patch_embed.proj`,
`blocks.{i}.attn.qkv`, `q_bias`, `v_bias`, `vision_layernorm`, `mlp.0`/`mlp.2`), so a state
dict in the original key names (minus the HF prefixes) loads into it with strict=True.
Written for the parity tests only (float32, CPU, inference).
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

VISION_PREFIX = "model.vision_tower.vision_tower.encoder."
PROJECTOR_PREFIX = "model.mm_projector."


# ----------------------------------------------------------------------------- positional table


def sinusoid_loop(n: int, d: int) -> np.ndarray:
    """Plain-Python float64 transformer sinusoid table (n, d), cast to float32."""
    table = np.empty((n, d), np.float64)
    denom = [math.pow(10000.0, 2 * (j // 2) / d) for j in range(d)]
    for pos in range(n):
        for j in range(d):
            angle = pos / denom[j]
            table[pos, j] = math.sin(angle) if j % 2 == 0 else math.cos(angle)
    return table.astype(np.float32)


def time_linear(table: torch.Tensor, new_t: int) -> torch.Tensor:
    """(T, g, g, C) → (new_T, g, g, C), torch linear interpolation over T (align_corners=False)."""
    t, g, _, c = table.shape
    x = table.permute(1, 2, 3, 0).reshape(g * g, c, t)
    x = F.interpolate(x, size=new_t, mode="linear", align_corners=False)
    return x.reshape(g, g, c, new_t).permute(3, 0, 1, 2)


def space_bicubic(table: torch.Tensor, size: int) -> torch.Tensor:
    """(T, p, p, C) → (T, size, size, C), torch bicubic (a = −0.75, align_corners=False)."""
    x = F.interpolate(table.permute(0, 3, 1, 2), size=(size, size), mode="bicubic", align_corners=False)
    return x.permute(0, 2, 3, 1)


def torch_pos_embed(image_size: int, patch: int, d: int, t: int, ckpt: int = 4) -> np.ndarray:
    """The original table pipelines (224 path; 14×14-grid bicubic path; T == 1 image table)."""
    g = image_size // patch
    if image_size == 224:
        if t == 1 or t == ckpt:
            return sinusoid_loop(t * g * g, d)
        base = torch.from_numpy(sinusoid_loop(ckpt * g * g, d)).reshape(ckpt, g, g, d)
        return time_linear(base, t).reshape(-1, d).numpy()
    n0 = 1 if t == 1 else ckpt
    base = torch.from_numpy(sinusoid_loop(n0 * 196, d)).reshape(n0, 14, 14, d)
    x = space_bicubic(base, g)
    if t != n0:
        x = time_linear(x, t)
    return x.reshape(-1, d).numpy()


# ----------------------------------------------------------------------------- vision tower


class Attention(nn.Module):
    def __init__(self, dim: int, heads: int, qkv_bias: bool = True):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim, bias=False)
        self.q_bias = nn.Parameter(torch.zeros(dim)) if qkv_bias else None
        self.v_bias = nn.Parameter(torch.zeros(dim)) if qkv_bias else None
        self.proj = nn.Linear(dim, dim)

    def forward(self, x):
        b, n, c = x.shape
        bias = None
        if self.q_bias is not None:
            bias = torch.cat([self.q_bias, torch.zeros_like(self.q_bias), self.v_bias])
        qkv = F.linear(x, self.qkv.weight, bias).reshape(b, n, 3, self.heads, c // self.heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4)  # each (B, H, N, D)
        attn = ((q * (c // self.heads) ** -0.5) @ k.transpose(-2, -1)).softmax(-1)
        return self.proj((attn @ v).transpose(1, 2).reshape(b, n, c))


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x):
        return self.fc2(F.gelu(self.fc1(x)))


class Block(nn.Module):
    def __init__(self, dim: int, heads: int, mlp_ratio: float, eps: float, qkv_bias: bool):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=eps)
        self.attn = Attention(dim, heads, qkv_bias)
        self.norm2 = nn.LayerNorm(dim, eps=eps)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x):
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class PatchEmbed(nn.Module):
    def __init__(self, dim: int, patch: int, tubelet: int = 1):
        super().__init__()
        self.proj = nn.Conv3d(3, dim, kernel_size=(tubelet, patch, patch), stride=(tubelet, patch, patch))

    def forward(self, x):  # (B, 3, T, H, W) → (B, T·g·g, C)
        return self.proj(x).flatten(2).transpose(1, 2)


class UMTEncoder(nn.Module):
    """Keys: patch_embed.proj.*, blocks.{i}.*, vision_layernorm.* (the `…encoder.` level)."""

    def __init__(self, cfg):
        super().__init__()
        self.cfg = cfg
        c = cfg.hidden_size
        self.patch_embed = PatchEmbed(c, cfg.patch_size, cfg.tubelet_size)
        self.blocks = nn.ModuleList(
            Block(c, cfg.num_attention_heads, cfg.mlp_ratio, cfg.layer_norm_eps, cfg.qkv_bias)
            for _ in range(cfg.num_blocks)
        )
        self.vision_layernorm = nn.LayerNorm(c, eps=cfg.final_layer_norm_eps)

    def forward(self, clips):
        """clips (B, T, 3, H, W) → (B, T·g·g, C)."""
        cfg = self.cfg
        t = clips.shape[1] // cfg.tubelet_size
        x = self.patch_embed(clips.permute(0, 2, 1, 3, 4))
        pos = torch_pos_embed(cfg.image_size, cfg.patch_size, cfg.hidden_size, t, cfg.ckpt_num_frame)
        x = x + torch.from_numpy(pos)[None].to(x.dtype)
        for blk in self.blocks:
            x = blk(x)
        return self.vision_layernorm(x)


class Projector(nn.Module):
    """Keys: mlp.0.*, mlp.2.*."""

    def __init__(self, c: int, d: int):
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(c, d), nn.GELU(), nn.Linear(d, d))

    def forward(self, x):
        return self.mlp(x)


def load_prefixed(module: nn.Module, tensors: dict, prefix: str) -> nn.Module:
    """Load the `prefix`-ed entries of a flat numpy state dict (strict)."""
    sd = {k[len(prefix):]: torch.from_numpy(np.array(v)) for k, v in tensors.items() if k.startswith(prefix)}
    module.load_state_dict(sd, strict=True)
    return module.eval()


# ----------------------------------------------------------------------------- ToMe (original algorithm, torch ops)


def torch_tome(x: torch.Tensor, heads: int, target: int) -> tuple[torch.Tensor, torch.Tensor]:
    """ToMe as the original: torch.argsort(descending=True) (unstable), scatter_add merges.

    x (B, N, C) → (tokens (B, target, C), sizes (B, target)).
    """
    b, p, c = x.shape
    rounds = []
    q = p
    while q != target:
        r = q - target if q - target <= q // 2 else q // 2
        rounds.append(r)
        q -= r
    size = torch.ones_like(x[..., :1])
    for r in rounds:
        p = x.shape[1]
        metric = x.reshape(b, p, heads, c // heads).mean(2)
        metric = metric / metric.norm(dim=-1, keepdim=True)
        scores = metric[:, ::2] @ metric[:, 1::2].transpose(-1, -2)
        node_max, node_idx = scores.max(dim=-1)
        edge = node_max.argsort(dim=-1, descending=True)[..., None]
        unm, src = edge[:, r:], edge[:, :r]
        dst = node_idx[..., None].gather(1, src)

        def merge(v):
            va, vb = v[:, ::2], v[:, 1::2]
            w = v.shape[-1]
            kept = va.gather(1, unm.expand(-1, -1, w))
            moved = va.gather(1, src.expand(-1, -1, w))
            return torch.cat([kept, vb.scatter_add(1, dst.expand(-1, -1, w), moved)], dim=1)

        x = merge(x * size)
        size = merge(size)
        x = x / size
    return x, size[..., 0]
