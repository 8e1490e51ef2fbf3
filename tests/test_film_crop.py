"""The crop on film scans as measured on real ones: a CBIS-DDSM CC scan whose chest-wall glow and border
rows carried the box to the full height, and a mini-MIAS scan whose film-holder strips won over a breast
that fills the film. Each phantom is first shown to match the measured numbers, then cropped through a
DICOM file as preprocessing reads it."""
import numpy as np
import pytest

from mammo_utils.dicom import StoredImage, read_stored_image
from mammo_utils.dicom.write import write_dicom
from mammo_utils.prepare import crop as cr
from mammo_utils.prepare import crop_quality as cq
from mammo_utils.prepare import film_artefacts as fa
from mammo_utils.prepare.preprocess import locate_breast, work_image
from mammo_utils.synthetic import phantoms
from mammo_utils.synthetic.film import to_film_bits

CBIS_ROWS = 4688  # the real scan's height: its numbers are quoted in its rows


def rows_of(mask):
    ys = np.flatnonzero(mask.any(axis=1))
    return ys[0], ys[-1] + 1


def located(tmp_path, img, bits, name):
    """Box of ``img`` written as a MONOCHROME2 file of ``bits`` bits (RLE, as CBIS-DDSM ships) and
    located as preprocessing does."""
    path = tmp_path / f"{name}.dcm"
    write_dicom(path, to_film_bits(img, bits), {"BitsStored": bits, "SOPClassUID": "1.2.840.10008.5.1.4.1.1.7"}, "rle")
    return locate_breast(read_stored_image(path))


def truth_score(box, mask, lesion):
    y0, x0, y1, x1 = box
    return mask[y0:y1, x0:x1].sum() / mask.sum(), bool(y0 <= lesion[0] < y1 and x0 <= lesion[1] < x1)


# ---- CBIS-DDSM CC: chest-wall glow and film-border rows ----------------------------------------------

@pytest.mark.parametrize("seed", [0, 1])
def test_glow_phantom_has_the_measured_numbers_at_work_size(seed):
    img, mask, _ = phantoms.phantom("film_glow", seed)
    small, _ = work_image(StoredImage.from_display(img))
    h, w = small.shape
    assert (h, w) == (390, 216)  # as the 4688x2592 scan
    assert 0.66 <= (small == 0).mean() <= 0.70  # background exactly 0 on 68 % of the pixels
    means = small.mean(axis=1)
    assert ((means[:3] >= 0.6) & (means[:3] <= 0.8)).all() and ((means[-4:] >= 0.6) & (means[-4:] <= 0.8)).all()
    assert means[3] < 0.05 and means[-5] < 0.05  # and only those rows
    top, bottom = rows_of(mask)
    assert abs(top * CBIS_ROWS / img.shape[0] - 540) < 60 and abs(bottom * CBIS_ROWS / img.shape[0] - 4200) < 60
    for r in (10, 30, h - 25, h - 10):  # above and below the breast, along the chest wall (right edge)
        lit = np.flatnonzero(small[r] > 0)
        assert lit.max() == w - 1 and len(lit) == w - lit.min()  # one run, hugging the edge
        assert 0.04 * w <= len(lit) <= 0.06 * w  # about 10 columns, 5 % of the width
        assert small[r, lit.min()] <= 0.02 and 0.22 <= small[r, -1] <= 0.3  # rising from 0.01 to 0.26


def test_glow_scan_box_holds_the_breast_without_border_rows_or_glow(tmp_path):
    """Was (0, 1088, 4688, 2592) on the real scan, the full height; the phantom gave the same."""
    img, mask, lesion = phantoms.phantom("film_glow", 0)
    box, seg = located(tmp_path, img, 16, "cbis_cc")
    kept, inside = truth_score(box, mask, lesion)
    assert kept >= 0.995 and inside, (box, kept)
    top, bottom = rows_of(mask)
    slack = 0.02 * img.shape[0]  # the box's own margin is 1 %
    assert top - slack <= box[0] <= top and bottom <= box[2] <= bottom + slack, (box, top, bottom)
    assert seg.found


