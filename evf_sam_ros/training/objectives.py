"""Training objectives: the mask loss (BCE + Dice) and the auxiliary probes that give a small model
trained from scratch a reason to ground words (text, referent and attribute probes)."""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ['mask_losses', 'TextProbe', 'ReferentProbe', 'AttributeProbe']

def mask_losses(logits: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """BCE and Dice of [B,h,w] logits (upsampled to the target's [B,S,S]); also the hard IoU per mask."""
    logits = F.interpolate(logits[:, None].float(), size=target.shape[-2:], mode='bilinear', align_corners=False)[:, 0]
    bce = F.binary_cross_entropy_with_logits(logits, target, reduction='none').flatten(1).mean(1)
    prob = logits.sigmoid().flatten(1)
    t = target.flatten(1)
    dice = 1 - (2 * (prob * t).sum(1) + 1) / (prob.sum(1) + t.sum(1) + 1)
    with torch.no_grad():
        pred = logits.flatten(1) > 0
        tb = t > 0.5
        inter = (pred & tb).sum(1).float()
        union = (pred | tb).sum(1).float()
        iou = torch.where(union > 0, inter / union.clamp(min=1), torch.ones_like(union))
    return bce, dice, iou


class TextProbe(torch.nn.Module):
    """Training-only auxiliary head: predict which words of the vocabulary the prompt contains, from the
    *direction* of the projected [CLS] prompt token (cosine classifier with a fixed scale).

    Trained from scratch, a small BEiT-3 tends to ignore the text: the prompt token is dominated by a
    text-independent part, the decoder learns one text-independent mask, and then it has no reason to
    look at the prompt. A plain linear probe does not help (it reads the words from tiny differences with
    large weights); a cosine probe can only succeed if the prompt's direction changes with the words, which
    is what the decoder needs. Not part of the exported checkpoint.
    """

    def __init__(self, dim: int, vocab: int, scale: float = 16.0) -> None:
        super().__init__()
        self.head = torch.nn.Linear(dim, vocab)
        self.scale = scale

    def forward(self, prompts: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        z = F.normalize(prompts[:, 0].float(), dim=-1)
        logits = self.scale * z @ F.normalize(self.head.weight, dim=-1).T + self.head.bias
        # softmax cross-entropy of every word of the prompt (special tokens and padding excluded); a
        # per-word sigmoid loss would be dominated by the many easy "absent" words
        ids = input_ids.clamp(max=logits.shape[1] - 1)
        keep = (attention_mask > 0) & (input_ids > 2)
        logp = F.log_softmax(logits, dim=-1).gather(1, ids)
        return -(logp * keep).sum() / keep.sum().clamp(min=1)


class ReferentProbe(torch.nn.Module):
    """Training-only auxiliary heads that say *where* the referred object is, so BEiT-3 learns to find it.

    The mask loss reaches BEiT-3 only through one prompt token and the decoder; from scratch that signal
    is too weak for words that need BEiT-3 itself to look at the image ("the leftmost box", "the cube
    next to the red ball", "the ball" when colour does not help). Two cheap direct signals:
    * from every BEiT-3 vision patch: the share of that patch covered by the target (BCE, soft targets);
    * from the projected prompt token: whether a target exists (BCE) and its mask centre (L1, in the
      SAM frame, [0, 1]), i.e. the prompt must carry the object's place, as SAM's point prompts do.
    Not part of the exported checkpoint.
    """

    def __init__(self, beit_dim: int, prompt_dim: int) -> None:
        super().__init__()
        self.patch_head = torch.nn.Linear(beit_dim, 1)
        self.prompt_head = torch.nn.Sequential(torch.nn.Linear(prompt_dim, prompt_dim), torch.nn.GELU(),
                                               torch.nn.Linear(prompt_dim, 3))

    def forward(self, features: torch.Tensor, prompts: torch.Tensor, patch_target: torch.Tensor,
                mask_target: torch.Tensor) -> torch.Tensor:
        # features: [B, 1 + P + T, D]; prompts: [B, 1, C]; patch_target: [B, g, g]; mask_target: [B, S, S]
        n_patch = patch_target.shape[1] * patch_target.shape[2]
        patch_logits = self.patch_head(features[:, 1:1 + n_patch].float())[..., 0]            # [B, P]
        patch_loss = F.binary_cross_entropy_with_logits(patch_logits, patch_target.flatten(1))
        out = self.prompt_head(prompts[:, 0].float())                                        # [B, 3]
        area = mask_target.flatten(1).sum(1)
        exists = (area > 0).float()
        size = mask_target.shape[-1]
        coords = (torch.arange(size, device=mask_target.device, dtype=torch.float32) + 0.5) / size
        cx = (mask_target.sum(1) * coords).sum(1) / area.clamp(min=1e-6)                   # [B]
        cy = (mask_target.sum(2) * coords).sum(1) / area.clamp(min=1e-6)
        exist_loss = F.binary_cross_entropy_with_logits(out[:, 0], exists)
        centre_err = (out[:, 1:].sigmoid() - torch.stack([cx, cy], 1)).abs().sum(1)
        centre_loss = (centre_err * exists).sum() / exists.sum().clamp(min=1)
        return patch_loss + exist_loss + 4.0 * centre_loss


class AttributeProbe(torch.nn.Module):
    """Training-only auxiliary heads (synthetic scenes only): at every SAM image-embedding cell and every
    BEiT-3 vision patch, which shape and which colour of object covers it (soft cross-entropy over the
    classes plus "no object", from the class's share of the cell).

    Colour words are learnt quickly because colour is already linear in the pixels; shape words are not:
    from the mask loss alone, the SAM encoder (from scratch) learns few shape features, so "the ball" has
    nothing to match in the image embedding. Dense shape labels give it those features directly.
    Not part of the exported checkpoint.
    """

    def __init__(self, sam_dim: int, beit_dim: int, vocab: tuple | None = None) -> None:
        super().__init__()
        self.vocab = vocab or self.attribute_vocab()   # another vocab only in tests
        self.groups = tuple(len(names) for _, names in self.vocab)   # class counts, without "none"
        n = sum(g + 1 for g in self.groups)
        self.sam_head = torch.nn.Conv2d(sam_dim, n, 1)
        self.beit_head = torch.nn.Linear(beit_dim, n)

    @staticmethod
    def attribute_vocab() -> tuple[tuple[str, tuple[str, ...]], ...]:
        """The one place that fixes the class layout: per attribute its classes (each group then gets "none")."""
        from evf_sam_ros.synthetic.scene import COLOURS, SHAPES
        return ('shape', tuple(SHAPES)), ('colour', tuple(COLOURS))

    @staticmethod
    def class_masks(scene) -> list[np.ndarray]:
        """[sum(groups)] masks of the scene's pixels per class, in the heads' layout (the training targets)."""
        return [np.isin(scene.labels, [o.index for o in scene.objects if getattr(o, attr) == name])
                for attr, names in AttributeProbe.attribute_vocab() for name in names]

    def best_class(self, cell_logits: torch.Tensor, attribute: str) -> str:
        """The name of the highest-scoring class of ``attribute`` ("none" left out) in one cell's [N] logits."""
        start = 0
        for (attr, names), g in zip(self.vocab, self.groups):
            if attr == attribute:
                return names[int(cell_logits[start:start + g].argmax())]
            start += g + 1
        raise KeyError(attribute)

    def _loss(self, logits: torch.Tensor, shares: torch.Tensor) -> torch.Tensor:
        # logits: [B, N, L] (N = sum(groups) + len(groups)); shares: [B, sum(groups), L] class shares of each cell
        loss, i, j = 0.0, 0, 0
        for g in self.groups:
            part = shares[:, j:j + g]
            target = torch.cat([part, (1 - part.sum(1, keepdim=True)).clamp(min=0)], dim=1)
            loss = loss - (target * F.log_softmax(logits[:, i:i + g + 1], dim=1)).sum(1).mean()
            i, j = i + g + 1, j + g
        return loss / len(self.groups)

    def forward(self, sam_embeddings: torch.Tensor, sam_shares: torch.Tensor, features: torch.Tensor,
                beit_shares: torch.Tensor) -> torch.Tensor:
        # sam_embeddings: [B, C, h, w]; sam_shares: [B, A, h, w]; features: [B', 1 + P + T, D] (B' = B * k
        # prompts, image i's prompts consecutive); beit_shares: [B, A, g, g]
        sam_logits = self.sam_head(sam_embeddings.float()).flatten(2)                       # [B, N, h*w]
        n_patch = beit_shares.shape[-1] * beit_shares.shape[-2]
        per_image = features[::features.shape[0] // beit_shares.shape[0], 1:1 + n_patch]     # [B, P, D]
        beit_logits = self.beit_head(per_image.float()).transpose(1, 2)                      # [B, N, P]
        return self._loss(sam_logits, sam_shares.flatten(2)) + self._loss(beit_logits, beit_shares.flatten(2))
