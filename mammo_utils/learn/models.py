"""timm backbone + a cancer head; pretrained weights only ever from a local file."""
from __future__ import annotations

import inspect
import logging
from pathlib import Path

import torch
import torch.nn as nn

log = logging.getLogger(__name__)


class MetadataEncoder(nn.Module):
    """Encoded metadata -> ``HIDDEN`` features: standardised numbers with missing flags, embedded categories."""

    def __init__(self, spec: dict):
        super().__init__()
        from .metadata import EMBED_DIM, HIDDEN

        self.spec = spec
        self.index = {c: {v: i + 1 for i, v in enumerate(s["values"])} for c, s in spec.items()
                      if s["kind"] == "category"}
        self.embed = nn.ModuleDict({c: nn.Embedding(len(s["values"]) + 1, EMBED_DIM) for c, s in spec.items()
                                    if s["kind"] == "category"})
        n_in = sum(2 if s["kind"] == "number" else EMBED_DIM for s in spec.values())
        self.mlp = nn.Sequential(nn.Linear(n_in, HIDDEN), nn.ReLU())
        self.out_features = HIDDEN

    def forward(self, raw: dict | None, n: int, device) -> torch.Tensor:
        """``raw``: collated :func:`~mammo_utils.learn.metadata.raw_values` (None: every value missing, e.g. for Grad-CAM)."""
        from .metadata import as_number, as_text, column_values

        parts = []
        for c, s in self.spec.items():
            values = column_values(raw[c], n) if raw is not None and c in raw else [None] * n
            if s["kind"] == "number":
                x = torch.tensor([as_number(v) for v in values], dtype=torch.float32, device=device)
                missing = torch.isnan(x)
                z = torch.where(missing, torch.zeros_like(x), (x - s["mean"]) / s["std"])
                parts += [z[:, None], missing.float()[:, None]]
            else:
                idx = torch.tensor([self.index[c].get(as_text(v), 0) for v in values], device=device)
                parts.append(self.embed[c](idx))
        return self.mlp(torch.cat(parts, 1))


FUSIONS = ("none", "mean", "attention")