def test_the_cause_is_the_glow_joining_the_breast(monkeypatch):
    """The glow is above a background clipped to 0, so it joins the breast's component; along the edge it
    reaches the image's ends. Without the band rule the box is the full height again."""
    img, mask, _ = phantoms.phantom("film_glow", 0)
    monkeypatch.setattr(fa, "edge_bands", lambda small, fg, *a: np.zeros(fg.shape, bool))
    box = cq.score(img, mask)["box"]
    assert box[0] <= 0.01 * img.shape[0] and box[2] >= 0.99 * img.shape[0], box


def test_border_rows_that_are_not_the_brightest_thing_still_leave(tmp_path):
    """On the real scan the border rows (0.6-0.8) are not "very bright": a label at full brightness sets
    the top of the range. They go as lines that are foreground across, not by their brightness."""
    img, mask, lesion = phantoms.phantom("film_glow", 1)
    img[150:260, 20:120] = 1.0  # a film label on the air side, 4 % of the image
    small, _ = work_image(StoredImage.from_display(img))
    seg = cr.segment_breast(small, max(small.shape))
    fg = (small > seg.threshold).astype(np.uint8)
    by_brightness = fa.edge_strips(fa.very_bright(small, seg.background), fg > 0)
    assert not by_brightness[:3].any() and not by_brightness[-4:].any()
    strips, _ = fa.film_artefacts(small, seg.background, fg)
    assert strips[:3].all() and strips[-4:].all() and not strips[3:-4].all(axis=1).any()
    box = located(tmp_path, img, 16, "labelled")[0]
    kept, inside = truth_score(box, mask, lesion)
    top, bottom = rows_of(mask)
    assert kept >= 0.995 and inside and box[0] >= top - 0.02 * img.shape[0] and box[2] <= bottom + 0.02 * img.shape[0]


def test_a_breast_tip_at_the_edge_is_never_a_band():
    """Without a glow, the breast's thin tip along the chest-wall edge comes after empty lines, or is short
    where the breast starts at the image's end: no band, however faint its fat. A breast running into
    the image corner is deep at once: no band either."""
    h, w = 390, 216
    yy, xx = np.mgrid[0:h, 0:w]
    none = np.zeros(h, bool), np.zeros(w, bool)
    for cy, by in ((195, 150), (150, 150), (120, 150)):  # in the middle rows; from the first row; over the corner
        breast = (w - 1 - xx) / 120.0 + ((yy - cy) / by) ** 2 < 1  # a CC outline, thin at its tips
        small = np.where(breast, 0.05, 0.0).astype(np.float32)
        assert not fa.edge_bands(small, breast, *none).any(), cy
    glow = breast.copy()
    glow[:, -10:] = True  # now a glow along the edge from the corner down to the breast, and below it
    small = np.where(breast, 0.4, np.where(glow, 0.1, 0.0)).astype(np.float32)
    band = fa.edge_bands(small, glow, *none)
    ys = np.flatnonzero(band.any(axis=1))
    assert band[:, :-10].sum() == 0 and not (band & breast).any() and ys.min() > cy + by - 10 and len(ys) > 40


# ---- mini-MIAS: film-holder strips beside a breast that fills the film ---------------------------------

