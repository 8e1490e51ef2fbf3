"""Image operations on drawn phantoms and on synthetic ground truth; the resumable CLI job."""
import json
import os
import subprocess
import sys

import cv2
import numpy as np
import pandas as pd
import pytest
from conftest import TINY

from mammo_utils.dicom import read_dicom, read_image
from mammo_utils.paths import parse_size
from mammo_utils.prepare import crop as cr
from mammo_utils.prepare import crop_quality as cq
from mammo_utils.prepare import manifest as pm
from mammo_utils.prepare import preprocess as pp
from mammo_utils.prepare import runner
from mammo_utils.prepare.png import to_uint
from mammo_utils.synthetic import phantoms, plan_dataset, truth_mask, write_dataset


def phantom(h=400, w=320, side="left", touch=False, seed=0):
    """Half-ellipse breast with a fading skin edge, noise, a label and an edge strip."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    x = xx if side == "left" else (w - 1 - xx)
    by = 0.62 * h if touch else 0.38 * h
    r = np.sqrt((x / (0.6 * w)) ** 2 + ((yy - h / 2) / by) ** 2)
    breast = r < 1
    img = np.where(breast, 0.15 + 0.5 * np.sqrt(np.clip(1 - r ** 2, 0, 1)), 0.0)
    img += rng.normal(0, 0.01, img.shape)
    return np.clip(img, 0, 1).astype(np.float32), breast


def box_of(mask):
    ys, xs = np.nonzero(mask)
    return ys.min(), xs.min(), ys.max() + 1, xs.max() + 1


def assert_good_box(box, breast, max_ratio=1.15):
    y0, x0, y1, x1 = box
    kept = breast[y0:y1, x0:x1].sum() / breast.sum()
    ty0, tx0, ty1, tx1 = box_of(breast)
    ratio = (y1 - y0) * (x1 - x0) / ((ty1 - ty0) * (tx1 - tx0))
    assert kept >= 0.99 and ratio <= max_ratio, (box, kept, ratio)


def test_bbox_plain_and_right_side():
    for side in ("left", "right"):
        img, breast = phantom(side=side)
        assert_good_box(cr.breast_bbox(img), breast)


def test_bbox_ignores_label_and_edge_strips():
    img, breast = phantom()
    text = np.zeros(img.shape, np.uint8)
    cv2.putText(text, "R-MLO", (200, 40), cv2.FONT_HERSHEY_SIMPLEX, 1.0, 255, 2)
    img[text > 0] = 1.0    # burned-in label, brighter than the breast
    img[:, -4:] = 1.0      # bright detector edge, far side
    img[:3, :] = 1.0       # and along the top, touching the breast
    img[-30:-10, 250:300] = 1.0  # a bright marker block
    assert_good_box(cr.breast_bbox(img), breast)


def test_bbox_touching_edges_with_pectoral_muscle():
    img, breast = phantom(touch=True)
    yy, xx = np.mgrid[0:img.shape[0], 0:img.shape[1]]
    pect = (xx / 120 + yy / 260) < 1
    img[pect] = 0.9
    breast = breast | pect
    box = cr.breast_bbox(img)
    assert box[0] == 0 and box[2] == img.shape[0]
    assert_good_box(box, breast)


def test_bbox_fatty_low_contrast_and_dense():
    img, breast = phantom()
    fatty = np.where(breast, 0.06 + 0.3 * (img - 0.15), img * 0.2).astype(np.float32)
    assert_good_box(cr.breast_bbox(fatty), breast)
    dense = np.where(breast, 0.85 + 0.1 * img, 0).astype(np.float32)
    assert_good_box(cr.breast_bbox(dense), breast)


def test_bbox_joins_large_pieces_of_one_breast():
    """A dark band across the breast (fat below the threshold, a paddle edge) splits it in two large
    pieces: both are breast, and the box must hold both."""
    img, breast = phantom()
    img[196:210, :] = 0.0
    breast[196:210, :] = False
    assert_good_box(cr.breast_bbox(img), breast)


def test_bbox_blank_image_returns_full_image(caplog):
    assert cr.breast_bbox(np.zeros((50, 40), np.float32)) == (0, 0, 50, 40)
    assert "no breast found" in caplog.text


def test_crop_orient_resize_to_uint():
    img = np.zeros((100, 80), np.float32)
    img[10:90, 50:80] = 0.8  # breast on the right
    out, flipped = cr.orient(img, "R")
    assert flipped and out[10:90, :30].mean() > 0.7
    assert not cr.orient(out, "R")[1]
    c = cr.crop(img, (10, 50, 90, 80))
    assert c.shape == (80, 30)
    with pytest.raises(ValueError):
        cr.crop(img, (0, 0, 0, 10))
    r = cr.resize_pad(c, (64, 32))
    assert r.shape == (64, 32) and r[:, :24].min() > 0.7 and r[:, 25:].max() == 0  # padded on the right
    assert cr.resize_pad(c, (64, 32), keep_aspect=False).min() > 0.7
    wide = cr.resize_pad(np.full((30, 80), 0.8, np.float32), (64, 32))  # 12 rows of image, then padding below
    assert wide[:12].min() > 0.7 and wide[12:].max() == 0
    u8, u16 = to_uint(np.array([0, 0.5, 1.0]), 8), to_uint(np.array([0, 0.5, 1.0]), 16)
    assert u8.tolist() == [0, 128, 255] and u16.dtype == np.uint16 and u16[-1] == 65535
    assert parse_size("1024x512") == (1024, 512)


def crop_quality(data, specs):
    """Per image: lesion inside the crop, fraction of breast pixels kept, box area / true box area."""
    rows = []
    for s in specs:
        d = read_dicom(data / f"{s['split']}_images" / str(s["patient_id"]) / f"{s['image_id']}.dcm")
        y0, x0, y1, x1 = cr.breast_bbox(d.image)
        mask = truth_mask(s)
        ty0, tx0, ty1, tx1 = box_of(mask)
        row = dict(kept=mask[y0:y1, x0:x1].sum() / mask.sum(),
                   area_ratio=(y1 - y0) * (x1 - x0) / ((ty1 - ty0) * (tx1 - tx0)), lesion_inside=True)
        if s["cancer"]:
            from mammo_utils.synthetic import lesion_position
            ly, lx = lesion_position(s["shape"], s["view"], s["breast"])
            if s["laterality"] == "R":
                lx = s["shape"][1] - 1 - lx
            row["lesion_inside"] = y0 <= ly < y1 and x0 <= lx < x1
        rows.append(row)
    return pd.DataFrame(rows)


def test_crop_quality_on_synthetic_ground_truth(tiny_data):
    specs = plan_dataset(TINY["patients"], TINY["test_patients"], TINY["seed"], TINY["size"], TINY["cancer_rate"])
    q = crop_quality(tiny_data, specs)
    print(q.describe())
    assert q.lesion_inside.all()
    assert q.kept.min() >= 0.99
    assert q.area_ratio.max() <= 1.15


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "mammo_utils", "preprocess", *args], capture_output=True, text=True)


def test_cli_bad_files_and_resume(tmp_path, tiny_data):
    import shutil

    data = tmp_path / "data"
    shutil.copytree(tiny_data, data)
    train = pd.read_csv(data / "train.csv")
    bad = train.head(3)
    paths = [data / "train_images" / str(r.patient_id) / f"{r.image_id}.dcm" for r in bad.itertuples()]
    paths[0].write_bytes(paths[0].read_bytes()[:2000])          # truncated
    paths[1].write_text("not a dicom")                          # not DICOM
    paths[2].unlink()                                           # missing
    out = tmp_path / "png"
    res = run_cli("--data", str(data), "--split", "train", "--out", str(out), "--size", "128x64", "--jobs", "2")
    assert res.returncode == 1, res.stderr
    assert "3 file(s) failed" in res.stderr
    manifest = pd.read_csv(out / "manifest.csv")
    errors = pd.read_csv(out / "errors.csv")
    assert len(manifest) == len(train) - 3 and manifest.image_id.is_unique
    assert sorted(errors.image_id) == sorted(bad.image_id)
    assert all(str(p) in f for p, f in zip(sorted(map(str, paths)), sorted(errors.file)))
    png = cv2.imread(str(out / manifest.path[0]), cv2.IMREAD_UNCHANGED)
    assert png.shape == (128, 64) and png.dtype == np.uint8
    assert {"bbox_y0", "bbox_x1", "photometric", "voi", "source_rows", "seconds"} <= set(manifest.columns)
    assert (out / "preprocess.json").exists()

    # Rerun after deleting two outputs and repairing one bad file: only those are redone.
    for p in manifest.path[:2]:
        os.remove(out / p)
    shutil.copy(tiny_data / "train_images" / str(bad.iloc[1].patient_id) / f"{bad.iloc[1].image_id}.dcm", paths[1])
    res = run_cli("--data", str(data), "--split", "train", "--out", str(out), "--size", "128x64", "--jobs", "1")
    assert res.returncode == 1
    summary = res.stdout
    assert '"processed": 3' in summary and '"failed": 2' in summary
    manifest2 = pd.read_csv(out / "manifest.csv")
    assert len(manifest2) == len(train) - 2 and manifest2.image_id.is_unique
    assert all((out / p).exists() for p in manifest2.path)
    assert not list(out.rglob("*.tmp.png"))

    # Changing the settings into the same folder is refused instead of mixing images.
    res = run_cli("--data", str(data), "--out", str(out), "--size", "256x128")
    assert res.returncode != 0 and "other settings" in res.stderr


def test_torn_manifest_line_is_dropped(tmp_path):
    """A killed run can leave its last manifest line cut anywhere: the torn row must not count as done."""
    path = tmp_path / "manifest.csv"
    header = "image_id,path,seconds\n"
    path.write_text(header + "1,1/1.png,0.1\n2,1/2.png,0.2\n1,1/1.png,0.3\n3,1/3.p")  # cut inside the path
    df = pm.read_rows(path)
    assert sorted(df.image_id) == ["1", "2"] and df.set_index("image_id").seconds["1"] == 0.3  # duplicate: last wins
    path.write_text(header + "1,1/1.png,0.1\n3,1/3.png,")  # cut before the last value
    assert sorted(pm.read_rows(path).image_id) == ["1"]
    path.write_text(header + "1,1/1.png,0.1\n3")  # cut after the id
    assert sorted(pm.read_rows(path).image_id) == ["1"]


def test_preprocess_file_maps_box_to_source_pixels(tiny_data, tiny_truth):
    r = tiny_truth[tiny_truth.syntax == "j2k"].iloc[0]
    path = tiny_data / f"{r.split}_images" / str(r.patient_id) / f"{r.image_id}.dcm"
    cfg = pp.PreprocessConfig(size=(64, 32))
    img, info = pp.preprocess_file(path, cfg, r.laterality)
    assert info["decode_scale"] == 2 and img.shape == (64, 32)
    full_box = cr.breast_bbox(read_image(path))
    got = (info["bbox_y0"], info["bbox_x0"], info["bbox_y1"], info["bbox_x1"])
    assert np.abs(np.subtract(got, full_box)).max() <= 6


def test_preprocessing_and_comparison_paths_do_not_import_torch():
    """Notebooks 01-03 and 07 start without torch (seconds per kernel): reading a run folder needs none."""
    code = ("import sys, mammo_utils.prepare.preprocess, mammo_utils.dicom, mammo_utils.synthetic, mammo_utils.learn.sampling, "
            "mammo_utils.learn.runs, mammo_utils.judge.compare; print('torch' in sys.modules)")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert res.stdout.strip() == "False"


def test_killed_run_leaves_no_partial_output(tmp_path, tiny_data):
    import signal
    import time

    out = tmp_path / "png"
    args = [sys.executable, "-m", "mammo_utils", "preprocess", "--data", str(tiny_data), "--out", str(out),
            "--size", "384x192", "--jobs", "2", "--full-decode"]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 60
    manifest_path = out / "manifest.csv"
    while time.time() < deadline and (not manifest_path.exists() or manifest_path.read_text().count("\n") < 4):
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    res = run_cli(*args[4:])
    assert res.returncode == 0, res.stderr
    summary = json.loads(res.stdout)
    assert summary["processed"] > 0 and summary["skipped"] > 0, "the kill should land mid-run"
    manifest = pd.read_csv(out / "manifest.csv")
    train = pd.read_csv(tiny_data / "train.csv")
    assert len(manifest) == len(train) and manifest.image_id.is_unique
    assert not [p for p in out.rglob("*.png") if p.name.startswith(".")]
    for p in manifest.path:
        assert cv2.imread(str(out / p), cv2.IMREAD_UNCHANGED).shape == (384, 192)


# ---- issue: the crop never loses breast tissue -----------------------------------------------------

@pytest.fixture(scope="module")
def hard_data(tmp_path_factory):
    """The generator's hard anatomy: fatty breasts fading into the background, lobular fat, wide bright
    pectoral muscles, dense breasts, skin folds, nipples in profile, breasts touching an edge."""
    out = tmp_path_factory.mktemp("hard") / "data"
    write_dataset(out, patients=24, seed=5, size=(320, 256), test_patients=2, anatomy="hard", jobs=2, progress=False)
    return out


def test_crop_keeps_every_breast_on_hard_anatomy(hard_data):
    report = cq.check_dataset(hard_data, "train")
    kinds = pd.read_csv(hard_data / "synthetic_truth.csv")
    assert len(report) == int((kinds.split == "train").sum()) >= 90
    worst = report.sort_values("kept").head(3)
    assert report.found.all(), "every image must have a breast"
    assert report.kept.min() >= 0.99, worst
    assert report.zeroed.max() <= 0.01, report.sort_values("zeroed").tail(3)
    assert report.area_ratio.max() <= 1.25, report.sort_values("area_ratio").tail(3)
    assert report.lesion_inside.all()


def test_crop_keeps_every_breast_on_hard_phantoms():
    """Phantoms drawn in memory at three noise levels; the previous method failed several of them."""
    rows = [dict(kind=k, noise=n, **cq.score(*phantoms.phantom(k, seed, noise=n)[:2]))
            for k in phantoms.PHANTOM_KINDS for seed in range(3) for n in (0.004, 0.02)]
    report = pd.DataFrame(rows)
    assert report.found.all() and report.kept.min() >= 0.99 and report.zeroed.max() <= 0.01
    assert report.area_ratio.max() <= 1.25
    drawn = (phantoms.phantom(k, s)[:2] for k in phantoms.PHANTOM_KINDS for s in range(7))
    legacy = [m[b[0]:b[2], b[1]:b[3]].sum() / m.sum() for m, b in ((m, cq.legacy_bbox(img)) for img, m in drawn)]
    assert min(legacy) < 0.99, "the phantoms must be hard enough to fail the previous method"


def test_masking_removes_isolated_labels_but_never_tissue():
    img, mask, _ = phantoms.phantom("labelled", 0)
    text = np.zeros(img.shape, np.uint8)
    cv2.putText(text, "L-MLO", (img.shape[1] - 150, 40), cv2.FONT_HERSHEY_SIMPLEX, 1.2, 255, 3)
    out = cr.apply_mask(img, cr.segment_breast(img))
    assert (out[text > 0] == 0).mean() > 0.95, "an isolated label must be zeroed"
    np.testing.assert_array_equal(out[mask], img[mask])  # not one tissue pixel changed


def test_default_synthetic_masks_keep_tissue(tiny_data):
    report = cq.check_dataset(tiny_data, "train")
    assert report.kept.min() >= 0.99 and report.zeroed.max() <= 0.01 and report.area_ratio.max() <= 1.25


def _mammogram_like(tmp_path, name, window, photometric="MONOCHROME2", shape=(900, 700), seed=0):
    """Air far below the window, a breast with a sharp skin line, tissue texture and noise."""
    from mammo_utils.dicom import write_dicom

    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:shape[0], 0:shape[1]]
    r = np.sqrt((xx / (0.7 * shape[1])) ** 2 + ((yy - shape[0] / 2) / (0.42 * shape[0])) ** 2)
    tissue = 1600 + 900 * np.sqrt(np.clip(1 - r ** 2, 0, 1)) + 250 * np.sin(xx / 9.0) * np.cos(yy / 13.0)
    sv = np.where(r < 1, tissue, 80) + rng.normal(0, 20, shape)
    sv = np.clip(sv, 0, 4095).astype(np.uint16)
    if photometric == "MONOCHROME1":
        sv = (4095 - sv).astype(np.uint16)
        window = dict(window, WindowCenter=4095 - window["WindowCenter"])
    path = tmp_path / name
    write_dicom(path, sv, dict(BitsStored=12, PhotometricInterpretation=photometric, **window), "jpeg_lossless")
    return path


@pytest.mark.parametrize("photometric", ["MONOCHROME1", "MONOCHROME2"])
@pytest.mark.parametrize("window,linear", [(dict(WindowCenter=2129.4, WindowWidth=1400), True),
                                           (dict(WindowCenter=2100, WindowWidth=1400, VOILUTFunction="SIGMOID"), False)])
def test_output_pixels_match_windowing_first(tmp_path, window, linear, photometric):
    """Against windowing the whole image first (same box, same resampling), to rounding (1 level):
    a LINEAR window resamples stored values and looks up the output pixels only (air is clamped to
    the window's end first, so it cannot darken the skin line); a SIGMOID window is curved, so it is
    looked up on the crop first (resampling stored values would be off by ~30 levels at the skin line)."""
    worst = 1
    from mammo_utils.dicom import read_stored_image

    path = _mammogram_like(tmp_path, "m.dcm", window, photometric)
    cfg = pp.PreprocessConfig(size=(128, 64), mask_outside=False)
    img, info = pp.preprocess_file(path, cfg, "L")
    s = read_stored_image(path, min_size=cfg.size)
    assert s.scale == 4 and s.display.linear == linear
    box = tuple(round(info[f"bbox_{c}"] / s.scale) for c in ("y0", "x0", "y1", "x1"))
    shown = read_dicom(path, min_size=cfg.size).image  # windowed first, same reduced decode
    ref = cr.crop(shown, box)
    h, w = cr.fit_shape(ref.shape, cfg.size)
    ref = to_uint(cr.resize(ref, (h, w)))
    ref = ref[:, ::-1] if info["flipped"] else ref
    diff = np.abs(img[:h, :w].astype(int) - ref.astype(int))
    assert diff.max() <= worst, (diff.max(), np.percentile(diff, 99.9))
    assert img[:h, :w].mean() > 40 and (img[h:] == 0).all() and (img[:, w:] == 0).all()


def test_background_model_prefers_the_quiet_side_on_a_tie():
    """A clipped window puts air at exactly 0: a side that is a quarter air and three quarters breast
    has the same lower quartile (0) as a side of pure air; its spread must not become the noise."""
    img = np.zeros((100, 100), np.float32)
    img[:3, 26:56] = 0.125
    img[:3, 56:] = 0.5  # the breast touches the top edge over three quarters of its width
    assert cr.background_model(img) == (0.0, 0.0)


@pytest.mark.parametrize("op", [cv2.MORPH_OPEN, cv2.MORPH_CLOSE, cv2.MORPH_DILATE])
def test_morphology_on_the_objects_box_equals_the_whole_image(op):
    """Segmentation filters only the objects' box grown by the kernel: the same result as the whole image."""
    rng = np.random.default_rng(0)
    for k in (3, 9, 17):
        for _ in range(40):
            h, w = rng.integers(5, 90, 2)
            mask = np.zeros((h, w), np.uint8)
            for _ in range(rng.integers(0, 4)):
                cv2.circle(mask, (int(rng.integers(0, w)), int(rng.integers(0, h))), int(rng.integers(1, 25)), 1, -1)
            padded = cv2.copyMakeBorder(mask, k, k, k, k, cv2.BORDER_CONSTANT, value=0)
            whole = cv2.morphologyEx(padded, op, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (k, k)))[k:-k, k:-k]
            np.testing.assert_array_equal(cr._morph(mask, op, k), whole)


