"""Configuration of an EVF-SAM / EVF-SAM2 model: architecture sizes and per-checkpoint behaviour.

An :class:`EvfSamConfig` is read from a checkpoint's ``config.json`` in one of three forms:

* the **official** form of the released checkpoints (``sam_scale`` "huge" = SAM ViT-H, "large" = SAM 2.0
  Hiera-L, "tiny" = Hiera-T; ``mm_extractor_scale`` "large"/"base"). Their behaviour (SAM-side resize, mask
  selection) is not written in the file; it is inferred as in the spec, section 7.4: a tokenizer with the
  ``[semantic]`` added token marks a multitask checkpoint (post-9d00853 code: square resize, best of 3
  masks); a SAM-2 checkpoint without it is the released ``evf-sam2`` (pre-9d00853 code: longest side then
  stretch, single mask with the stability fallback).
* the **conformance-fixture** form (``fixture_architecture`` with every size, ``fixture_behaviour``).
* **our explicit** form: the official fields plus an ``evf_sam_ros`` section holding every size and the
  behaviour (written by :meth:`EvfSamConfig.to_json`, used by tiny and trained checkpoints).

A behaviour written in the file is obeyed; ``load_model(..., behaviour=...)`` overrides it.
"""
from __future__ import annotations

import copy
import dataclasses
import json
import pathlib
from dataclasses import dataclass, field
from typing import Any, Mapping

from ..errors import ModelLoadError
from .config_parts import (ARCHITECTURES, MASK_SELECTIONS, MM_SCALES, PRESETS, SAM_RESIZE_MODES, SAM_SCALES,
                           Beit3Config, EvfSamBehaviour, HieraConfig, MaskDecoderConfig, ViTConfig,
                           default_behaviour)

__all__ = [
    'Beit3Config',
    'ViTConfig',
    'HieraConfig',
    'MaskDecoderConfig',
    'EvfSamBehaviour',
    'EvfSamConfig',
    'SAM_RESIZE_MODES',
    'MASK_SELECTIONS',
    'PRESETS',
    'CONFIG_FORMAT_VERSION',
]

CONFIG_FORMAT_VERSION = 1

