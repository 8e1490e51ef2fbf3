"""timm backbone + a cancer head; pretrained weights only ever from a local file."""
from __future__ import annotations

import inspect
import logging
from pathlib import Path

import torch
import torch.nn as nn

log = logging.getLogger(__name__)


class MammoNet(nn.Module):
    """Backbone feature map -> global average pool -> dropout -> linear: one cancer logit per image.

    ``forward`` returns ``{"cancer": (B,)}``: a dict, so heads can be added without changing callers.
    """

    def __init__(self, backbone: nn.Module, drop_rate: float = 0.3):
        super().__init__()
        self.backbone = backbone
        self.head = nn.Sequential(nn.Dropout(drop_rate), nn.Linear(backbone.num_features, 1))

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return self.forward_head(self.backbone.forward_features(x))

    def forward_head(self, fmap: torch.Tensor) -> dict[str, torch.Tensor]:
        """Logits from the backbone's feature map (split out for Grad-CAM)."""
        return {"cancer": self.head(fmap.mean((2, 3))).squeeze(1)}


def build_model(name: str = "efficientnet_b4", pretrained: str | Path | None = None,
                drop_rate: float = 0.3) -> MammoNet:
    """Any timm backbone with our head, on one input channel.

    ``pretrained``: a local weights file (.pth/.bin/.safetensors), as on Kaggle where weights come
    from an attached dataset; ``None`` is the explicit choice of random initialization (logged). A
    file that is missing or does not load raises: a run never trains from scratch by accident. Never
    touches the network. timm sums the RGB stem weights for ``in_chans=1``, so ImageNet weights serve
    grayscale mammograms without a 3-channel copy.
    """
    import timm

    from .errors import UserError

    kwargs = dict(in_chans=1, num_classes=0, global_pool="", drop_rate=drop_rate)
    if pretrained is None:
        log.info("%s: random initialization (pretrained=None)", name)
        return MammoNet(timm.create_model(name, pretrained=False, **kwargs), drop_rate=drop_rate)
    path = Path(pretrained)
    if not path.is_file():
        raise UserError(f"pretrained weights {path} not found: attach the weights file (e.g. a Kaggle dataset) "
                        f"and pass its path, or pretrained=None for random initialization")
    try:
        backbone = timm.create_model(name, pretrained=True, pretrained_cfg_overlay=dict(file=str(path)), **kwargs)
    except Exception as exc:
        raise UserError(f"could not load pretrained weights for {name} from {path}: {exc}") from exc
    log.info("loaded pretrained %s weights from %s", name, path)
    return MammoNet(backbone, drop_rate=drop_rate)


MODEL_ARGS = tuple(p for p in inspect.signature(build_model).parameters if p != "pretrained")
# model_args keys that checkpoints of earlier versions hold and that no longer change the model
REMOVED_MODEL_ARGS = ("head", "in_chans", "aux_classes")


def model_from_args(model_args: dict) -> MammoNet:
    """The model a checkpoint's ``model_args`` describe (random weights, to be loaded over).

    Keys of earlier versions that no longer matter are dropped; any other unknown key is an error."""
    from .errors import CheckpointError

    unknown = set(model_args) - set(MODEL_ARGS) - set(REMOVED_MODEL_ARGS)
    if unknown:
        raise CheckpointError(f"model_args has unknown key(s) {sorted(unknown)}; known: {list(MODEL_ARGS)}")
    return build_model(pretrained=None, **{k: v for k, v in model_args.items() if k in MODEL_ARGS})