@pytest.mark.parametrize("f", [2, 3, 4, 6, 8])
def test_area_shrink_is_the_block_mean(f):
    rng = np.random.default_rng(f)
    img = rng.integers(0, 4096, (9 * f - 1, 6 * f - 1)).astype(np.uint16)  # f - 1 leftover rows/columns are dropped
    blocks = img[:8 * f, :5 * f].astype(np.float64).reshape(8, f, 5, f).mean(axis=(1, 3))
    got = cr.area_shrink(img, f)
    assert got.dtype == np.uint16 and got.shape == (8, 5)
    assert np.abs(got - blocks).max() <= 1.0  # rounded once per halving
    np.testing.assert_allclose(cr.area_shrink(img.astype(np.float32), f), blocks, rtol=1e-5)


@pytest.mark.parametrize("syntax,tolerance", [("explicit", 0.5), ("j2k", 3.0)])
def test_small_breast_in_large_file_is_never_upsampled(tmp_path, syntax, tolerance, monkeypatch):
    """A reduction level chosen for the whole 1600x1280 image (x8 for 128x64) leaves this breast's crop
    at ~45x17 pixels, upsampled x2.8. The level must be chosen for the crop: the manifest's decode_scale
    and box show a crop at or above the output resolution, and the output equals a full-resolution read
    cropped at the same box and resized. Stated tolerance, mean |diff| in levels of 255: 0.5 for area
    reductions (exact in practice), 3 for J2K, whose wavelet low-pass is not an area mean on detail this
    fine. The whole-image level misses both by far (6.3 and 10.0 measured)."""
    from mammo_utils.dicom import read_stored_image
    from mammo_utils.dicom.write import write_dicom

    img = np.zeros((1600, 1280), np.float32)
    small, mask = phantom(400, 180, seed=3)  # a 400x180 breast on the chest wall, in the middle rows
    yy, xx = np.indices(small.shape)
    img[600:1000, :180] = np.clip(small + 0.15 * mask * np.sin(yy / 3.0) * np.cos(xx / 4.0), 0, 1)  # fine detail
    path = tmp_path / "small.dcm"
    write_dicom(path, np.rint(img * 4095).astype(np.uint16), {"BitsStored": 12, "WindowCenter": 2048,
                                                              "WindowWidth": 4096}, syntax=syntax)
    cfg = pp.PreprocessConfig(size=(128, 64), orient=False, mask_outside=False)

    def versus_full_resolution(out, src_box):
        shape = cr.fit_shape((src_box[2] - src_box[0], src_box[3] - src_box[1]), cfg.size)
        ref = pp.output_pixels(read_stored_image(path), src_box, shape, cfg.bits)
        return np.abs(out[:shape[0], :shape[1]].astype(float) - ref.astype(float)).mean()

    import mammo_utils.dicom as D

    reads = []
    real_read = D.read_stored_image
    monkeypatch.setattr(D, "read_stored_image", lambda *a, **k: reads.append(k.get("min_size")) or real_read(*a, **k))
    out, info = pp.preprocess_file(path, cfg, "L")
    monkeypatch.undo()
    src_box = tuple(info[k] for k in ("bbox_y0", "bbox_x0", "bbox_y1", "bbox_x1"))
    assert info["decode_scale"] == 2, "the coarsest level that keeps the crop above 128x64"
    assert len(reads) == 2, "one reread, straight at the level the crop needs"
    reduced_box = [v / info["decode_scale"] for v in src_box]
    assert not pp.crop_is_upsampled(tuple(int(v) for v in reduced_box), cfg)
    error = versus_full_resolution(out, src_box)
    print(f"{syntax}: mean |diff| {error:.2f} levels against a full-resolution crop")
    assert error <= tolerance
    # the level chosen for the whole image alone upsamples this crop and misses the tolerance
    coarse = read_stored_image(path, min_size=cfg.size)
    box, _ = pp.locate_breast(coarse)
    assert coarse.scale == 8 and pp.crop_is_upsampled(box, cfg)
    old, old_box, _ = pp.preprocess_stored(coarse, cfg, "L", path)
    assert versus_full_resolution(old, pp.source_box(old_box, coarse.scale, coarse.source_shape)) > 2 * tolerance


def test_no_crop_of_a_dataset_is_upsampled(tiny_data, tmp_path):
    """Every manifest row: the crop box, in the pixels it was resized from, covers its output shape."""
    cfg = pp.PreprocessConfig(size=(80, 40))
    runner.run_preprocess(tiny_data, "train", tmp_path / "png", cfg, jobs=2, progress=False)
    m = pd.read_csv(tmp_path / "png" / "manifest.csv")
    assert (m.decode_scale > 1).any(), "the check needs reduced reads"
    h = (m.bbox_y1 - m.bbox_y0) / m.decode_scale
    w = (m.bbox_x1 - m.bbox_x0) / m.decode_scale
    out = [cr.fit_shape((round(a), round(b)), cfg.size) for a, b in zip(h, w)]
    assert all(a + 1 >= o[0] and b + 1 >= o[1] for a, b, o in zip(h, w, out)), "a crop was upsampled"
