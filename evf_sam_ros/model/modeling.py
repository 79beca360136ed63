"""EVF-SAM / EVF-SAM2 model: BEiT-3 early fusion -> projection -> one SAM prompt token -> SAM mask decoder.

The SAM side is transformers' ``SamModel`` (EVF-SAM: SAM-1 ViT) or ``Sam2Model`` (EVF-SAM2: SAM 2.0 Hiera),
driven through its submodules: EVF has no point/box prompts, only the projected vision [CLS] feature of
BEiT-3 as the single sparse token, and the dense prompt is the no-mask embedding (spec section 5).

The decoder head (token assembly, upscaling, hypernetworks, IoU/object heads) is composed here from the
transformers submodules instead of calling ``mask_decoder.forward``, because that forward returns only the
slice of masks its ``multimask_output`` flag selects, while EVF's selection rules (spec 7.2-7.4) need all
four mask tokens, and a single decoder pass should serve every rule. ``test_model_modeling.py`` checks the
composition against ``mask_decoder.forward``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Mapping, Sequence

import torch
from torch import nn

from .beit3 import BEiT3
from .config import EvfSamConfig
from ..errors import ModelLoadError
from .key_mapping import KeyMapping, build_key_mapping

__all__ = ['EvfSamModel', 'DecoderOutput', 'SelectedMasks', 'select_masks', 'stability_scores',
           'SamImageEmbeddings']

# SAM-1: the image embedding [B, C, h, w]; SAM-2: [feat_s0 [B, C/8, 4h, 4w], feat_s1 [B, C/4, 2h, 2w], emb [B, C, h, w]]
SamImageEmbeddings = torch.Tensor | list[torch.Tensor]


@dataclass
class DecoderOutput:
    """All mask tokens of one decoder pass."""

    masks: torch.Tensor  # [B, 4, h, w] low-res logits of mask tokens 0..3
    iou_scores: torch.Tensor  # [B, 4] (SAM-1: raw IoU head output; SAM-2: after sigmoid)
    object_score_logits: torch.Tensor | None  # [B] (SAM-2 only)


@dataclass
class SelectedMasks:
    """One mask per prompt after the checkpoint's selection rule."""

    logits: torch.Tensor  # [B, 1, h, w]
    iou_scores: torch.Tensor  # [B]
    token_index: torch.Tensor  # [B] long, the kept mask token (0..3)
    stability_score: torch.Tensor | None = None  # [B] token-0 stability (stability rule only)
    stability_area_pos: torch.Tensor | None = None  # [B] count(token-0 logit > +delta)
    stability_area_neg: torch.Tensor | None = None  # [B] count(token-0 logit > -delta)