def test_holder_phantom_is_the_reported_scan():
    img, mask, _ = phantoms.phantom("film_holder", 1)
    assert img.shape == (1024, 1024) and np.allclose(img * 255, np.round(img * 255))  # 8 bits
    cols = img.mean(axis=0)
    assert (img[:, -12:] == 0).all() and img[:, -13].min() > 0.97  # a black margin of 12 columns at the edge
    band = np.flatnonzero(img.min(axis=0) > 0.97)  # full height at the top of the range
    assert 0.025 * 1024 <= len(band) <= 0.035 * 1024 and band.max() == 1024 - 13
    bar = np.flatnonzero((img[:600] > 0.97).all(axis=0) & (cols < 0.9))
    assert 0.045 * 1024 <= len(bar) <= 0.055 * 1024 and (img[700:, bar] < 0.2).all()  # the bar: top two thirds
    assert mask[0].any() and mask[-1].any() and mask[:, 0].all()  # the breast fills the film ...
    small, _ = work_image(StoredImage.from_display(img))
    air = np.percentile(small[:, (bar.max() + band.min()) // 6], 50)  # the gap between bar and band
    b = 10
    sides = [np.percentile(s, 25) for s in (small[:b, :-5], small[-b:, :-5], small[:, :b], small[:, -5 - b:-5])]
    assert min(sides) > air + 0.1  # ... so no image side shows air


def test_a_holder_strip_never_wins_over_the_breast(tmp_path):
    """The crop kept the strips (box x 811-1021) and dropped the breast: 0 % of the lesion inside."""
    img, mask, lesion = phantoms.phantom("film_holder", 1)
    box, _ = located(tmp_path, img, 8, "mdb")
    kept, inside = truth_score(box, mask, lesion)
    assert kept >= 0.99 and inside, (box, kept)
    assert box[3] < 1024 - 12 - 31 - 51  # the strips are left out: the breast is clear of them here


def test_a_strip_larger_than_a_faint_breast_keeps_both():
    """A strip never sets the size the breast is measured against; when it is as large, both stay."""
    img = np.zeros((400, 320), np.float32)
    yy, xx = np.mgrid[0:400, 0:320]
    breast = (xx / 40.0) ** 2 + ((yy - 200) / 45.0) ** 2 < 1  # a small breast on the chest wall
    img[breast] = 0.3
    img[:, 200:290] = 0.98  # a flat bright bar, full height, 12 times the breast, air beyond it
    box = cr.breast_bbox(img)
    y0, x0, y1, x1 = box
    assert breast[y0:y1, x0:x1].sum() == breast.sum() and x0 == 0 and x1 >= 290, box


def test_air_inside_the_image_when_no_side_is_air():
    """Every side is tissue or strip; the darkest region (a gap of air) sets the background."""
    rng = np.random.default_rng(0)
    img = (0.4 + 0.01 * rng.standard_normal((200, 200))).astype(np.float32)
    img[:, 150:170] = 0.02 + 0.005 * rng.standard_normal((200, 20))  # the air gap
    img[:, 185:] = 1.0
    level, noise = cr.background_model(img)
    assert abs(level - 0.02) < 0.01 and noise < 0.02
    img[:, :10] = 0.0  # with an air side the sides decide as before
    assert cr.background_model(img) == (0.0, 0.0)


# ---- the same rules on the other phantoms ----------------------------------------------------------------

def test_a_film_edge_strip_inside_padding_does_not_stretch_the_box():
    """A film narrower than the scan, zero-padded: its edge strip runs the full height beside the chest
    wall, joined to the breast. It hugs the film's edge (not the image's) beyond the breast: a band."""
    img, mask, lesion = phantoms.phantom("film_padded", 6)
    s = cq.score(img, mask, lesion)
    assert s["kept"] >= 0.99 and s["lesion_inside"] and s["area_ratio"] <= 1.25, s


def test_the_flat_middle_of_a_fatty_breast_is_not_a_label():
    """Flat, bright, filling its box: but it fades into the tissue around it, where a label is a step."""
    img, mask, lesion = phantoms.phantom("fatty", 5, noise=0.02)
    s = cq.score(img, mask, lesion)
    assert s["zeroed"] <= 0.01 and s["kept"] >= 0.99, s
    img, mask, _ = phantoms.phantom("film_label", 0)  # a label on the skin line still leaves
    small, _ = work_image(StoredImage.from_display(img))
    seg = cr.segment_breast(small, max(small.shape))
    fg = (small > seg.threshold).astype(np.uint8)
    assert fa.film_artefacts(small, seg.background, fg)[1].sum() >= 0.01 * small.size
