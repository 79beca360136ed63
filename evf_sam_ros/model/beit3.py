"""BEiT-3 multiway encoder, as used by EVF-SAM (torchscale v0.2.0 semantics, written from the spec).

Parameter names equal torchscale's, so the ``mm_extractor.beit3.*`` tensors of the released checkpoints
load by stripping that prefix. Only what EVF uses is built: vision + text embeddings, absolute positions,
pre-LN layers with sub-LN (``inner_attn_ln``, ``ffn_layernorm``), a final multiway LayerNorm; no relative
position bias, no output projection, no dropout.

Multiway rule: each multiway module holds a vision expert ``A`` and a language expert ``B``; the first
``split`` tokens of the sequence (the vision tokens: [CLS] + patches) go through ``A``, the rest (text)
through ``B``.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .config import Beit3Config

__all__ = ['BEiT3', 'MultiwayNetwork']


class MultiwayNetwork(nn.Module):
    """Two copies of a module; tokens before ``split`` use ``A`` (vision), the rest ``B`` (text)."""

    def __init__(self, module_a: nn.Module, module_b: nn.Module) -> None:
        super().__init__()
        self.A = module_a
        self.B = module_b

    def forward(self, x: torch.Tensor, split: int) -> torch.Tensor:
        # x: [B, L, C] -> [B, L, C'] ; split along the token axis
        if split >= x.shape[1]:
            return self.A(x)
        return torch.cat([self.A(x[:, :split]), self.B(x[:, split:])], dim=1)


def _multiway_linear(d_in: int, d_out: int) -> MultiwayNetwork:
    return MultiwayNetwork(nn.Linear(d_in, d_out), nn.Linear(d_in, d_out))


def _multiway_layernorm(dim: int, eps: float) -> MultiwayNetwork:
    return MultiwayNetwork(nn.LayerNorm(dim, eps=eps), nn.LayerNorm(dim, eps=eps))


class VisionEmbedding(nn.Module):
    """16x16 patch embedding + [CLS]; ``mask_token`` exists in the checkpoints but is unused here."""

    def __init__(self, config: Beit3Config) -> None:
        super().__init__()
        d = config.embed_dim
        self.proj = nn.Conv2d(config.in_chans, d, kernel_size=config.patch_size, stride=config.patch_size)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, d))
        self.mask_token = nn.Parameter(torch.zeros(1, 1, d))

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        # [B, 3, 224, 224] -> [B, 196, D] (row-major patches) -> [B, 197, D]
        x = self.proj(pixel_values).flatten(2).transpose(1, 2)
        cls = self.cls_token.expand(x.shape[0], -1, -1).to(x.dtype)
        return torch.cat([cls, x], dim=1)


class PositionalEmbeddings(nn.Module):
    """Multiway absolute position tables; each modality starts at row 2 (fairseq offset) of its own table."""

    def __init__(self, config: Beit3Config) -> None:
        super().__init__()
        d = config.embed_dim
        self.A = nn.Embedding(config.num_vision_tokens + 2, d)
        self.B = nn.Embedding(config.max_source_positions, d)

    def forward(self, num_vision: int, num_text: int) -> torch.Tensor:
        # -> [num_vision + num_text, D]
        return torch.cat([self.A.weight[2:2 + num_vision], self.B.weight[2:2 + num_text]], dim=0)


class MultiheadAttention(nn.Module):
    """Multiway q/k/v/out projections, joint attention over vision and text tokens, sub-LN before out_proj."""

    def __init__(self, config: Beit3Config) -> None:
        super().__init__()
        d = config.embed_dim
        self.num_heads = config.num_heads
        self.head_dim = d // config.num_heads
        self.q_proj = _multiway_linear(d, d)
        self.k_proj = _multiway_linear(d, d)
        self.v_proj = _multiway_linear(d, d)
        self.out_proj = _multiway_linear(d, d)
        self.inner_attn_ln = _multiway_layernorm(d, config.layernorm_eps)

    def forward(self, x: torch.Tensor, split: int, attn_mask: torch.Tensor | None) -> torch.Tensor:
        bsz, length, dim = x.shape
        # [B, L, D] -> [B, H, L, Dh]
        q = self.q_proj(x, split).view(bsz, length, self.num_heads, self.head_dim).transpose(1, 2)
        k = self.k_proj(x, split).view(bsz, length, self.num_heads, self.head_dim).transpose(1, 2)
        v = self.v_proj(x, split).view(bsz, length, self.num_heads, self.head_dim).transpose(1, 2)
        # torchscale scales q by Dh^-0.5 before QK^T and runs the softmax in fp32; SDPA's default scale is
        # the same factor, and in fp32 the two are equal up to rounding. attn_mask: bool [B, 1, 1, L],
        # True = may attend (padded text keys are False).
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask)
        out = out.transpose(1, 2).reshape(bsz, length, dim)
        out = self.inner_attn_ln(out, split)
        return self.out_proj(out, split)


class FeedForwardNetwork(nn.Module):
    """fc1 -> GELU (fp32, exact erf) -> sub-LN over the FFN width -> fc2 (one per expert)."""

    def __init__(self, config: Beit3Config) -> None:
        super().__init__()
        self.fc1 = nn.Linear(config.embed_dim, config.ffn_dim)
        self.fc2 = nn.Linear(config.ffn_dim, config.embed_dim)
        self.ffn_layernorm = nn.LayerNorm(config.ffn_dim, eps=config.layernorm_eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.fc1(x)
        h = F.gelu(h.float()).type_as(h)
        return self.fc2(self.ffn_layernorm(h))


class EncoderLayer(nn.Module):
    def __init__(self, config: Beit3Config) -> None:
        super().__init__()
        d = config.embed_dim
        self.self_attn = MultiheadAttention(config)
        self.self_attn_layer_norm = _multiway_layernorm(d, config.layernorm_eps)
        self.ffn = MultiwayNetwork(FeedForwardNetwork(config), FeedForwardNetwork(config))
        self.final_layer_norm = _multiway_layernorm(d, config.layernorm_eps)

    def forward(self, x: torch.Tensor, split: int, attn_mask: torch.Tensor | None) -> torch.Tensor:
        x = x + self.self_attn(self.self_attn_layer_norm(x, split), split, attn_mask)
        return x + self.ffn(self.final_layer_norm(x, split), split)


class Encoder(nn.Module):
    def __init__(self, config: Beit3Config) -> None:
        super().__init__()
        self.embed_positions = PositionalEmbeddings(config)
        self.layers = nn.ModuleList(EncoderLayer(config) for _ in range(config.num_layers))
        self.layer_norm = _multiway_layernorm(config.embed_dim, config.layernorm_eps)


class BEiT3(nn.Module):
    """BEiT-3 encoder returning the full token sequence after the final multiway LayerNorm."""

    def __init__(self, config: Beit3Config) -> None:
        super().__init__()
        self.config = config
        self.text_embed = nn.Embedding(config.vocab_size, config.embed_dim)
        self.vision_embed = VisionEmbedding(config)
        self.encoder = Encoder(config)

    def forward(self, pixel_values: torch.Tensor, input_ids: torch.Tensor,
                attention_mask: torch.Tensor | None = None, *, always_mask: bool = False) -> torch.Tensor:
        """
        pixel_values: [B or 1, 3, 224, 224] (one image is shared by all B prompts without copying it
            through the patch embedding); input_ids: [B, T] long; attention_mask: [B, T] (1 = token, 0 = pad)
            or None (no padding). Returns [B, 197 + T, D].
        always_mask: apply ``attention_mask`` even when nothing is padded (graph export: no branch on data).
        """
        bsz, num_text = input_ids.shape
        if num_text > self.config.max_text_tokens:
            raise ValueError(f'BEiT-3 takes at most {self.config.max_text_tokens} text tokens, got {num_text}')
        vision = self.vision_embed(pixel_values)  # [1|B, 197, D]
        vision = vision.expand(bsz, -1, -1)  # no-op when there is one image per prompt
        text = self.text_embed(input_ids).to(vision.dtype)  # [B, T, D]
        split = vision.shape[1]
        x = torch.cat([vision, text], dim=1)
        x = x + self.encoder.embed_positions(split, num_text).to(x.dtype)

        attn_mask = None
        if attention_mask is not None and (always_mask or not bool(attention_mask.all())):
            keep = attention_mask.to(torch.bool)  # [B, T]
            keep = torch.cat([keep.new_ones(bsz, split), keep], dim=1)  # vision tokens are never padding
            x = x * keep.unsqueeze(-1).to(x.dtype)  # torchscale zeroes padded positions
            attn_mask = keep[:, None, None, :]  # [B, 1, 1, L]

        for layer in self.encoder.layers:
            x = layer(x, split, attn_mask)
        return self.encoder.layer_norm(x, split)