class MammoNet(nn.Module):
    """Backbone feature map -> global average pool (+ encoded metadata) -> dropout -> linear.

    ``forward(x, meta, view_mask)`` returns ``{"cancer": (B,), "aux_<name>": (B, classes)...}``.
    ``x`` is a batch of images (B, 1, H, W), or with breast-level ``fusion`` a batch of breasts
    (B, K, 1, H, W) whose ``view_mask`` (B, K) says which of the K views exist: the same backbone
    reads every view and the views' features are pooled (``mean``, or ``attention`` weights) before
    the heads. An image alone is a breast of one view, so both paths agree on it.
    """

    def __init__(self, backbone: nn.Module, drop_rate: float = 0.3, metadata: dict | None = None,
                 aux: dict | None = None, fusion: str = "none"):
        super().__init__()
        if fusion not in FUSIONS:
            raise ValueError(f"fusion must be one of {FUSIONS}, got {fusion!r}")
        self.backbone = backbone
        self.meta = MetadataEncoder(metadata) if metadata else None
        width = backbone.num_features + (self.meta.out_features if self.meta else 0)
        self.fusion, self.aux_spec = fusion, aux or {}
        self.attend = nn.Linear(width, 1) if fusion == "attention" else None
        self.head = nn.Sequential(nn.Dropout(drop_rate), nn.Linear(width, 1))
        self.aux_heads = nn.ModuleDict({name: nn.Sequential(nn.Dropout(drop_rate), nn.Linear(width, len(s["classes"])))
                                        for name, s in self.aux_spec.items()})

    def forward(self, x: torch.Tensor, meta: dict | None = None,
                view_mask: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        if x.ndim == 5:
            if self.fusion == "none":
                raise ValueError("a batch of breasts (B, K, 1, H, W) needs a model with fusion mean or attention")
            b, k = x.shape[:2]
            mask = torch.ones(b, k, dtype=torch.bool, device=x.device) if view_mask is None else view_mask.bool()
            # only the views that exist go through the backbone: no compute, and no BatchNorm statistics, on padding
            present = mask.flatten()
            fmap = self.backbone.forward_features(x.flatten(0, 1)[present])
            pooled = fmap.new_zeros(b * k, fmap.shape[1])
            pooled[present] = fmap.mean((2, 3))
            return self.heads(self.fuse(self.with_metadata(pooled, meta).reshape(b, k, -1), mask))
        return self.forward_head(self.backbone.forward_features(x), meta)

    def forward_head(self, fmap: torch.Tensor, meta: dict | None = None) -> dict[str, torch.Tensor]:
        """Logits from the backbone's feature map of single images (split out for Grad-CAM)."""
        return self.heads(self.features(fmap, meta))

    def features(self, fmap: torch.Tensor, meta: dict | None) -> torch.Tensor:
        return self.with_metadata(fmap.mean((2, 3)), meta)

    def with_metadata(self, pooled: torch.Tensor, meta: dict | None) -> torch.Tensor:
        if self.meta is None:
            return pooled
        return torch.cat([pooled, self.meta(meta, pooled.shape[0], pooled.device).to(pooled.dtype)], 1)

    def fuse(self, feats: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """(B, K, D) features of K views, (B, K) mask of the views that exist -> (B, D) per breast."""
        if self.fusion == "attention":
            scores = self.attend(feats).squeeze(-1).float().masked_fill(~mask, float("-inf"))
            weights = torch.softmax(scores, 1).to(feats.dtype)
        else:
            weights = mask.to(feats.dtype) / mask.sum(1, keepdim=True).clamp(min=1).to(feats.dtype)
        return (weights[..., None] * feats).sum(1)

    def heads(self, feats: torch.Tensor) -> dict[str, torch.Tensor]:
        out = {"cancer": self.head(feats).squeeze(1)}
        for name, head in self.aux_heads.items():
            out[f"aux_{name}"] = head(feats)
        return out


def build_model(name: str = "efficientnet_b4", pretrained: str | Path | None = None,
                drop_rate: float = 0.3, metadata: dict | None = None, aux: dict | None = None,
                fusion: str = "none") -> MammoNet:
    """Any timm backbone with our head, on one input channel.

    ``pretrained``: a local weights file (.pth/.bin/.safetensors), as on Kaggle where weights come
    from an attached dataset; ``None`` is the explicit choice of random initialization (logged). A
    file that is missing or does not load raises: a run never trains from scratch by accident. Never
    touches the network. timm sums the RGB stem weights for ``in_chans=1``, so ImageNet weights serve
    grayscale mammograms without a 3-channel copy. ``metadata`` and ``aux`` are the specs of
    :mod:`.metadata` (fitted on the training rows); ``fusion`` pools the views of a breast.
    """
    import timm

    from ..errors import UserError

    kwargs = dict(in_chans=1, num_classes=0, global_pool="", drop_rate=drop_rate)
    if pretrained is None:
        log.info("%s: random initialization (pretrained=None)", name)
        return MammoNet(timm.create_model(name, pretrained=False, **kwargs), drop_rate, metadata, aux, fusion)
    path = Path(pretrained)
    if not path.is_file():
        raise UserError(f"pretrained weights {path} not found: attach the weights file (e.g. a Kaggle dataset) "
                        f"and pass its path, or pretrained=None for random initialization")
    try:
        backbone = timm.create_model(name, pretrained=True, pretrained_cfg_overlay=dict(file=str(path)), **kwargs)
    except Exception as exc:
        raise UserError(f"could not load pretrained weights for {name} from {path}: {exc}") from exc
    log.info("loaded pretrained %s weights from %s", name, path)
    return MammoNet(backbone, drop_rate, metadata, aux, fusion)


MODEL_ARGS = tuple(p for p in inspect.signature(build_model).parameters if p != "pretrained")
# model_args keys that checkpoints of earlier versions hold and that no longer change the model
REMOVED_MODEL_ARGS = ("head", "in_chans", "aux_classes")


def model_from_args(model_args: dict) -> MammoNet:
    """The model a checkpoint's ``model_args`` describe (random weights, to be loaded over).

    Keys of earlier versions that no longer matter are dropped; any other unknown key is an error."""
    from ..errors import CheckpointError

    unknown = set(model_args) - set(MODEL_ARGS) - set(REMOVED_MODEL_ARGS)
    if unknown:
        raise CheckpointError(f"model_args has unknown key(s) {sorted(unknown)}; known: {list(MODEL_ARGS)}")
    return build_model(pretrained=None, **{k: v for k, v in model_args.items() if k in MODEL_ARGS})
