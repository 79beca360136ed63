"""The parts of an EVF-SAM configuration (BEiT-3, SAM ViT / Hiera, mask decoder sizes; the per-checkpoint
behaviour) and the presets of the released checkpoints. :class:`~evf_sam_ros.model.config.EvfSamConfig`
puts them together and reads them from a checkpoint."""
from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass
from typing import Any, Mapping

SAM_RESIZE_MODES = ('longest_side_pad', 'square', 'longest_then_stretch')
MASK_SELECTIONS = ('single', 'stability_single', 'best_of_3')

# Names used by the conformance fixtures, the spec and a few natural spellings.
_RESIZE_ALIASES = {
    'longest_side_pad': 'longest_side_pad',
    'longest_side': 'longest_side_pad',
    'pad': 'longest_side_pad',
    'square': 'square',
    'square_uint8_bilinear': 'square',
    'longest_then_stretch': 'longest_then_stretch',
    'stretch': 'longest_then_stretch',
}
_SELECTION_ALIASES = {
    'single': 'single',
    'token0': 'single',
    'single_mask': 'single',
    'stability_single': 'stability_single',
    'stability': 'stability_single',
    'best_of_3': 'best_of_3',
    'best3': 'best_of_3',
    'multimask_best': 'best_of_3',
}