@dataclass
class EvfSamConfig:
    """Everything needed to build an :class:`~evf_sam_ros.model.modeling.EvfSamModel` and run it.

    ``out_dim`` is the SAM prompt/decoder width (256 in the released models); the projection
    ``text_hidden_fcs`` maps the BEiT-3 width to it through ``projection_hidden_dim`` (default: the
    BEiT-3 width). ``sam_image_size`` is the SAM input side (1024 for the released models); the image
    embedding is ``sam_image_size / patch`` (patch 16 for the released models and always for SAM-2)
    and the low-res masks four times that on a side.
    """

    sam_kind: str = 'sam1'
    beit3: Beit3Config = field(default_factory=Beit3Config)
    vit: ViTConfig | None = None
    hiera: HieraConfig | None = None
    mask_decoder: MaskDecoderConfig = field(default_factory=MaskDecoderConfig)
    out_dim: int = 256
    projection_hidden_dim: int | None = None
    sam_image_size: int = 1024
    behaviour: EvfSamBehaviour = field(default_factory=EvfSamBehaviour)
    name: str | None = None  # preset name or where the config came from; informational

    def __post_init__(self) -> None:
        if isinstance(self.beit3, Mapping):
            self.beit3 = Beit3Config(**self.beit3)
        if isinstance(self.vit, Mapping):
            self.vit = ViTConfig(**self.vit)
        if isinstance(self.hiera, Mapping):
            self.hiera = HieraConfig(**self.hiera)
        if isinstance(self.mask_decoder, Mapping):
            self.mask_decoder = MaskDecoderConfig(**self.mask_decoder)
        if isinstance(self.behaviour, Mapping):
            self.behaviour = EvfSamBehaviour(**self.behaviour)
        if self.sam_kind not in ('sam1', 'sam2'):
            raise ValueError(f"sam_kind must be 'sam1' or 'sam2', got {self.sam_kind!r}")
        if self.sam_kind == 'sam1' and self.vit is None:
            self.vit = ViTConfig()
        if self.sam_kind == 'sam2' and self.hiera is None:
            self.hiera = HieraConfig()
        if self.sam_kind == 'sam1':
            self.hiera = None
        else:
            self.vit = None
        if self.sam_image_size % 16:
            raise ValueError(f'sam_image_size must be a multiple of 16, got {self.sam_image_size}')
        if self.sam_kind == 'sam2' and self.sam_image_size % 32:
            raise ValueError(f'SAM-2 needs sam_image_size divisible by 32, got {self.sam_image_size}')
        if self.out_dim % 8:
            raise ValueError(f'out_dim must be divisible by 8 (SAM upscaling), got {self.out_dim}')
        if self.sam_kind == 'sam1' and self.sam_image_size % self.vit.patch_size:
            raise ValueError(f'sam_image_size ({self.sam_image_size}) must be a multiple of the ViT patch size '
                             f'({self.vit.patch_size})')

    # ---- derived sizes ----------------------------------------------------------------------------
    @property
    def hidden_size(self) -> int:
        return self.beit3.embed_dim

    @property
    def is_sam2(self) -> bool:
        return self.sam_kind == 'sam2'

    @property
    def image_embedding_size(self) -> int:
        # SAM-2's Hiera always ends at stride 16; SAM-1's ViT at its patch size.
        return self.sam_image_size // (self.vit.patch_size if self.vit is not None else 16)

    @property
    def low_res_size(self) -> int:
        return 4 * self.image_embedding_size  # the mask decoder upscales the embedding 4x

    @property
    def architecture_name(self) -> str:
        return 'EvfSam2Model' if self.is_sam2 else 'EvfSamModel'

    # ---- presets ----------------------------------------------------------------------------------
    @classmethod
    def preset(cls, name: str, **overrides: Any) -> EvfSamConfig:
        """Full-size configuration of a released checkpoint: ``evf-sam``, ``evf-sam-multitask``,
        ``evf-sam2``, ``evf-sam2-multitask`` (a leading ``YxZhang/`` is accepted)."""
        key = name.split('/')[-1].lower()
        if key not in PRESETS:
            raise ValueError(f'unknown preset {name!r}; choose one of {sorted(PRESETS)}')
        values = copy.deepcopy(PRESETS[key])
        values.update(overrides)
        values.setdefault('name', key)
        return cls(**values)

    # ---- transformers configs ---------------------------------------------------------------------
    def to_hf_sam_config(self):
        """The transformers ``SamConfig`` / ``Sam2Config`` of the SAM part (image path only)."""
        dec = self.mask_decoder
        size = self.sam_image_size
        decoder_kwargs = dict(hidden_size=self.out_dim, mlp_dim=dec.mlp_dim, num_hidden_layers=dec.depth,
                              num_attention_heads=dec.num_heads,
                              attention_downsample_rate=dec.attention_downsample_rate,
                              num_multimask_outputs=dec.num_multimask_outputs, iou_head_depth=dec.iou_head_depth,
                              iou_head_hidden_dim=dec.iou_head_hidden_dim)
        if not self.is_sam2:
            from transformers import SamConfig

            # segment-anything's two-way transformer uses nn.LayerNorm's default eps (1e-5); transformers'
            # SamMaskDecoderConfig defaults to 1e-6 there (SAM-2's decoder already uses 1e-5).
            decoder_kwargs['layer_norm_eps'] = 1e-5

            vit = self.vit
            vision = dict(hidden_size=vit.embed_dim, output_channels=self.out_dim, num_hidden_layers=vit.depth,
                          num_attention_heads=vit.num_heads, image_size=size, patch_size=vit.patch_size,
                          layer_norm_eps=vit.layer_norm_eps, mlp_ratio=vit.mlp_ratio, window_size=vit.window_size,
                          global_attn_indexes=list(vit.global_attn_indexes), num_pos_feats=self.out_dim // 2)
            prompt = dict(hidden_size=self.out_dim, image_size=size, patch_size=vit.patch_size,
                          mask_input_channels=dec.mask_in_chans)
            return SamConfig(vision_config=vision, prompt_encoder_config=prompt, mask_decoder_config=decoder_kwargs)

        from transformers import Sam2Config

        h = self.hiera
        backbone = dict(model_type='sam2_hiera_det_model', hidden_size=h.embed_dim_per_stage[0],
                        num_attention_heads=h.num_heads_per_stage[0], image_size=[size, size],
                        blocks_per_stage=list(h.blocks_per_stage), embed_dim_per_stage=list(h.embed_dim_per_stage),
                        num_attention_heads_per_stage=list(h.num_heads_per_stage),
                        window_size_per_stage=list(h.window_spec), global_attention_blocks=list(h.global_att_blocks),
                        window_positional_embedding_background_size=list(h.window_pos_embed_bkg_spatial_size),
                        mlp_ratio=h.mlp_ratio, layer_norm_eps=h.layer_norm_eps)
        vision = dict(model_type='sam2_vision_model', backbone_config=backbone,
                      backbone_channel_list=list(reversed(h.embed_dim_per_stage)),
                      backbone_feature_sizes=[[size // 4] * 2, [size // 8] * 2, [size // 16] * 2],
                      fpn_hidden_size=self.out_dim)
        prompt = dict(hidden_size=self.out_dim, image_size=size, patch_size=16, mask_input_channels=dec.mask_in_chans)
        # Selection is done by EvfSamModel itself, so the decoder's own stability switch stays off.
        decoder_kwargs.update(dynamic_multimask_via_stability=False,
                              dynamic_multimask_stability_delta=self.behaviour.stability_delta,
                              dynamic_multimask_stability_thresh=self.behaviour.stability_thresh)
        return Sam2Config(vision_config=vision, prompt_encoder_config=prompt, mask_decoder_config=decoder_kwargs)

    # ---- (de)serialisation ------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """Our explicit form (the ``evf_sam_ros`` section of ``config.json``)."""
        d: dict[str, Any] = {
            'format_version': CONFIG_FORMAT_VERSION,
            'sam_kind': self.sam_kind,
            'sam_image_size': self.sam_image_size,
            'out_dim': self.out_dim,
            'projection_hidden_dim': self.projection_hidden_dim,
            'beit3': dataclasses.asdict(self.beit3),
            'mask_decoder': dataclasses.asdict(self.mask_decoder),
            'behaviour': dataclasses.asdict(self.behaviour),
        }
        if self.vit is not None:
            d['vit'] = _jsonable(dataclasses.asdict(self.vit))
        if self.hiera is not None:
            d['hiera'] = _jsonable(dataclasses.asdict(self.hiera))
        if self.name:
            d['name'] = self.name
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> EvfSamConfig:
        d = dict(d)
        version = d.pop('format_version', CONFIG_FORMAT_VERSION)
        if version > CONFIG_FORMAT_VERSION:
            raise ValueError(f'config format_version {version} is newer than this code understands '
                             f'({CONFIG_FORMAT_VERSION}); update evf_sam_ros')
        return cls(**d)

    def to_official_json_dict(self, torch_dtype: str = 'float32') -> dict[str, Any]:
        """``config.json`` content: the official fields plus our explicit ``evf_sam_ros`` section."""
        return {
            'architectures': [self.architecture_name],
            'model_type': 'evf',
            'hidden_size': self.hidden_size,
            'out_dim': self.out_dim,
            'mm_extractor_scale': 'custom',
            'sam_scale': 'custom',
            'pad_token_id': 1,
            'bos_token_id': 0,
            'eos_token_id': 2,
            'tie_word_embeddings': False,
            'torch_dtype': torch_dtype,
            'evf_sam_ros': self.to_dict(),
        }

    def to_json(self, path: str | pathlib.Path, torch_dtype: str = 'float32') -> pathlib.Path:
        path = pathlib.Path(path)
        if path.is_dir():
            path = path / 'config.json'
        path.write_text(json.dumps(self.to_official_json_dict(torch_dtype), indent=2) + '\n')
        return path

    @classmethod
    def from_json_dict(cls, raw: Mapping[str, Any], *, multitask_tokenizer: bool | None = None,
                       source: str = 'config.json') -> EvfSamConfig:
        """Parse any of the three ``config.json`` forms (see the module docstring).

        ``multitask_tokenizer``: whether the checkpoint's tokenizer has ``[semantic]`` (used to infer the
        behaviour of official checkpoints and the multitask flag of fixtures).
        """
        try:
            if 'evf_sam_ros' in raw:
                cfg = cls.from_dict(raw['evf_sam_ros'])
            elif 'fixture_architecture' in raw:
                cfg = _from_fixture(raw, multitask_tokenizer)
            else:
                cfg = _from_official(raw, multitask_tokenizer)
        except ModelLoadError:
            raise
        except (KeyError, TypeError, ValueError) as exc:
            raise ModelLoadError(f'{source}: cannot build an EVF-SAM configuration from it ({exc}). Use a '
                                 'config.json of a released EVF-SAM checkpoint, of the conformance fixtures, '
                                 'or one written by evf_sam_ros (EvfSamConfig.to_json).') from exc
        if cfg.name is None:
            cfg.name = source
        return cfg

    @classmethod
    def from_checkpoint_dir(cls, directory: str | pathlib.Path) -> EvfSamConfig:
        directory = pathlib.Path(directory)
        path = directory / 'config.json'
        if not path.is_file():
            raise ModelLoadError(f'{directory}: no config.json. A checkpoint directory needs config.json, the '
                                 'weights (model.safetensors or pytorch_model.bin) and the tokenizer files; '
                                 'copy the complete checkpoint (e.g. from huggingface.co/YxZhang/evf-sam2).')
        try:
            raw = json.loads(path.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ModelLoadError(f'{path}: not valid JSON ({exc}); restore the file from the checkpoint.') from exc
        if not isinstance(raw, dict):
            raise ModelLoadError(f'{path}: expected a JSON object; restore the file from the checkpoint.')
        return cls.from_json_dict(raw, multitask_tokenizer=tokenizer_has_semantic_token(directory),
                                  source=str(directory))


def _jsonable(d: dict[str, Any]) -> dict[str, Any]:
    return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}


def tokenizer_has_semantic_token(directory: str | pathlib.Path) -> bool:
    """Whether the tokenizer files of a checkpoint define the ``[semantic]`` added token."""
    directory = pathlib.Path(directory)
    for name in ('added_tokens.json', 'tokenizer_config.json', 'tokenizer.json'):
        path = directory / name
        if path.is_file():
            try:
                if '[semantic]' in path.read_text(errors='replace'):
                    return True
            except OSError:
                pass
    return False


def _official_sam_kind(raw: Mapping[str, Any]) -> str:
    archs = raw.get('architectures') or []
    arch = archs[0] if archs else None
    scale = raw.get('sam_scale')
    kind_from_arch = ARCHITECTURES.get(arch) if arch else None
    if arch and kind_from_arch is None:
        raise ModelLoadError(f'unknown architecture {arch!r} in config.json; supported: '
                             f'{sorted(ARCHITECTURES)} (EVF-SAM with SAM ViT-H, EVF-SAM2 with SAM-2 Hiera). '
                             'EfficientSAM variants ("effi") were never released and are not supported.')
    if kind_from_arch is None:
        if scale not in SAM_SCALES:
            raise ModelLoadError(f'config.json names neither a known architecture ({sorted(ARCHITECTURES)}) '
                                 f'nor a known sam_scale ({sorted(SAM_SCALES)}); got architectures={archs!r}, '
                                 f'sam_scale={scale!r}. Is this an EVF-SAM checkpoint?')
        kind_from_arch = SAM_SCALES[scale][0]
    return kind_from_arch


def _from_official(raw: Mapping[str, Any], multitask: bool | None) -> EvfSamConfig:
    kind = _official_sam_kind(raw)
    scale = raw.get('sam_scale', 'huge' if kind == 'sam1' else 'large')
    if scale not in SAM_SCALES or SAM_SCALES[scale][0] != kind:
        allowed = sorted(s for s, (k, _) in SAM_SCALES.items() if k == kind)
        raise ModelLoadError(f'unknown sam_scale {scale!r} for {kind.upper()} in config.json; supported: {allowed}. '
                             'A custom-size checkpoint needs the explicit evf_sam_ros section (EvfSamConfig.to_json).')
    mm_scale = raw.get('mm_extractor_scale', 'large')
    if mm_scale not in MM_SCALES:
        raise ModelLoadError(f'unknown mm_extractor_scale {mm_scale!r} in config.json; supported: {sorted(MM_SCALES)}')
    beit3 = Beit3Config(**MM_SCALES[mm_scale])
    if 'hidden_size' in raw and int(raw['hidden_size']) != beit3.embed_dim:
        raise ModelLoadError(f'config.json: hidden_size {raw["hidden_size"]} does not match the BEiT-3 '
                             f'{mm_scale} width {beit3.embed_dim}; fix hidden_size or mm_extractor_scale.')
    arch_sizes = SAM_SCALES[scale][1]
    multitask = bool(multitask)
    return EvfSamConfig(
        sam_kind=kind, beit3=beit3,
        vit=ViTConfig(**arch_sizes) if kind == 'sam1' else None,
        hiera=HieraConfig(**arch_sizes) if kind == 'sam2' else None,
        out_dim=int(raw.get('out_dim', 256)),
        behaviour=default_behaviour(kind, multitask),
    )


def _from_fixture(raw: Mapping[str, Any], multitask: bool | None) -> EvfSamConfig:
    fa = raw['fixture_architecture']
    kind = _official_sam_kind(raw)
    enc = fa['beit3_encoder_config']
    beit3 = Beit3Config(embed_dim=enc['encoder_embed_dim'], num_layers=enc['encoder_layers'],
                        num_heads=enc['encoder_attention_heads'], ffn_dim=enc['encoder_ffn_embed_dim'],
                        vocab_size=enc['vocab_size'], img_size=enc.get('img_size', 224),
                        patch_size=enc.get('patch_size', 16), in_chans=enc.get('in_chans', 3),
                        max_source_positions=enc.get('max_source_positions', 1024),
                        layernorm_eps=enc.get('layernorm_eps', 1e-5))
    proj = fa.get('projection', {})
    out_dim = int(fa.get('prompt_embed_dim', raw.get('out_dim', 256)))
    sam = fa['sam']
    vit = hiera = None
    if kind == 'sam1':
        ie = sam['image_encoder']
        vit = ViTConfig(embed_dim=ie['embed_dim'], depth=ie['depth'], num_heads=ie['num_heads'],
                        global_attn_indexes=ie['global_attn_indexes'], window_size=ie['window_size'],
                        mlp_ratio=ie.get('mlp_ratio', 4.0), patch_size=ie.get('patch_size', 16),
                        layer_norm_eps=ie.get('layer_norm_eps', 1e-6))
        md = sam['mask_decoder']
        pe = sam['prompt_encoder']
        image_size = int(sam.get('image_size', ie.get('img_size', 1024)))
    else:
        hyd = sam['hydra_model_config']
        trunk = hyd['image_encoder']['trunk']
        derived = sam['trunk_derived']
        hiera = HieraConfig(embed_dim_per_stage=derived['embed_dim_per_stage'],
                            num_heads_per_stage=derived['num_heads_per_stage'],
                            blocks_per_stage=derived['blocks_per_stage'],
                            global_att_blocks=trunk.get('global_att_blocks', ()),
                            window_spec=trunk['window_spec'],
                            window_pos_embed_bkg_spatial_size=trunk['window_pos_embed_bkg_spatial_size'],
                            mlp_ratio=derived.get('mlp_ratio', 4.0), layer_norm_eps=derived.get('layer_norm_eps', 1e-6))
        md = sam['mask_decoder_rebuilt']
        pe = sam['prompt_encoder']
        image_size = int(sam.get('image_size', hyd.get('image_size', 1024)))
    tr = md['transformer']
    decoder = MaskDecoderConfig(depth=tr['depth'], num_heads=tr['num_heads'], mlp_dim=tr['mlp_dim'],
                                attention_downsample_rate=tr.get('attention_downsample_rate', 2),
                                num_multimask_outputs=md.get('num_multimask_outputs', 3),
                                iou_head_depth=md.get('iou_head_depth', 3),
                                iou_head_hidden_dim=md.get('iou_head_hidden_dim', 256),
                                mask_in_chans=pe.get('mask_in_chans', 16))
    fb = raw.get('fixture_behaviour') or {}
    resize = fb.get('sam_resize') or fb.get('sam2_resize')
    selection = fb.get('sam2_selection')
    if selection is None and 'multimask_output' in fb and kind == 'sam1':
        selection = 'best_of_3' if fb['multimask_output'] else 'single'
    base = default_behaviour(kind, bool(multitask))
    behaviour = base.replace({'sam_resize': resize, 'mask_selection': selection})
    return EvfSamConfig(sam_kind=kind, beit3=beit3, vit=vit, hiera=hiera, mask_decoder=decoder, out_dim=out_dim,
                        projection_hidden_dim=int(proj.get('hidden_size', beit3.embed_dim)),
                        sam_image_size=image_size, behaviour=behaviour)
