"""timm backbone + classification head(s); pretrained weights only ever from a local file."""
from __future__ import annotations

import logging
from pathlib import Path

import torch
import torch.nn as nn

log = logging.getLogger(__name__)


class SeedHead(nn.Module):
    """The head of the original project: concat(avg, max) pooling -> BN -> 512 -> 128 -> 1."""

    def __init__(self, in_features: int, drop_rate: float = 0.3):
        super().__init__()
        self.mlp = nn.Sequential(
            nn.BatchNorm1d(2 * in_features), nn.Linear(2 * in_features, 512), nn.ReLU(inplace=True),
            nn.BatchNorm1d(512), nn.Dropout(drop_rate), nn.Linear(512, 128), nn.ReLU(inplace=True),
            nn.BatchNorm1d(128), nn.Dropout(drop_rate), nn.Linear(128, 1))

    def forward(self, fmap: torch.Tensor) -> torch.Tensor:
        pooled = torch.cat([fmap.mean((2, 3)), fmap.amax((2, 3))], dim=1)
        return self.mlp(pooled)


class MammoNet(nn.Module):
    """Backbone feature map -> cancer logit (B,) plus optional auxiliary logits.

    ``forward`` returns a dict: ``{"cancer": (B,), "<aux>": (B, n_classes), ...}``.
    """

    def __init__(self, backbone: nn.Module, head: str = "timm", drop_rate: float = 0.3,
                 aux_classes: dict[str, int] | None = None):
        super().__init__()
        self.backbone = backbone
        n = backbone.num_features
        self.head_type = head
        if head == "mlp":
            self.head = SeedHead(n, drop_rate)
        elif head == "timm":
            self.head = nn.Sequential(nn.Dropout(drop_rate), nn.Linear(n, 1))
        else:
            raise ValueError(f"head must be 'timm' or 'mlp', got {head!r}")
        self.aux = nn.ModuleDict({k: nn.Linear(n, c) for k, c in (aux_classes or {}).items()})

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return self.forward_head(self.backbone.forward_features(x))

    def forward_head(self, fmap: torch.Tensor) -> dict[str, torch.Tensor]:
        """Logits from the backbone's feature map (split out for Grad-CAM)."""
        pooled = fmap.mean((2, 3))
        logit = self.head(fmap) if self.head_type == "mlp" else self.head(pooled)
        out = {"cancer": logit.squeeze(1)}
        for k, layer in self.aux.items():
            out[k] = layer(pooled)
        return out


def build_model(name: str = "efficientnet_b4", head: str = "timm", pretrained: str | Path | None = None,
                in_chans: int = 1, drop_rate: float = 0.3, drop_path_rate: float = 0.1,
                aux_classes: dict[str, int] | None = None) -> MammoNet:
    """Any timm backbone with our head. ``pretrained``: a local weights file (.pth/.bin/.safetensors),
    as on Kaggle where weights come from an attached dataset. A missing file gives random init with a
    clear warning; a file that exists but does not load raises. Never touches the network.
    With ``in_chans=1`` timm sums the RGB stem weights, so ImageNet weights serve grayscale input.
    """
    import timm

    kwargs = dict(in_chans=in_chans, num_classes=0, global_pool="", drop_rate=drop_rate)
    if drop_path_rate:
        kwargs["drop_path_rate"] = drop_path_rate
    if pretrained:
        path = Path(pretrained)
        if not path.is_file():
            log.warning("pretrained weights %s not found: %s starts from RANDOM initialization. "
                        "Attach the weights file (e.g. a Kaggle dataset) and pass its path.", path, name)
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
    return MammoNet(backbone, head=head, drop_rate=drop_rate, aux_classes=aux_classes)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
