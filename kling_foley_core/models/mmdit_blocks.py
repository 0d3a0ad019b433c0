"""MM-DiT blocks (Kling-Foley Fig. 2 "MMDiT Block", §4.3): per-stream adaLN blocks, the joint block that
concatenates the audio, video and text streams for one attention, and the final adaLN + conv head.

A stream block is split into ``pre_attention`` (adaLN, QKV, q/k RMSNorm, RoPE) and ``post_attention``
(gated output projection + gated feed-forward) so that a joint block can run one attention over the
concatenation of all streams in between. Module and parameter names follow MMAudio's checkpoints
(``attn.qkv``, ``adaLN_modulation.1``, ``linear1``, ``ffn.w1`` …) so that its weights load unchanged.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ..layers import ChannelLastConv1d, ConvSwiGLU, SwiGLU, apply_rope, joint_attention, modulate

__all__ = ["QKNormAttention", "StreamBlock", "JointBlock", "FinalBlock"]


class QKNormAttention(nn.Module):
    """Fused QKV projection with per-head RMSNorm on queries and keys (stabilises large-scale training).

    The QKV output is laid out as ``(heads, head_dim, 3)`` with q/k/v interleaved innermost: that is the
    layout MMAudio's checkpoints were trained with, so it is kept rather than the more common ``(3, H, Dh)``.
    """

    def __init__(self, dim: int, num_heads: int):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"hidden_dim={dim} is not divisible by num_heads={num_heads}")
        self.num_heads, self.head_dim = num_heads, dim // num_heads
        self.qkv = nn.Linear(dim, dim * 3, bias=True)
        self.q_norm = nn.RMSNorm(self.head_dim)
        self.k_norm = nn.RMSNorm(self.head_dim)

    def forward(self, x: torch.Tensor, rot: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        b, n, _ = x.shape
        qkv = self.qkv(x).view(b, n, self.num_heads, self.head_dim, 3).permute(0, 2, 1, 3, 4)  # (B, H, N, Dh, 3)
        q, k, v = qkv.unbind(-1)  # each (B, H, N, Dh)
        q, k = self.q_norm(q), self.k_norm(k)
        if rot is not None:
            q, k = apply_rope(q, rot), apply_rope(k, rot)
        return q, k, v


@dataclass
class _Gates:
    gate_msa: torch.Tensor
    shift_mlp: torch.Tensor
    scale_mlp: torch.Tensor
    gate_mlp: torch.Tensor


class StreamBlock(nn.Module):
    """One stream of a DiT block with adaLN-Zero modulation.

    ``kernel_size`` > 1 turns the output projection and the SwiGLU feed-forward into 1-D convolutions over
    time (audio and video streams); text, which has no temporal order, uses kernel 1 (plain linear layers).
    ``pre_only`` blocks (the video/text streams of the last joint block) only produce keys and values: their
    outputs would never be read, so they carry no output projection or feed-forward.
    """

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0, *, pre_only: bool = False,
                 kernel_size: int = 3):
        super().__init__()
        self.pre_only = pre_only
        self.norm1 = nn.LayerNorm(dim, elementwise_affine=False)
        self.attn = QKNormAttention(dim, num_heads)
        n_mod = 2 if pre_only else 6
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(dim, n_mod * dim, bias=True))
        if not pre_only:
            padding = (kernel_size - 1) // 2
            if kernel_size == 1:
                self.linear1 = nn.Linear(dim, dim)
                self.ffn = SwiGLU(dim, int(dim * mlp_ratio))
            else:
                self.linear1 = ChannelLastConv1d(dim, dim, kernel_size, padding=padding)
                self.ffn = ConvSwiGLU(dim, int(dim * mlp_ratio), kernel_size=kernel_size, padding=padding)
            self.norm2 = nn.LayerNorm(dim, elementwise_affine=False)

    def pre_attention(self, x: torch.Tensor, c: torch.Tensor, rot: torch.Tensor | None):
        """``x`` (B, N, D), condition ``c`` (B, 1, D) or per token (B, N, D) → (q, k, v), gates for later."""
        mod = self.adaLN_modulation(c)  # (B, 1|N, k·D)
        if self.pre_only:
            shift_msa, scale_msa = mod.chunk(2, dim=-1)
            gates = None
        else:
            shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = mod.chunk(6, dim=-1)
            gates = _Gates(gate_msa, shift_mlp, scale_mlp, gate_mlp)
        h = modulate(self.norm1(x), shift_msa, scale_msa)  # (B, N, D)
        return self.attn(h, rot), gates

    def post_attention(self, x: torch.Tensor, attn_out: torch.Tensor, gates: _Gates | None) -> torch.Tensor:
        if self.pre_only:
            return x
        x = x + self.linear1(attn_out) * gates.gate_msa  # (B, N, D)
        h = modulate(self.norm2(x), gates.shift_mlp, gates.scale_mlp)
        return x + self.ffn(h) * gates.gate_mlp  # (B, N, D)

    def forward(self, x: torch.Tensor, c: torch.Tensor, rot: torch.Tensor | None) -> torch.Tensor:
        """Single-stream (audio-only, FLUX-style) use: self-attention over this stream alone."""
        qkv, gates = self.pre_attention(x, c, rot)
        return self.post_attention(x, joint_attention(*qkv), gates)


class JointBlock(nn.Module):
    """Audio, video (CLIP) and text streams with their own weights and one joint attention (SD3 MM-DiT).

    The audio stream is modulated per token (global condition + upsampled sync features), video and text by
    the global condition only. RoPE is applied to audio and (rate-aligned) video; text has no positions.
    """

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0, *, pre_only: bool = False):
        super().__init__()
        self.pre_only = pre_only
        self.latent_block = StreamBlock(dim, num_heads, mlp_ratio, pre_only=False, kernel_size=3)
        self.clip_block = StreamBlock(dim, num_heads, mlp_ratio, pre_only=pre_only, kernel_size=3)
        self.text_block = StreamBlock(dim, num_heads, mlp_ratio, pre_only=pre_only, kernel_size=1)

    def forward(self, latent: torch.Tensor, clip_f: torch.Tensor, text_f: torch.Tensor, global_c: torch.Tensor,
                extended_c: torch.Tensor, latent_rot: torch.Tensor, clip_rot: torch.Tensor,
                key_mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x_qkv, x_gates = self.latent_block.pre_attention(latent, extended_c, latent_rot)
        c_qkv, c_gates = self.clip_block.pre_attention(clip_f, global_c, clip_rot)
        t_qkv, t_gates = self.text_block.pre_attention(text_f, global_c, None)
        n_lat, n_clip = latent.shape[1], clip_f.shape[1]

        q, k, v = (torch.cat([x_qkv[i], c_qkv[i], t_qkv[i]], dim=2) for i in range(3))  # (B, H, N_all, Dh)
        out = joint_attention(q, k, v, key_mask)  # (B, N_all, D)

        latent = self.latent_block.post_attention(latent, out[:, :n_lat], x_gates)
        if not self.pre_only:
            clip_f = self.clip_block.post_attention(clip_f, out[:, n_lat:n_lat + n_clip], c_gates)
            text_f = self.text_block.post_attention(text_f, out[:, n_lat + n_clip:], t_gates)
        return latent, clip_f, text_f


class FinalBlock(nn.Module):
    """adaLN (shift, scale) then a k=7 convolution to the latent channels: the predicted velocity."""

    def __init__(self, dim: int, out_dim: int):
        super().__init__()
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(dim, 2 * dim, bias=True))
        self.norm = nn.LayerNorm(dim, elementwise_affine=False)
        self.conv = ChannelLastConv1d(dim, out_dim, kernel_size=7, padding=3)

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        shift, scale = self.adaLN_modulation(c).chunk(2, dim=-1)
        return self.conv(modulate(self.norm(x), shift, scale))  # (B, N, out_dim)
