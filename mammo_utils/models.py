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


def build_model(name: str = "efficientnet_b4", pretrained: str | Path | None = None, drop_rate: float = 0.3,
                **ignored) -> MammoNet:
    """Any timm backbone with our head, on one input channel.

    ``pretrained``: a local weights file (.pth/.bin/.safetensors), as on Kaggle where weights come
    from an attached dataset. A missing file gives random init with a clear warning; a file that
    exists but does not load raises. Never touches the network. timm sums the RGB stem weights for
    ``in_chans=1``, so ImageNet weights serve grayscale mammograms without a 3-channel copy.
    ``ignored`` swallows model arguments of older checkpoints (head, in_chans, aux_classes).
    """
    import timm

    kwargs = dict(in_chans=1, num_classes=0, global_pool="", drop_rate=drop_rate)
    if pretrained:
        path = Path(pretrained)
        if not path.is_file():
            log.warning("pretrained weights %s not found: %s starts from RANDOM initialization. "
                        "Attach the weights file (e.g. a Kaggle dataset) and pass its path.", path, name)
            print(f"WARNING: pretrained weights {path} not found: {name} starts from random initialization")
            backbone = timm.create_model(name, pretrained=False, **kwargs)
        else:
            try:
                backbone = timm.create_model(name, pretrained=True, pretrained_cfg_overlay=dict(file=str(path)),
                                             **kwargs)
            except Exception as exc:
                raise RuntimeError(f"could not load pretrained weights for {name} from {path}: {exc}") from exc
            log.info("loaded pretrained %s weights from %s", name, path)
    else:
        log.info("%s: random initialization (no pretrained file given)", name)
        backbone = timm.create_model(name, pretrained=False, **kwargs)
    return MammoNet(backbone, drop_rate=drop_rate)


MODEL_ARGS = tuple(p for p in inspect.signature(build_model).parameters if p not in ("pretrained", "ignored"))
