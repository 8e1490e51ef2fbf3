"""Preprocessing: the settings and the per-file job (DICOM -> PNG).

The runner over a dataset is :mod:`.runner`; the manifest bookkeeping is :mod:`.manifest`.

Nothing here imports torch (worker start-up matters on 2 CPUs). The pixel logic lives in
:mod:`.crop` (pure arrays) and :mod:`.dicom` (reading); this module only strings them together.
"""
from __future__ import annotations

import logging
import math
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

import numpy as np

from .. import paths
from ..errors import UserError
from . import crop as crop_ops

if TYPE_CHECKING:
    from ..dicom.read import StoredImage

log = logging.getLogger(__name__)

MIN_DYNAMIC_RANGE = 1e-3  # an image whose values span less than this is blank, not a mammogram


@dataclass
class PreprocessConfig:
    """Everything that determines the output pixels; saved as preprocess.json beside the images."""

    size: tuple[int, int] = (1024, 512)
    keep_aspect: bool = True
    bits: int = 8
    crop: bool = True
    mask_outside: bool = True     # zero labels/markers isolated from the breast (never tissue)
    orient: bool = True
    backend: str = "auto"
    reduced_decode: bool = True   # JPEG 2000: decode the coarsest wavelet level that covers `size`
    window_index: int = 0
    voi: bool = True

    def __post_init__(self):
        self.size = paths.parse_size(self.size)
        if self.bits not in (8, 16):
            raise UserError(f"bits must be 8 or 16, got {self.bits}")

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, d: dict) -> "PreprocessConfig":
        return cls(**{k: v for k, v in d.items() if k in cls.__dataclass_fields__})


def work_image(s: StoredImage, path=None, work_px: int = crop_ops.WORK_PX) -> tuple[np.ndarray, float]:
    """Display image at about the segmentation work size, padding zeroed; and its scale in work
    pixels per stored pixel. Raises on a blank image (nothing to crop), naming ``path``.

    Large images are averaged over integer blocks (OpenCV's fast path; the long side lands within
    ~20 % of ``work_px``), and the table is looked up on ~0.1 megapixels only."""
    h, w = s.stored.shape
    f = round(max(h, w) / work_px)
    if f >= 2:
        small = crop_ops.area_shrink(s.stored, f)
        k, covered = 1.0 / f, (0, 0, small.shape[0] * f, small.shape[1] * f)  # the trimmed rows/columns drop
    else:
        k, covered = work_px / max(h, w), (0, 0, h, w)
        small = crop_ops.resize(s.stored, (max(1, round(h * k)), max(1, round(w * k))))
    img = s.display(small)
    if s.pad_mask is not None:
        img[crop_ops.mask_on_output(s.pad_mask, (h, w), covered, small.shape)] = 0.0
    if float(img.max()) - float(img.min()) < MIN_DYNAMIC_RANGE:
        from ..dicom import DicomReadError

        raise DicomReadError(path, f"image is blank: every pixel displays as {float(img.mean()):.3f} "
                                   f"(a constant image has no breast to crop)")
    return img, k


def output_pixels(s: StoredImage, box: crop_ops.Box, shape: tuple[int, int], bits: int) -> np.ndarray:
    """The crop ``box`` of ``s`` resized to ``shape`` and displayed, as uint8/uint16.

    Where the display is a straight line between its saturation points (LINEAR windows, min-max;
    stored values were clamped to those points on reading), the stored values are resampled and the
    quantized table is looked up for the output pixels only: equal to displaying first, to rounding.
    A curved display (SIGMOID, a VOI LUT Sequence) is looked up on the crop first, then resampled."""
    crop = crop_ops.crop(s.stored, box)
    if s.display.linear:
        return s.display.to_uint(crop_ops.resize(crop, shape), bits)
    return crop_ops.resize(s.display.to_uint(crop, bits), shape)


def source_box(box: crop_ops.Box, scale: float, source_shape) -> crop_ops.Box:
    """A box in reduced stored pixels as a box in the file's full-size pixels."""
    rows, cols = source_shape
    return (int(box[0] * scale), int(box[1] * scale), min(rows, int(round(box[2] * scale))),
            min(cols, int(round(box[3] * scale))))


def locate_breast(s: StoredImage, path=None) -> tuple[crop_ops.Box, crop_ops.Segmentation]:
    """(breast box in ``s.stored`` pixels, segmentation on the work image).

    The one place preprocessing and the crop-quality check find the breast. Raises on a blank image."""
    work, k = work_image(s, path)
    seg = crop_ops.segment_breast(work, max(work.shape))  # already the work size
    return crop_ops.box_from_mask(seg.breast, seg.scale * k, s.stored.shape), seg