def stability_scores(mask_logits: torch.Tensor, delta: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """SAM-2 stability of [B, h, w] logits: area(> delta) / area(> -delta), 1 where the latter is 0."""
    flat = mask_logits.flatten(1)
    area_pos = (flat > delta).sum(dim=-1)
    area_neg = (flat > -delta).sum(dim=-1)
    ratio = area_pos.float() / area_neg.float().clamp(min=1)
    score = torch.where(area_neg > 0, ratio, torch.ones_like(ratio))
    return score, area_pos, area_neg


def select_masks(out: DecoderOutput, rule: str, *, stability_delta: float = 0.05,
                 stability_thresh: float = 0.98) -> SelectedMasks:
    """Apply a mask-selection rule (``single``, ``best_of_3``, ``stability_single``) to a batch."""
    masks, iou = out.masks, out.iou_scores
    batch = masks.shape[0]
    stability = area_pos = area_neg = None
    if rule == 'single':
        token = torch.zeros(batch, dtype=torch.long, device=masks.device)
    elif rule in ('best_of_3', 'stability_single'):
        # argmax returns the first maximum, as the official argsort/argmax does for distinct scores
        token = iou[:, 1:].argmax(dim=-1) + 1
        if rule == 'stability_single':
            stability, area_pos, area_neg = stability_scores(masks[:, 0].float(), stability_delta)
            token = torch.where(stability >= stability_thresh, torch.zeros_like(token), token)
    else:
        raise ValueError(f'unknown mask selection rule {rule!r}')
    logits = torch.take_along_dim(masks, token[:, None, None, None], dim=1)  # [B, 1, h, w]
    scores = torch.take_along_dim(iou, token[:, None], dim=1)[:, 0]
    return SelectedMasks(logits, scores, token, stability, area_pos, area_neg)


class EvfSamModel(nn.Module):
    """EVF-SAM (``sam_kind="sam1"``) or EVF-SAM2 (``"sam2"``), image path only.

    Submodules: ``beit3`` (BEiT-3, official prefix ``mm_extractor.beit3.``), ``text_hidden_fcs`` (official
    name), ``sam`` (transformers ``SamModel``/``Sam2Model``, official prefix ``visual_model.``).
    All pieces are differentiable (no ``no_grad`` inside); inference wrappers add ``inference_mode``.
    """

    def __init__(self, config: EvfSamConfig) -> None:
        super().__init__()
        self.config = config
        self.beit3 = BEiT3(config.beit3)
        hidden = config.hidden_size
        proj_hidden = config.projection_hidden_dim or hidden
        self.text_hidden_fcs = nn.ModuleList([
            nn.Sequential(nn.Linear(hidden, proj_hidden), nn.ReLU(inplace=True), nn.Linear(proj_hidden, config.out_dim))
        ])
        hf_config = config.to_hf_sam_config()
        if config.is_sam2:
            from transformers import Sam2Model
            self.sam = Sam2Model(hf_config)
            # SAM-2 has one gaussian matrix (the prompt encoder's); transformers keeps two independent random
            # buffers. Start them equal so a random model equals itself after an official-layout round trip.
            with torch.no_grad():
                self.sam.shared_image_embedding.positional_embedding.copy_(
                    self.sam.prompt_encoder.shared_embedding.positional_embedding)
        else:
            from transformers import SamModel
            self.sam = SamModel(hf_config)
            # EVF runs the SAM-1 neck in fp32 when the trunk is fp16 (overflow guard). The hooks make the
            # neck follow its own parameters' dtype: keep the neck in fp32 and the rest in fp16/bf16.
            neck = self.sam.vision_encoder.neck
            neck.register_forward_pre_hook(_cast_input_to_module_dtype)
            neck.register_forward_hook(_cast_output_to_input_dtype)
        self._init_beit3_weights()
        self._key_mapping: KeyMapping | None = None

    # ---- construction helpers ------------------------------------------------------------------------
    def _init_beit3_weights(self) -> None:
        # torchscale-like init for a random model (tests, training from scratch); loading overwrites it.
        for name, param in self.beit3.named_parameters():
            if name.endswith(('cls_token', 'mask_token')) or 'embed_positions' in name or name == 'text_embed.weight':
                nn.init.trunc_normal_(param, std=0.02)
        for module in self.text_hidden_fcs.modules():
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                nn.init.zeros_(module.bias)

    @property
    def dtype(self) -> torch.dtype:
        return self.beit3.text_embed.weight.dtype

    @property
    def device(self) -> torch.device:
        return self.beit3.text_embed.weight.device

    def to_inference_dtype(self, dtype: torch.dtype) -> EvfSamModel:
        """Cast to ``dtype``, keeping the SAM-1 neck in fp32 (spec 7.1)."""
        self.to(dtype)
        if not self.config.is_sam2 and dtype != torch.float32:
            self.sam.vision_encoder.neck.float()
        return self

    def freeze_sam_image_encoder(self) -> None:
        """Freeze the SAM image encoder (ViT / Hiera + neck), as EVF training does."""
        for p in self.sam.vision_encoder.parameters():
            p.requires_grad_(False)
        if self.config.is_sam2:
            # conv_s0/conv_s1 and no_mem_embed act on image features only; they are frozen in EVF too.
            for p in (*self.sam.mask_decoder.conv_s0.parameters(), *self.sam.mask_decoder.conv_s1.parameters(),
                      self.sam.no_memory_embedding):
                p.requires_grad_(False)

    # ---- SAM image path --------------------------------------------------------------------------
    def encode_sam_image(self, sam_pixel_values: torch.Tensor) -> SamImageEmbeddings:
        """[B, 3, S, S] normalised SAM input -> image embeddings (SAM-2: list of 3 levels, high-res first)."""
        pixel_values = sam_pixel_values.to(self.sam.vision_encoder.get_input_embeddings().projection.weight.dtype)
        if not self.config.is_sam2:
            return self.sam.vision_encoder(pixel_values).last_hidden_state  # [B, C, h, w]
        outputs = self.sam.vision_encoder(pixel_values)
        feat_s0, feat_s1, emb = outputs.fpn_hidden_states  # NCHW, high to low resolution
        decoder = self.sam.mask_decoder
        feat_s0 = decoder.conv_s0(feat_s0)  # [B, C/8, 4h, 4w]
        feat_s1 = decoder.conv_s1(feat_s1)  # [B, C/4, 2h, 2w]
        emb = emb + self.sam.no_memory_embedding.view(1, -1, 1, 1)  # directly_add_no_mem_embed
        return [feat_s0, feat_s1, emb]

    def dense_positional_embedding(self) -> torch.Tensor:
        """Random-Fourier encoding of the image-embedding grid, [1, C, h, w] in fp32 (spec section 5)."""
        gaussian = self.sam.shared_image_embedding.positional_embedding.float()  # [2, C/2]
        size = self.config.image_embedding_size
        coords = (torch.arange(size, device=gaussian.device, dtype=torch.float32) + 0.5) / size
        grid = torch.stack(torch.meshgrid(coords, coords, indexing='xy'), dim=-1)  # [h, w, 2] as (x, y)
        proj = (2 * grid - 1) @ gaussian * (2 * math.pi)
        return torch.cat([proj.sin(), proj.cos()], dim=-1).permute(2, 0, 1).unsqueeze(0)

    # ---- text branch -------------------------------------------------------------------------------
    def beit3_features(self, beit3_pixel_values: torch.Tensor, input_ids: torch.Tensor,
                       attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Full BEiT-3 output [B, 197 + T, D] (final multiway LayerNorm applied)."""
        return self.beit3(beit3_pixel_values.to(self.dtype), input_ids, attention_mask)

    def prompt_embeddings(self, beit3_pixel_values: torch.Tensor, input_ids: torch.Tensor,
                          attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """[B|1, 3, 224, 224] + [B, T] ids -> the SAM prompt token [B, 1, out_dim] (projected vision [CLS])."""
        return self.prompt_from_features(self.beit3_features(beit3_pixel_values, input_ids, attention_mask))

    def prompt_from_features(self, beit3_features: torch.Tensor) -> torch.Tensor:
        """BEiT-3 output [B, L, D] -> the SAM prompt token [B, 1, out_dim] (projected vision [CLS])."""
        return self.text_hidden_fcs[0](beit3_features[:, :1])

    # ---- mask decoder ----------------------------------------------------------------------------
    def decode_all(self, image_embeddings: SamImageEmbeddings, prompt_embeddings: torch.Tensor,
                   dense_pe: torch.Tensor | None = None) -> DecoderOutput:
        """Run the mask decoder once for B prompts; returns all 4 mask tokens.

        image_embeddings: one image (batch 1, shared by all prompts) or B images (one per prompt).
        prompt_embeddings: [B, 1, C] or [B, C].
        """
        sam = self.sam
        decoder = sam.mask_decoder
        sam2 = self.config.is_sam2
        if sam2:
            feat_s0, feat_s1, emb = image_embeddings
        else:
            emb, feat_s0, feat_s1 = image_embeddings, None, None
        if prompt_embeddings.dim() == 2:
            prompt_embeddings = prompt_embeddings[:, None]
        batch = prompt_embeddings.shape[0]
        if emb.shape[0] not in (1, batch):
            raise ValueError(f'{emb.shape[0]} image embeddings for {batch} prompts: give 1 image or one per prompt')
        dtype = decoder.iou_token.weight.dtype
        channels, height, width = emb.shape[1:]

        # Tokens: ([obj_score] +) iou + 4 mask tokens + the one EVF prompt token -> [B, 1, N, C]
        output_tokens = [decoder.iou_token.weight, decoder.mask_tokens.weight]
        if sam2:
            output_tokens.insert(0, decoder.obj_score_token.weight)
        output_tokens = torch.cat(output_tokens, dim=0)
        tokens = torch.cat([output_tokens.unsqueeze(0).expand(batch, -1, -1), prompt_embeddings.to(dtype)], dim=1)
        tokens = tokens.unsqueeze(1)

        # Image side: embedding + dense no-mask prompt, per prompt -> [B, C, h, w]
        dense = sam.prompt_encoder.no_mask_embed.weight.view(1, channels, 1, 1)
        src = (emb.to(dtype) + dense).expand(batch, -1, -1, -1)
        if dense_pe is None:
            dense_pe = self.dense_positional_embedding()
        pos = dense_pe.to(dtype).expand(batch, -1, -1, -1)

        queries, keys = decoder.transformer(point_embeddings=tokens, image_embeddings=src,
                                            image_positional_embeddings=pos, attention_similarity=None)
        queries = queries[:, 0]  # [B, N, C]
        first = 2 if sam2 else 1
        iou_token_out = queries[:, first - 1]
        mask_tokens_out = queries[:, first:first + decoder.num_mask_tokens]  # [B, 4, C]

        src = keys[:, 0].transpose(1, 2).reshape(batch, channels, height, width)
        up = decoder.upscale_conv1(src)
        if sam2:
            up = up + feat_s1.to(dtype)
        up = decoder.activation(decoder.upscale_layer_norm(up))
        up = decoder.upscale_conv2(up)
        if sam2:
            up = up + feat_s0.to(dtype)
        up = decoder.activation(up)  # [B, C/8, 4h, 4w]

        hyper_in = torch.stack([mlp(mask_tokens_out[:, i]) for i, mlp in enumerate(decoder.output_hypernetworks_mlps)],
                               dim=1)  # [B, 4, C/8]
        masks = (hyper_in @ up.flatten(2)).view(batch, -1, up.shape[-2], up.shape[-1])
        iou = decoder.iou_prediction_head(iou_token_out)  # sigmoid inside for SAM-2
        obj = decoder.pred_obj_score_head(queries[:, 0])[:, 0] if sam2 else None
        return DecoderOutput(masks, iou, obj)

    def decode(self, image_embeddings: SamImageEmbeddings, prompt_embeddings: torch.Tensor, multimask: bool,
               dense_pe: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """SAM-style decode: ``multimask`` gives tokens 1..3, else token 0.

        Returns (low_res_logits [B, 3|1, h, w], iou [B, 3|1], object_score_logits [B] or None).
        """
        out = self.decode_all(image_embeddings, prompt_embeddings, dense_pe)
        sl = slice(1, None) if multimask else slice(0, 1)
        return out.masks[:, sl], out.iou_scores[:, sl], out.object_score_logits

    def select(self, out: DecoderOutput, rule: str | None = None) -> SelectedMasks:
        """Selection per the configured behaviour (or ``rule``)."""
        b = self.config.behaviour
        return select_masks(out, rule or b.mask_selection, stability_delta=b.stability_delta,
                            stability_thresh=b.stability_thresh)

    def forward(self, sam_pixel_values: torch.Tensor, beit3_pixel_values: torch.Tensor, input_ids: torch.Tensor,
                attention_mask: torch.Tensor | None = None) -> DecoderOutput:
        """Training-style forward: B images with B prompts (or 1 image with B prompts)."""
        emb = self.encode_sam_image(sam_pixel_values)
        prompts = self.prompt_embeddings(beit3_pixel_values, input_ids, attention_mask)
        return self.decode_all(emb, prompts)

    # ---- official state dict ---------------------------------------------------------------------
    def key_mapping(self) -> KeyMapping:
        if self._key_mapping is None:
            sd = self.state_dict(keep_vars=True)
            self._key_mapping = build_key_mapping(sd.keys(), self.config, {k: tuple(v.shape) for k, v in sd.items()})
        return self._key_mapping

    def official_state_dict(self) -> dict[str, torch.Tensor]:
        """State dict with the released checkpoints' key names (SAM-2: image path only, no memory keys)."""
        return self.key_mapping().convert_ours(self.state_dict())

    def load_official_state_dict(self, state_dict: Mapping[str, torch.Tensor], *, strict: bool = True,
                                 assign: bool = False, source: str = 'state dict') -> list[str]:
        """Load tensors named as in the released checkpoints; casts each tensor to the parameter's dtype.

        Raises :class:`ModelLoadError` naming missing, unexpected and mis-shaped keys (strict mode).
        SAM-2 memory/video keys are skipped. Returns the list of ignored official keys.
        """
        mapping = self.key_mapping()
        converted, unexpected, ignored = mapping.convert_official(state_dict)
        own = self.state_dict(keep_vars=True)
        missing = [k for k in own if k not in converted]
        mismatched = []
        for key, tensor in converted.items():
            if tuple(tensor.shape) != tuple(own[key].shape):
                mismatched.append((key, tuple(tensor.shape), tuple(own[key].shape)))
        if ((missing or unexpected) and strict) or mismatched:
            raise ModelLoadError(_key_error_message(source, mapping.missing_official_keys(missing), unexpected,
                                                    [(mapping.ours_to_official.get(k, k), a, b)
                                                     for k, a, b in mismatched], self.config))
        for key in list(converted):
            converted[key] = converted[key].to(dtype=own[key].dtype)
        self.load_state_dict(converted, strict=strict, assign=assign)
        return ignored


def _cast_input_to_module_dtype(module: nn.Module, args: tuple) -> tuple:
    module._evf_input_dtype = args[0].dtype  # the trunk's dtype, restored on the output
    weight_dtype = next(module.parameters()).dtype
    return (args[0].to(weight_dtype),) + tuple(args[1:])


def _cast_output_to_input_dtype(module: nn.Module, args: tuple, output: torch.Tensor) -> torch.Tensor:
    return output.to(module._evf_input_dtype)


def _listing(keys: Sequence[str], limit: int = 12) -> str:
    keys = list(keys)
    shown = ', '.join(keys[:limit])
    return shown + (f', ... ({len(keys) - limit} more)' if len(keys) > limit else '')


def _key_error_message(source: str, missing: Sequence[str], unexpected: Sequence[str],
                       mismatched: Sequence[tuple[str, tuple, tuple]], config: EvfSamConfig) -> str:
    parts = [f'{source}: the weights do not fit the {config.architecture_name} architecture from config.json '
             f'(BEiT-3 {config.beit3.embed_dim}-dim x {config.beit3.num_layers} layers, '
             f'{"Hiera" if config.is_sam2 else "ViT"} SAM image encoder, prompt dim {config.out_dim}).']
    if missing:
        parts.append(f'{len(missing)} missing key(s): {_listing(sorted(missing))}.')
    if unexpected:
        parts.append(f'{len(unexpected)} unexpected key(s): {_listing(sorted(unexpected))}.')
    if mismatched:
        parts.append(f'{len(mismatched)} key(s) with the wrong shape: '
                     + _listing([f'{k} (file {tuple(a)}, model {tuple(b)})' for k, a, b in mismatched]) + '.')
    parts.append('Check that config.json belongs to these weights (a different sam_scale / mm_extractor_scale or '
                 'a truncated/foreign checkpoint gives this error), or re-download the checkpoint.')
    return ' '.join(parts)
