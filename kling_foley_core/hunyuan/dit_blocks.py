"""HunyuanVideo-Foley transformer blocks: the triple-stream (audio ⊕ visual ⊕ text) block and the audio-only block.

Triple-stream block (one per multimodal layer), for audio tokens ``a`` (B, N, D), visual tokens ``v`` (B, M, D)
and projected text tokens ``c`` (B, L, D):

1. joint self-attention over ``[v; a]``: each stream has its own adaLN(shift, scale, gate), QKV and QK-RMSNorm;
   RoPE is applied on the *interleaved* sequence a0 v0 a1 v1 … (visual resampled to N, nearest-exact), so an
   audio token and the visual token at the same instant get adjacent positions (2i, 2i+1);
2. cross-attention: ``[v; a]`` queries (RoPE over each stream's own positions) attend to the text keys (RoPE over
   text positions) and values; the text stream itself is never updated;
3. per-stream gated MLP.

Audio-only block: per-token adaLN (timestep + Synchformer features), self-attention with RoPE, then a temporal
conv (kernel 3) as output projection and a conv-SwiGLU MLP.

Module/parameter names are those of the released checkpoints.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from .layers import MLP, ChannelLastConv1d, ConvMLP, RMSNorm, apply_rope, gate, modulate, modulate_2d_only


@dataclass
class RopeSet:
    """All RoPE tables one forward needs; they depend only on the sequence lengths, so they are built once."""

    self_audio: tuple[torch.Tensor, torch.Tensor]  # (N, Dh) ×2, positions 2i on the interleaved grid (or i)
    self_visual: tuple[torch.Tensor, torch.Tensor]  # (M, Dh) ×2
    visual_gather: torch.Tensor | None  # (M,) which visual token lands at each visual slot after the round trip
    cross_audio: tuple[torch.Tensor, torch.Tensor]  # (N, Dh) ×2, positions 0..N-1
    cross_visual: tuple[torch.Tensor, torch.Tensor]  # (M, Dh) ×2, positions 0..M-1
    cross_text: tuple[torch.Tensor, torch.Tensor]  # (L, Dh) ×2, positions 0..L-1
    single: tuple[torch.Tensor, torch.Tensor]  # (N, Dh) ×2, audio positions 0..N-1


def _qk_norm(kind: str, dim: int, enabled: bool) -> nn.Module:
    if not enabled:
        return nn.Identity()
    if kind == "rms":
        return RMSNorm(dim, eps=1e-6)
    if kind == "layer":
        return nn.LayerNorm(dim, eps=1e-6)
    raise ValueError(f"qk_norm_type='{kind}' is unknown; choose 'rms' or 'layer'")


def _attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """(B, S, H, Dh) inputs → (B, S, H·Dh) output via SDPA."""
    out = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2))  # (B, H, S, Dh)
    return out.transpose(1, 2).flatten(2)  # (B, S, D)


class Modulation(nn.Module):
    """``Linear(SiLU(c))`` → ``factor`` chunks of size D (shift/scale/gate triples)."""

    def __init__(self, hidden_size: int, factor: int):
        super().__init__()
        self.factor = factor
        self.act = nn.SiLU()
        self.linear = nn.Linear(hidden_size, factor * hidden_size)

    def forward(self, c: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return self.linear(self.act(c)).chunk(self.factor, dim=-1)


class TripleStreamBlock(nn.Module):
    def __init__(self, hidden_size: int, num_heads: int, mlp_ratio: float, mlp_act_type: str = "gelu_tanh",
                 qk_norm: bool = True, qk_norm_type: str = "rms", qkv_bias: bool = True):
        super().__init__()
        d, self.num_heads = hidden_size, num_heads
        head_dim = d // num_heads
        mlp_hidden = int(d * mlp_ratio)

        def norm():
            return nn.LayerNorm(d, elementwise_affine=False, eps=1e-6)

        def qkn():
            return _qk_norm(qk_norm_type, head_dim, qk_norm)

        # joint self-attention
        self.audio_mod, self.v_cond_mod = Modulation(d, 9), Modulation(d, 9)
        self.audio_norm1, self.v_cond_norm1 = norm(), norm()
        self.audio_self_attn_qkv = nn.Linear(d, 3 * d, bias=qkv_bias)
        self.v_cond_attn_qkv = nn.Linear(d, 3 * d, bias=qkv_bias)
        self.audio_self_q_norm, self.audio_self_k_norm = qkn(), qkn()
        self.v_cond_attn_q_norm, self.v_cond_attn_k_norm = qkn(), qkn()
        self.audio_self_proj = nn.Linear(d, d, bias=qkv_bias)
        self.v_cond_self_proj = nn.Linear(d, d, bias=qkv_bias)
        # cross-attention to text
        self.audio_norm2, self.v_cond_norm2 = norm(), norm()
        self.audio_cross_q = nn.Linear(d, d, bias=qkv_bias)
        self.v_cond_cross_q = nn.Linear(d, d, bias=qkv_bias)
        self.text_cross_kv = nn.Linear(d, 2 * d, bias=qkv_bias)
        self.audio_cross_q_norm, self.v_cond_cross_q_norm, self.text_cross_k_norm = qkn(), qkn(), qkn()
        self.audio_cross_proj = nn.Linear(d, d, bias=qkv_bias)
        self.v_cond_cross_proj = nn.Linear(d, d, bias=qkv_bias)
        # MLPs
        self.audio_norm3, self.v_cond_norm3 = norm(), norm()
        self.audio_mlp = MLP(d, mlp_hidden, mlp_act_type)
        self.v_cond_mlp = MLP(d, mlp_hidden, mlp_act_type)

    def _heads(self, x: torch.Tensor, k: int) -> tuple[torch.Tensor, ...]:
        """(B, S, k·H·Dh) → k tensors (B, S, H, Dh); the projection's channels are ordered (k, head, dim)."""
        b, s, _ = x.shape
        return x.view(b, s, k, self.num_heads, -1).unbind(2)

    def forward(self, audio: torch.Tensor, text: torch.Tensor, visual: torch.Tensor, vec: torch.Tensor,
                rope: RopeSet, audio_vec: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """audio (B, N, D), text (B, L, D), visual (B, M, D), vec (B, D); ``audio_vec`` (B, N, D) replaces ``vec``
        for the audio stream's modulation when the model modulates per token with sync features."""
        a_shift1, a_scale1, a_gate1, a_shift2, a_scale2, a_gate2, a_shift3, a_scale3, a_gate3 = self.audio_mod(
            vec if audio_vec is None else audio_vec)
        v_shift1, v_scale1, v_gate1, v_shift2, v_scale2, v_gate2, v_shift3, v_scale3, v_gate3 = self.v_cond_mod(vec)
        n_v = visual.shape[1]

        # 1. joint self-attention over [visual; audio]
        # (per-token audio modulation keeps its gates but loses shift/scale, exactly as in the reference)
        modulate_a = modulate if audio_vec is None else modulate_2d_only
        aq, ak, av = self._heads(self.audio_self_attn_qkv(modulate_a(self.audio_norm1(audio), a_shift1, a_scale1)), 3)
        aq, ak = self.audio_self_q_norm(aq).to(av), self.audio_self_k_norm(ak).to(av)  # (B, N, H, Dh)
        vq, vk, vv = self._heads(self.v_cond_attn_qkv(modulate(self.v_cond_norm1(visual), v_shift1, v_scale1)), 3)
        vq, vk = self.v_cond_attn_q_norm(vq).to(vv), self.v_cond_attn_k_norm(vk).to(vv)  # (B, M, H, Dh)
        aq, ak = apply_rope(aq, *rope.self_audio), apply_rope(ak, *rope.self_audio)
        if rope.visual_gather is not None:
            # The interleaved grid resamples visual q/k to the audio length and back (nearest-exact); when M ≤ N
            # that round trip is the identity, otherwise some visual tokens are replaced by a neighbour's.
            vq, vk = vq[:, rope.visual_gather], vk[:, rope.visual_gather]
        vq, vk = apply_rope(vq, *rope.self_visual), apply_rope(vk, *rope.self_visual)
        attn = _attention(torch.cat([vq, aq], 1), torch.cat([vk, ak], 1), torch.cat([vv, av], 1))  # (B, M+N, D)
        v_attn, a_attn = attn[:, :n_v], attn[:, n_v:]
        audio = audio + gate(self.audio_self_proj(a_attn), a_gate1)
        visual = visual + gate(self.v_cond_self_proj(v_attn), v_gate1)

        # 2. cross-attention: [visual; audio] queries, text keys/values
        aq = self.audio_cross_q_norm(self._heads(self.audio_cross_q(
            modulate_a(self.audio_norm2(audio), a_shift2, a_scale2)), 1)[0])
        vq = self.v_cond_cross_q_norm(self._heads(self.v_cond_cross_q(
            modulate(self.v_cond_norm2(visual), v_shift2, v_scale2)), 1)[0])
        tk, tv = self._heads(self.text_cross_kv(text), 2)
        tk = self.text_cross_k_norm(tk).to(tv)
        aq, vq = apply_rope(aq, *rope.cross_audio), apply_rope(vq, *rope.cross_visual)
        tk = apply_rope(tk, *rope.cross_text)
        attn = _attention(torch.cat([vq, aq], 1), tk, tv)  # (B, M+N, D)
        v_attn, a_attn = attn[:, :n_v], attn[:, n_v:]
        audio = audio + gate(self.audio_cross_proj(a_attn), a_gate2)
        visual = visual + gate(self.v_cond_cross_proj(v_attn), v_gate2)

        # 3. MLPs
        audio = audio + gate(self.audio_mlp(modulate_a(self.audio_norm3(audio), a_shift3, a_scale3)), a_gate3)
        visual = visual + gate(self.v_cond_mlp(modulate(self.v_cond_norm3(visual), v_shift3, v_scale3)), v_gate3)
        return audio, visual


class SingleStreamBlock(nn.Module):
    """Audio-only block with per-token modulation (``cond`` is (B, N, D) or (B, D))."""

    def __init__(self, hidden_size: int, num_heads: int, mlp_ratio: float):
        super().__init__()
        d, self.num_heads = hidden_size, num_heads
        self.modulation = Modulation(d, 6)
        self.linear_qkv = nn.Linear(d, 3 * d)
        self.linear1 = ChannelLastConv1d(d, d, kernel_size=3, padding=1)
        self.linear2 = ConvMLP(d, int(d * mlp_ratio), kernel_size=3, padding=1)
        # LayerNorm with torch's default eps (1e-5) and RMSNorm with the dtype's eps: what the weights saw in training
        self.norm1 = nn.LayerNorm(d, elementwise_affine=False)
        self.norm2 = nn.LayerNorm(d, elementwise_affine=False)
        self.q_norm = nn.RMSNorm(d // num_heads)
        self.k_norm = nn.RMSNorm(d // num_heads)

    def forward(self, x: torch.Tensor, cond: torch.Tensor, rope: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = self.modulation(cond)
        b, n, _ = x.shape
        qkv = self.linear_qkv(modulate(self.norm1(x), shift_msa, scale_msa))
        # this projection's channels are ordered (head, dim, k) — unlike the triple block's (k, head, dim)
        q, k, v = qkv.view(b, n, self.num_heads, -1, 3).permute(4, 0, 2, 1, 3).unbind(0)  # (B, H, N, Dh) ×3
        q, k = self.q_norm(q), self.k_norm(k)
        q, k = apply_rope(q, *rope, heads_first=True), apply_rope(k, *rope, heads_first=True)
        out = F.scaled_dot_product_attention(q.contiguous(), k.contiguous(), v.contiguous())  # (B, H, N, Dh)
        out = out.transpose(1, 2).flatten(2)  # (B, N, D)
        x = x + gate(self.linear1(out), gate_msa)
        x = x + gate(self.linear2(modulate(self.norm2(x), shift_mlp, scale_mlp)), gate_mlp)
        return x


class FinalLayer(nn.Module):
    """adaLN(shift, scale) → Linear to the latent channels.

    With a per-token condition (B, N, D) — the released configuration — the shift/scale are dropped, as in the
    reference, so ``adaLN_modulation`` exists (and is loaded) but does not change the output.
    """

    def __init__(self, hidden_size: int, out_channels: int):
        super().__init__()
        self.norm_final = nn.LayerNorm(hidden_size, elementwise_affine=False, eps=1e-6)
        self.linear = nn.Linear(hidden_size, out_channels)
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(hidden_size, 2 * hidden_size))

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        if c.ndim == 3:  # per-token condition: the modulation would be dropped anyway, so skip computing it
            return self.linear(self.norm_final(x))  # (B, N, C)
        shift, scale = self.adaLN_modulation(c).chunk(2, dim=-1)
        return self.linear(modulate(self.norm_final(x), shift, scale))  # (B, N, C)