def preprocess_stored(s: StoredImage, cfg: PreprocessConfig, laterality: str | None = None, path=None, found=None):
    """Segment -> crop -> resize -> display -> orient -> pad. Returns (uint8/uint16 image of ``cfg.size``,
    box in ``s.stored`` pixels, flipped).

    Segmentation runs on a work-size copy (``found``: a :func:`locate_breast` result already at hand);
    the output pixels come from :func:`output_pixels`. No full-size float image is ever made.
    """
    h, w = s.stored.shape
    box, remove = (0, 0, h, w), None
    if cfg.crop or cfg.mask_outside:
        found_box, seg = found or locate_breast(s, path)
        box = found_box if cfg.crop else box
        if cfg.mask_outside and seg.remove.any():
            remove = seg.remove
    else:
        work_image(s, path)  # a blank image is still an error
    shape = crop_ops.fit_shape((box[2] - box[0], box[3] - box[1]), cfg.size, cfg.keep_aspect)
    out = output_pixels(s, box, shape, cfg.bits)
    for mask in (s.pad_mask, remove):  # padding and isolated labels/markers become background
        if mask is not None:
            out[crop_ops.mask_on_output(mask, (h, w), box, shape)] = 0
    flipped = False
    if cfg.orient:
        out, flipped = crop_ops.orient(out, laterality)
    return crop_ops.pad_to(out, cfg.size), box, flipped


def crop_is_upsampled(box: crop_ops.Box, cfg: PreprocessConfig) -> bool:
    """Whether resizing the crop ``box`` to its output shape would enlarge it along either axis."""
    bh, bw = box[2] - box[0], box[3] - box[1]
    oh, ow = crop_ops.fit_shape((bh, bw), cfg.size, cfg.keep_aspect)
    return oh > bh or ow > bw


def finer_min_size(box: crop_ops.Box, s: StoredImage, cfg: PreprocessConfig) -> tuple[int, int]:
    """The whole-image size (HxW) a reread must cover so that ``box``'s crop reaches its output shape:
    the reduction level is then chosen for the crop, not for the whole image. Always asks for at
    least one level finer than ``s``, so rereading ends."""
    rows, cols = s.source_shape
    bh, bw = max(1.0, (box[2] - box[0]) * s.scale), max(1.0, (box[3] - box[1]) * s.scale)  # source pixels
    oh, ow = crop_ops.fit_shape((round(bh), round(bw)), cfg.size, cfg.keep_aspect)
    need = (math.ceil(oh * rows / bh) + 1, math.ceil(ow * cols / bw) + 1)  # +1: the box's edges round down
    one_finer = math.ceil(rows / (s.scale / 2))
    return max(need[0], one_finer), need[1]


def read_for_crop(path, cfg: PreprocessConfig):
    """(stored image, locate_breast result or None): read at the coarsest level that keeps the breast
    crop at or above the output resolution.

    The first read is reduced for the whole image; a small breast in a large file would then be
    upsampled, losing the detail where calcifications live. Its box says which level it needs, and
    the file is read again at that level (a finer J2K level, or a smaller area reduction)."""
    from ..dicom import read_stored_image

    def read(min_size):
        return read_stored_image(path, backend=cfg.backend, min_size=min_size, window_index=cfg.window_index,
                                 voi=cfg.voi)

    s = read(cfg.size if cfg.reduced_decode else None)
    found = locate_breast(s, path) if cfg.crop or cfg.mask_outside else None
    while cfg.crop and s.scale > 1 and crop_is_upsampled(found[0], cfg):
        s = read(finer_min_size(found[0], s, cfg))
        found = locate_breast(s, path)
    return s, found


def preprocess_file(path, cfg: PreprocessConfig, laterality: str | None = None):
    """DICOM file -> (uint8/uint16 image of cfg.size, info dict for the manifest)."""
    d, found = read_for_crop(path, cfg)
    if d.frames > 1:
        log.warning("%s has %d frames; only the first is used", path, d.frames)
    img, box, flipped = preprocess_stored(d, cfg, laterality, path, found)
    rows, cols = d.source_shape
    src_box = source_box(box, d.scale, d.source_shape)
    info = dict(source_rows=rows, source_cols=cols, photometric=d.photometric,
                bits_stored=d.meta.get("BitsStored"), syntax=d.meta.get("TransferSyntaxUID"), voi=d.display.used_voi,
                backend=d.backend, decode_scale=d.scale, frames=d.frames, bbox_y0=src_box[0], bbox_x0=src_box[1],
                bbox_y1=src_box[2], bbox_x1=src_box[3], flipped=flipped)
    return img, info