@dataclass
class Beit3Config:
    """torchscale ``EncoderConfig`` values EVF uses (multiway, sub-LN, no relative bias, final LN)."""

    embed_dim: int = 1024
    num_layers: int = 24
    num_heads: int = 16
    ffn_dim: int = 4096
    vocab_size: int = 64010
    img_size: int = 224
    patch_size: int = 16
    in_chans: int = 3
    max_source_positions: int = 1024
    layernorm_eps: float = 1e-5

    @property
    def num_patches(self) -> int:
        return (self.img_size // self.patch_size) ** 2

    @property
    def num_vision_tokens(self) -> int:
        return self.num_patches + 1  # [CLS] + patches

    @property
    def max_text_tokens(self) -> int:
        # Text positions start at row 2 of the text table (fairseq offset), hence 1024 - 2.
        return self.max_source_positions - 2


@dataclass
class ViTConfig:
    """SAM-1 image encoder (``ImageEncoderViT``)."""

    embed_dim: int = 1280
    depth: int = 32
    num_heads: int = 16
    global_attn_indexes: tuple[int, ...] = (7, 15, 23, 31)
    window_size: int = 14
    mlp_ratio: float = 4.0
    patch_size: int = 16
    layer_norm_eps: float = 1e-6

    def __post_init__(self) -> None:
        self.global_attn_indexes = tuple(int(i) for i in self.global_attn_indexes)
        self.mlp_ratio = float(self.mlp_ratio)
        self.layer_norm_eps = float(self.layer_norm_eps)


@dataclass
class HieraConfig:
    """SAM-2 image encoder (Hiera trunk + FPN neck with ``scalp=1``)."""

    embed_dim_per_stage: tuple[int, ...] = (144, 288, 576, 1152)
    num_heads_per_stage: tuple[int, ...] = (2, 4, 8, 16)
    blocks_per_stage: tuple[int, ...] = (2, 6, 36, 4)
    global_att_blocks: tuple[int, ...] = (23, 33, 43)
    window_spec: tuple[int, ...] = (8, 4, 16, 8)
    window_pos_embed_bkg_spatial_size: tuple[int, int] = (7, 7)
    mlp_ratio: float = 4.0
    layer_norm_eps: float = 1e-6

    def __post_init__(self) -> None:
        for name in ('embed_dim_per_stage', 'num_heads_per_stage', 'blocks_per_stage', 'global_att_blocks',
                     'window_spec', 'window_pos_embed_bkg_spatial_size'):
            setattr(self, name, tuple(int(v) for v in getattr(self, name)))
        self.mlp_ratio = float(self.mlp_ratio)
        self.layer_norm_eps = float(self.layer_norm_eps)
        if not (len(self.embed_dim_per_stage) == len(self.num_heads_per_stage) == len(self.blocks_per_stage)
                == len(self.window_spec) == 4):
            raise ValueError('HieraConfig: embed_dim_per_stage, num_heads_per_stage, blocks_per_stage and '
                             'window_spec must each have 4 entries (one per stage)')
        # transformers' Hiera (like the original) cannot run a global block that opens a pooling stage.
        stage_starts = {sum(self.blocks_per_stage[:i]) for i in range(1, 4)}
        bad = sorted(stage_starts & set(self.global_att_blocks))
        if bad:
            raise ValueError(f'HieraConfig: global attention blocks {bad} open a pooling stage; move them')


@dataclass
class MaskDecoderConfig:
    """SAM mask decoder (two-way transformer) and prompt-encoder sizes; the width is ``out_dim``."""

    depth: int = 2
    num_heads: int = 8
    mlp_dim: int = 2048
    attention_downsample_rate: int = 2
    num_multimask_outputs: int = 3
    iou_head_depth: int = 3
    iou_head_hidden_dim: int = 256
    mask_in_chans: int = 16


@dataclass
class EvfSamBehaviour:
    """Per-checkpoint inference behaviour (spec sections 6.2, 7.2-7.4).

    sam_resize:
        ``longest_side_pad``: longest side to ``sam_image_size`` (PIL bilinear), normalise, zero-pad
        (SAM-1; post-processing goes through the padded square and crops).
        ``square``: uint8 bilinear resize straight to a square (EVF-SAM2 at/after 9d00853).
        ``longest_then_stretch``: longest side (PIL), normalise, float bilinear stretch to the square
        (released evf-sam2, before 9d00853).
    mask_selection:
        ``single``: mask token 0 (EVF-SAM, ``multimask_output=False``).
        ``stability_single``: token 0 unless its stability score is below the threshold, else the best
        predicted IoU among tokens 1..3 (released evf-sam2).
        ``best_of_3``: best predicted IoU among tokens 1..3 (multitask EVF-SAM2).
    multitask:
        the tokenizer knows ``[semantic]`` (prompts like ``"[semantic] sky"`` are meaningful).
    """

    sam_resize: str = 'longest_side_pad'
    mask_selection: str = 'single'
    multitask: bool = False
    stability_delta: float = 0.05
    stability_thresh: float = 0.98

    def __post_init__(self) -> None:
        self.sam_resize = _normalise_choice(self.sam_resize, _RESIZE_ALIASES, 'sam_resize')
        self.mask_selection = _normalise_choice(self.mask_selection, _SELECTION_ALIASES, 'mask_selection')
        self.multitask = bool(self.multitask)

    def replace(self, overrides: Mapping[str, Any] | EvfSamBehaviour | None) -> EvfSamBehaviour:
        """A copy with the given fields replaced (``sam2_selection``/``sam2_resize`` accepted as aliases)."""
        if overrides is None:
            return copy.copy(self)
        if isinstance(overrides, EvfSamBehaviour):
            return copy.copy(overrides)
        values = dataclasses.asdict(self)
        for key, value in dict(overrides).items():
            key = {'sam2_selection': 'mask_selection', 'sam2_resize': 'sam_resize', 'selection': 'mask_selection',
                   'resize': 'sam_resize'}.get(key, key)
            if key not in values:
                raise ValueError(f'unknown behaviour field {key!r}; known: {sorted(values)}')
            if value is not None:
                values[key] = value
        return EvfSamBehaviour(**values)


def _normalise_choice(value: str, aliases: Mapping[str, str], what: str) -> str:
    key = str(value).strip().lower()
    if key not in aliases:
        raise ValueError(f'unknown {what} {value!r}; choose one of {sorted(set(aliases.values()))}')
    return aliases[key]


# ---- presets of the released checkpoints --------------------------------------------------------
_BEIT3_LARGE = dict(embed_dim=1024, num_layers=24, num_heads=16, ffn_dim=4096)
_BEIT3_BASE = dict(embed_dim=768, num_layers=12, num_heads=12, ffn_dim=3072)
_VIT_H = dict(embed_dim=1280, depth=32, num_heads=16, global_attn_indexes=(7, 15, 23, 31), window_size=14)
_HIERA_L = dict(embed_dim_per_stage=(144, 288, 576, 1152), num_heads_per_stage=(2, 4, 8, 16),
                blocks_per_stage=(2, 6, 36, 4), global_att_blocks=(23, 33, 43), window_spec=(8, 4, 16, 8),
                window_pos_embed_bkg_spatial_size=(7, 7))
_HIERA_T = dict(embed_dim_per_stage=(96, 192, 384, 768), num_heads_per_stage=(1, 2, 4, 8),
                blocks_per_stage=(1, 2, 7, 2), global_att_blocks=(5, 7, 9), window_spec=(8, 4, 14, 7),
                window_pos_embed_bkg_spatial_size=(7, 7))

_BEHAVIOUR_SAM1 = dict(sam_resize='longest_side_pad', mask_selection='single')
_BEHAVIOUR_SAM2_RELEASED = dict(sam_resize='longest_then_stretch', mask_selection='stability_single')
_BEHAVIOUR_SAM2_MULTITASK = dict(sam_resize='square', mask_selection='best_of_3')

PRESETS: dict[str, dict[str, Any]] = {
    'evf-sam': dict(sam_kind='sam1', beit3=_BEIT3_LARGE, vit=_VIT_H, behaviour=dict(_BEHAVIOUR_SAM1, multitask=False)),
    'evf-sam-multitask': dict(sam_kind='sam1', beit3=_BEIT3_LARGE, vit=_VIT_H,
                              behaviour=dict(_BEHAVIOUR_SAM1, multitask=True)),
    'evf-sam2': dict(sam_kind='sam2', beit3=_BEIT3_LARGE, hiera=_HIERA_L,
                     behaviour=dict(_BEHAVIOUR_SAM2_RELEASED, multitask=False)),
    'evf-sam2-multitask': dict(sam_kind='sam2', beit3=_BEIT3_LARGE, hiera=_HIERA_L,
                               behaviour=dict(_BEHAVIOUR_SAM2_MULTITASK, multitask=True)),
}
SAM_SCALES = {'huge': ('sam1', _VIT_H), 'large': ('sam2', _HIERA_L), 'tiny': ('sam2', _HIERA_T)}
MM_SCALES = {'large': _BEIT3_LARGE, 'base': _BEIT3_BASE}
ARCHITECTURES = {'EvfSamModel': 'sam1', 'EvfSam2Model': 'sam2'}


def default_behaviour(sam_kind: str, multitask: bool) -> EvfSamBehaviour:
    """Behaviour inferred for an official checkpoint (spec 7.4)."""
    if sam_kind == 'sam1':
        return EvfSamBehaviour(**_BEHAVIOUR_SAM1, multitask=multitask)
    if multitask:
        return EvfSamBehaviour(**_BEHAVIOUR_SAM2_MULTITASK, multitask=True)
    return EvfSamBehaviour(**_BEHAVIOUR_SAM2_RELEASED, multitask=False)
