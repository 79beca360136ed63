"""State-dict key mapping between the released EVF-SAM layout and :class:`EvfSamModel`.

Official layout (the released checkpoints, spec section 2)::

    visual_model.*        segment-anything ``Sam`` (EVF-SAM) or sam2 ``SAM2Base`` (EVF-SAM2)
    mm_extractor.beit3.*  torchscale BEiT-3
    text_hidden_fcs.0.{0,2}.{weight,bias}

Ours::

    sam.*                 transformers ``SamModel`` / ``Sam2Model``
    beit3.*               :class:`~evf_sam_ros.model.beit3.BEiT3` (torchscale names, prefix swap only)
    text_hidden_fcs.*     identical

The SAM rules are written in one direction (ours -> official, transformers-sam.md section 2 read
backwards) and the other direction is the inverse table built from the model's own keys, so the two
directions cannot disagree. Two entries are not one-to-one:

* the prompt encoder's random-Fourier matrix exists twice in transformers (``shared_image_embedding`` and
  ``prompt_encoder.shared_embedding``); both are filled from the one official tensor and exported once;
* SAM-2's ``prompt_encoder.point_embed.weight`` [4, C] is the concatenation of the official
  ``sam_prompt_encoder.point_embeddings.{0..3}.weight`` [1, C].

SAM-2 video/memory tensors (``memory_attention``, ``memory_encoder``, ``mask_downsample``, ``obj_ptr_proj``,
``maskmem_tpos_enc``, ``no_mem_pos_enc``, ``no_obj_ptr`` ...) are not used on images: they are ignored on load
and **not written** on export, so an exported EVF-SAM2 file holds the image path only (it loads here and
into the official image inference code with ``strict=False``, which is how EVF loads checkpoints).
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Iterable, Mapping

import torch

from .config import EvfSamConfig

__all__ = [
    'OFFICIAL_BEIT3_PREFIX',
    'OFFICIAL_SAM_PREFIX',
    'SAM2_IGNORED_PREFIXES',
    'KeyMapping',
    'build_key_mapping',
    'ours_to_official_key',
    'is_ignored_official_key',
]

OFFICIAL_BEIT3_PREFIX = 'mm_extractor.beit3.'
OFFICIAL_SAM_PREFIX = 'visual_model.'
OURS_BEIT3_PREFIX = 'beit3.'
OURS_SAM_PREFIX = 'sam.'

# Official keys that an image-only model does not use (SAM-2 video path; SAM-1 pixel buffers if present).
SAM2_IGNORED_PREFIXES = tuple(OFFICIAL_SAM_PREFIX + p for p in (
    'memory_attention.', 'memory_encoder.', 'mask_downsample.', 'obj_ptr_proj.', 'obj_ptr_tpos_proj.',
    'maskmem_tpos_enc', 'no_mem_pos_enc', 'no_obj_ptr', 'no_obj_embed_spatial',
))
SAM1_IGNORED_KEYS = (OFFICIAL_SAM_PREFIX + 'pixel_mean', OFFICIAL_SAM_PREFIX + 'pixel_std')


def is_ignored_official_key(key: str, sam_kind: str) -> bool:
    if key in SAM1_IGNORED_KEYS:
        return True
    return sam_kind == 'sam2' and key.startswith(SAM2_IGNORED_PREFIXES)


# ---- transformers -> official, SAM part (keys relative to ``sam.`` / ``visual_model.``) ------------

def _decoder_rules(ours: str, official: str, depth_iou: int, sam2: bool) -> list[tuple]:
    d = rf'^{ours}\.'
    rules: list[tuple] = [
        (rf'{d}transformer\.layers\.(\d+)\.layer_norm(\d)\.', rf'{official}.transformer.layers.\1.norm\2.'),
        (rf'{d}transformer\.layer_norm_final_attn\.', rf'{official}.transformer.norm_final_attn.'),
        (rf'{d}upscale_conv1\.', rf'{official}.output_upscaling.0.'),
        (rf'{d}upscale_layer_norm\.', rf'{official}.output_upscaling.1.'),
        (rf'{d}upscale_conv2\.', rf'{official}.output_upscaling.3.'),
    ]
    if sam2:
        rules += [
            (rf'{d}transformer\.(layers\.\d+\.\w+|final_attn_token_to_image)\.o_proj\.',
             rf'{official}.transformer.\1.out_proj.'),
            (rf'{d}transformer\.layers\.(\d+)\.mlp\.proj_in\.', rf'{official}.transformer.layers.\1.mlp.layers.0.'),
            (rf'{d}transformer\.layers\.(\d+)\.mlp\.proj_out\.', rf'{official}.transformer.layers.\1.mlp.layers.1.'),
        ]
    for head, depth in (('iou_prediction_head', depth_iou), ('pred_obj_score_head', 3)):
        rules += [(rf'{d}{head}\.proj_in\.', f'{official}.{head}.layers.0.'),
                  (rf'{d}{head}\.proj_out\.', f'{official}.{head}.layers.{depth - 1}.'),
                  (rf'{d}{head}\.layers\.(\d+)\.', lambda m, h=head: f'{official}.{h}.layers.{int(m.group(1)) + 1}.')]
    rules += [
        (rf'{d}output_hypernetworks_mlps\.(\d+)\.proj_in\.', rf'{official}.output_hypernetworks_mlps.\1.layers.0.'),
        (rf'{d}output_hypernetworks_mlps\.(\d+)\.proj_out\.', rf'{official}.output_hypernetworks_mlps.\1.layers.2.'),
        (rf'{d}output_hypernetworks_mlps\.(\d+)\.layers\.(\d+)\.',
         lambda m: f'{official}.output_hypernetworks_mlps.{m.group(1)}.layers.{int(m.group(2)) + 1}.'),
        (rf'{d}', f'{official}.'),  # everything else keeps its name
    ]
    return rules


def _prompt_encoder_rules(ours: str, official: str) -> list[tuple]:
    d = rf'^{ours}\.'
    return [
        (rf'{d}shared_embedding\.positional_embedding$', f'{official}.pe_layer.positional_encoding_gaussian_matrix'),
        (rf'{d}point_embed\.(\d+)\.', rf'{official}.point_embeddings.\1.'),
        (rf'{d}mask_embed\.conv1\.', f'{official}.mask_downscaling.0.'),
        (rf'{d}mask_embed\.layer_norm1\.', f'{official}.mask_downscaling.1.'),
        (rf'{d}mask_embed\.conv2\.', f'{official}.mask_downscaling.3.'),
        (rf'{d}mask_embed\.layer_norm2\.', f'{official}.mask_downscaling.4.'),
        (rf'{d}mask_embed\.conv3\.', f'{official}.mask_downscaling.6.'),
        (rf'{d}', f'{official}.'),
    ]


def _sam1_rules(config: EvfSamConfig) -> list[tuple]:
    return [
        (r'^vision_encoder\.patch_embed\.projection\.', 'image_encoder.patch_embed.proj.'),
        (r'^vision_encoder\.layers\.(\d+)\.layer_norm(\d)\.', r'image_encoder.blocks.\1.norm\2.'),
        (r'^vision_encoder\.layers\.(\d+)\.', r'image_encoder.blocks.\1.'),
        (r'^vision_encoder\.neck\.conv1\.', 'image_encoder.neck.0.'),
        (r'^vision_encoder\.neck\.layer_norm1\.', 'image_encoder.neck.1.'),
        (r'^vision_encoder\.neck\.conv2\.', 'image_encoder.neck.2.'),
        (r'^vision_encoder\.neck\.layer_norm2\.', 'image_encoder.neck.3.'),
        (r'^vision_encoder\.', 'image_encoder.'),
        *_prompt_encoder_rules('prompt_encoder', 'prompt_encoder'),
        *_decoder_rules('mask_decoder', 'mask_decoder', config.mask_decoder.iou_head_depth, sam2=False),
    ]


def _sam2_rules(config: EvfSamConfig) -> list[tuple]:
    return [
        (r'^vision_encoder\.backbone\.patch_embed\.projection\.', 'image_encoder.trunk.patch_embed.proj.'),
        (r'^vision_encoder\.backbone\.blocks\.(\d+)\.layer_norm(\d)\.', r'image_encoder.trunk.blocks.\1.norm\2.'),
        (r'^vision_encoder\.backbone\.blocks\.(\d+)\.mlp\.proj_in\.', r'image_encoder.trunk.blocks.\1.mlp.layers.0.'),
        (r'^vision_encoder\.backbone\.blocks\.(\d+)\.mlp\.proj_out\.', r'image_encoder.trunk.blocks.\1.mlp.layers.1.'),
        (r'^vision_encoder\.backbone\.', 'image_encoder.trunk.'),
        (r'^vision_encoder\.neck\.convs\.(\d+)\.(weight|bias)$', r'image_encoder.neck.convs.\1.conv.\2'),
        (r'^no_memory_embedding$', 'no_mem_embed'),
        *_prompt_encoder_rules('prompt_encoder', 'sam_prompt_encoder'),
        *_decoder_rules('mask_decoder', 'sam_mask_decoder', config.mask_decoder.iou_head_depth, sam2=True),
    ]


_RULE_CACHE: dict[tuple, list[tuple[re.Pattern, object]]] = {}


def _compiled_rules(config: EvfSamConfig) -> list[tuple[re.Pattern, object]]:
    cache_key = (config.sam_kind, config.mask_decoder.iou_head_depth)
    if cache_key not in _RULE_CACHE:
        rules = _sam2_rules(config) if config.is_sam2 else _sam1_rules(config)
        _RULE_CACHE[cache_key] = [(re.compile(p), r) for p, r in rules]
    return _RULE_CACHE[cache_key]


# Keys of ours that are not exported (duplicates) or need tensor surgery.
_DUPLICATE_PE = 'sam.shared_image_embedding.positional_embedding'
_SAM2_POINT_EMBED = 'sam.prompt_encoder.point_embed.weight'


def ours_to_official_key(key: str, config: EvfSamConfig) -> str | None:
    """Official name of one of our state-dict keys (None: not exported, i.e. the duplicated PE matrix)."""
    if key.startswith(OURS_BEIT3_PREFIX):
        return OFFICIAL_BEIT3_PREFIX + key[len(OURS_BEIT3_PREFIX):]
    if key.startswith('text_hidden_fcs.'):
        return key
    if key == _DUPLICATE_PE:
        return None
    if not key.startswith(OURS_SAM_PREFIX):
        raise KeyError(f'no official name for {key!r}')
    rel = key[len(OURS_SAM_PREFIX):]
    for pattern, repl in _compiled_rules(config):
        new, n = pattern.subn(repl, rel, count=1)
        if n:
            return OFFICIAL_SAM_PREFIX + new
    return OFFICIAL_SAM_PREFIX + rel


@dataclass
class KeyMapping:
    """Both directions for one model: one-to-one names plus the two special cases."""

    config: EvfSamConfig
    ours_to_official: dict[str, str] = field(default_factory=dict)
    official_to_ours: dict[str, list[str]] = field(default_factory=dict)
    # SAM-2: our [N, C] point_embed <- official point_embeddings.{i}.weight [1, C]
    concat_sources: dict[str, list[str]] = field(default_factory=dict)

    def official_keys(self) -> set[str]:
        keys = set(self.official_to_ours)
        for sources in self.concat_sources.values():
            keys.update(sources)
        return keys

    # ---- official -> ours -------------------------------------------------------------------------
    def convert_official(self, official: Mapping[str, torch.Tensor]
                         ) -> tuple[dict[str, torch.Tensor], list[str], list[str]]:
        """Rename an official state dict. Returns (ours, unexpected official keys, ignored official keys).

        Missing keys are whatever of ours is absent from the result; shapes are not checked here.
        """
        ours: dict[str, torch.Tensor] = {}
        unexpected: list[str] = []
        ignored: list[str] = []
        concat_lookup = {src: (dst, i) for dst, srcs in self.concat_sources.items() for i, src in enumerate(srcs)}
        concat_parts: dict[str, dict[int, torch.Tensor]] = {}
        for key, tensor in official.items():
            if key in self.official_to_ours:
                for dst in self.official_to_ours[key]:
                    ours[dst] = tensor
            elif key in concat_lookup:
                dst, i = concat_lookup[key]
                concat_parts.setdefault(dst, {})[i] = tensor
            elif is_ignored_official_key(key, self.config.sam_kind):
                ignored.append(key)
            else:
                unexpected.append(key)
        for dst, parts in concat_parts.items():
            n = len(self.concat_sources[dst])
            if len(parts) == n:  # an incomplete set stays missing and is reported as such
                ours[dst] = torch.cat([parts[i].reshape(1, -1) for i in range(n)], dim=0)
        return ours, unexpected, ignored

    def missing_official_keys(self, ours_missing: Iterable[str]) -> list[str]:
        """Official names of our missing keys (for error messages)."""
        out = []
        for key in ours_missing:
            if key in self.concat_sources:
                out.extend(self.concat_sources[key])
            elif key in self.ours_to_official:
                out.append(self.ours_to_official[key])
            elif key == _DUPLICATE_PE:
                out.append(self.ours_to_official.get('sam.prompt_encoder.shared_embedding.positional_embedding', key))
            else:
                out.append(key)
        return sorted(set(out))

    # ---- ours -> official -------------------------------------------------------------------------
    def convert_ours(self, ours: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        official: dict[str, torch.Tensor] = {}
        for key, tensor in ours.items():
            if key in self.concat_sources:
                for i, src in enumerate(self.concat_sources[key]):
                    official[src] = tensor[i:i + 1].clone()
            elif key in self.ours_to_official:
                official[self.ours_to_official[key]] = tensor
        return official


def build_key_mapping(our_keys: Iterable[str], config: EvfSamConfig,
                      shapes: Mapping[str, tuple[int, ...]] | None = None) -> KeyMapping:
    """Build the mapping for a model whose state-dict keys are ``our_keys``.

    ``shapes`` (ours) is needed for SAM-2's point embedding split (its number of rows).
    """
    mapping = KeyMapping(config)
    our_keys = list(our_keys)
    for key in our_keys:
        if config.is_sam2 and key == _SAM2_POINT_EMBED:
            rows = shapes[key][0] if shapes and key in shapes else 4
            base = OFFICIAL_SAM_PREFIX + 'sam_prompt_encoder.point_embeddings'
            mapping.concat_sources[key] = [f'{base}.{i}.weight' for i in range(rows)]
            continue
        official = ours_to_official_key(key, config)
        if official is None:
            continue
        if official in mapping.official_to_ours:
            raise RuntimeError(f'key mapping collision: {key!r} and {mapping.official_to_ours[official]} '
                               f'-> {official!r}')
        mapping.ours_to_official[key] = official
        mapping.official_to_ours[official] = [key]
    if _DUPLICATE_PE in our_keys:
        src = 'sam.prompt_encoder.shared_embedding.positional_embedding'
        official = mapping.ours_to_official.get(src)
        if official is None:
            # Sam2's prompt encoder may not hold its own copy: the shared one is then the only one.
            official = OFFICIAL_SAM_PREFIX + ('sam_prompt_encoder' if config.is_sam2 else 'prompt_encoder') \
                + '.pe_layer.positional_encoding_gaussian_matrix'
            mapping.ours_to_official[_DUPLICATE_PE] = official
            mapping.official_to_ours[official] = [_DUPLICATE_PE]
        else:
            mapping.official_to_ours[official].append(_DUPLICATE_PE)
    return mapping
