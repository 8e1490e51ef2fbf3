"""The patient and mistake browsers through their programmatic surface: what render() puts on screen."""
import shutil

import numpy as np
import pytest

from mammo_utils.errors import UserError
from mammo_utils.explore import tiles
from mammo_utils.explore import viewer as V
from mammo_utils.explore.mistakes import MistakeBrowser
from mammo_utils.tables import read_csv


@pytest.fixture(scope="module")
def pv(tiny_data):
    return V.PatientViewer(tiny_data, split="train", display_px=256, tile_px=(200, 160))


def red_pixels(img):
    return (img[..., 0] == 255) & (img[..., 1] == 60) & (img[..., 2] == 60)


def test_render_shows_every_view_side_by_side(pv):
    img = pv.render()
    assert img.dtype == np.uint8 and img.ndim == 3 and img.shape[2] == 3
    assert img.shape[1] == 160 * len(pv.views) and len(pv.views) >= 4
    assert [(v["laterality"], v["view"]) for v in pv.views[:4]] == tiles.STANDARD_VIEWS


def test_window_changes_the_pixels(pv):
    pv.reset_window()
    before = pv.render()
    w = pv.presets(0)[0] if pv.presets(0) else None
    center = (w.center if w else 2000) + (w.width if w else 2000) * 0.3
    pv.set_window(center, (w.width if w else 2000) * 0.3)
    after = pv.render()
    assert np.abs(after.astype(int) - before.astype(int)).mean() > 5
    pv.set_window(center, 10, "SIGMOID")
    assert not np.array_equal(pv.render(), after)
    with pytest.raises(UserError):
        pv.set_window(100, 0)
    pv.reset_window()
    np.testing.assert_array_equal(pv.render(), before)


def test_box_overlay_draws_a_rectangle_around_the_breast(pv):
    pv.set_overlays(box=False, mask=False, lesions=False)
    plain = pv.view_rgb(0)
    assert not red_pixels(plain).any()
    pv.set_overlays(box=True)
    boxed = pv.view_rgb(0)
    red = red_pixels(boxed)
    ys, xs = np.nonzero(red)
    assert red.sum() > 50
    h, w = boxed.shape[:2]
    # a rectangle: its four edges are red rows and columns, its inside is not
    y0, y1, x0, x1 = ys.min(), ys.max(), xs.min(), xs.max()
    assert red[y0, x0:x1].mean() > 0.9 and red[y1, x0:x1].mean() > 0.9
    assert red[y0:y1, x0].mean() > 0.9 and red[y0:y1, x1].mean() > 0.9
    assert not red[y0 + 5:y1 - 5, x0 + 5:x1 - 5].any()
    # the box holds the bright breast: more signal inside than outside
    inside = plain[y0 + 2:y1 - 1, x0 + 2:x1 - 1, 0].mean()
    assert inside > plain[..., 0].mean()
    pv.set_overlays(box=False)
    np.testing.assert_array_equal(pv.view_rgb(0), plain)


def test_a_blank_view_gets_no_box_and_no_error(pv, monkeypatch):
    """The box shows where preprocessing would crop; a file that displays flat has no breast to box."""
    monkeypatch.setattr(V, "display_image", lambda v, mode, window: np.zeros(v.stored.shape, np.float32))
    pv.set_overlays(box=True, mask=True, lesions=False)
    try:
        assert not red_pixels(pv.view_rgb(0)).any()
    finally:
        pv.set_overlays(box=False, mask=False)


def test_next_previous_and_filters(pv, tiny_data):
    first = pv.patient_id
    second = pv.next().patient_id
    assert second != first and pv.previous().patient_id == first
    assert pv.previous().patient_id == pv.patients[-1]  # wraps around
    pv.select(first)
    train = read_csv(tiny_data / "train.csv")
    cancer_patients = set(train[train.cancer == 1].patient_id)
    kept = pv.set_filter(cancer_only=True)
    assert set(kept) == cancer_patients and pv.patient_id in cancer_patients
    seen = {pv.next().patient_id for _ in range(len(kept))}
    assert seen == cancer_patients
    machine = int(train.machine_id.iloc[0])
    assert set(pv.set_filter(machine_id=machine)) == set(train[train.machine_id == machine].patient_id)
    with pytest.raises(UserError):
        pv.set_filter(machine_id=-1)
    pv.set_filter()
    with pytest.raises(UserError):
        pv.select(1)


def test_stored_mode_shows_monochrome1_as_stored(tiny_data):
    truth = read_csv(tiny_data / "synthetic_truth.csv")
    m1 = truth[(truth.photometric == "MONOCHROME1") & (truth.split == "train")].iloc[0]
    v = V.PatientViewer(tiny_data, display_px=256).select(m1.patient_id)
    i = next(k for k, r in enumerate(v.views) if r["image_id"] == m1.image_id)
    read = v.view_image(i)
    v.set_mode("stored", view=i)
    stored = v.view_image(i)
    assert read[:4, -4:].mean() < 0.2 and stored[:4, -4:].mean() > 0.8 or \
        read[:4, :4].mean() < 0.2 and stored[:4, :4].mean() > 0.8  # white background as stored
    with pytest.raises(UserError):
        v.set_mode("preprocessed")  # no run


def test_headless_show_draws_one_figure(pv, monkeypatch):
    monkeypatch.delenv("JPY_SESSION_NAME", raising=False)
    fig = pv.show()
    assert fig is not None and fig.axes[0].get_title().startswith("patient")


def test_widget_controls_drive_the_viewer(pv):
    pytest.importorskip("ipywidgets")
    box = pv.widget()
    w = pv._widget
    before = w.image.value
    w.width.value = w.width.value / 4
    assert w.image.value != before
    w.next_btn.click()
    assert w.patient.value == pv.patient_id
    pv.reset_window()
    assert box is pv.widget()


@pytest.fixture(scope="module")
def small_run(tiny_data, tiny_png, tmp_path_factory):
    """A run folder as the pipeline lays it out: preprocessed images, folds, one trained fold."""
    from mammo_utils import paths
    from mammo_utils.learn import train
    from mammo_utils.learn.config import TrainConfig
    from mammo_utils.learn.sampling import make_folds
    from mammo_utils.tables import read_table

    run = tmp_path_factory.mktemp("viewer_run")
    pre = paths.preprocessed_dir(run, "train", "64x32")
    shutil.copytree(tiny_png, pre)
    make_folds(read_table(tiny_data), n_splits=3).to_csv(paths.folds_csv(run), index=False)
    train.train(TrainConfig(run_dir=str(paths.train_dir(run, 0)), preprocessed=str(pre), folds=str(paths.folds_csv(run)),
                            model="resnet10t", epochs=1, batch_size=8, workers=0, max_steps_per_epoch=1), progress=False)
    return run


def test_run_overlays_probability_and_cam(tiny_data, small_run):
    v = V.PatientViewer(tiny_data, run_dir=small_run, display_px=256)
    v.set_mode("preprocessed")
    plain = v.view_rgb(0)
    assert plain.shape[:2] == (64, 32)
    p = v.probability(0)
    assert p is not None and 0 <= p <= 1
    v.set_overlays(cam=True)
    assert not np.array_equal(v.view_rgb(0), plain)


def test_mistake_browser_steps_through_the_worst_breasts(small_run):
    m = MistakeBrowser(small_run, display_px=256)
    assert len(m.mistakes) >= 1 and set(m.mistakes.kind) <= {"false negative", "false positive", "lowest cancer",
                                                               "highest negative"}
    first = m.patient_id
    assert first == str(m.mistakes.patient_id.iloc[0])
    assert all(s.mode == "preprocessed" for s in m.view_states.values())
    img = m.render()
    assert img.ndim == 3 and "breast p=" in m.title()
    assert len(m.patients) >= 2  # ten worst of each kind, from a fold of several patients
    assert m.next().patient_id == m.patients[1] and m.previous().patient_id == first


@pytest.mark.parametrize("photometric", ["MONOCHROME1", "MONOCHROME2"])
def test_viewer_reads_exactly_what_training_reads(tmp_path, photometric):
    """"As read" in the viewer is read_image's output (VOI LUT Sequence, inversion, padding), at the
    viewer's size; a window from the slider is what read_dicom gives with that window."""
    from pydicom.dataset import Dataset
    from pydicom.sequence import Sequence

    from mammo_utils.dicom import read_dicom, read_image
    from mammo_utils.dicom.lut import Window
    from mammo_utils.dicom.write import write_dicom

    rng = np.random.default_rng(0)
    sv = rng.integers(100, 4000, (512, 384)).astype(np.uint16)
    sv[:40] = 0  # padding rows
    item = Dataset()
    item.LUTDescriptor = [4096, 0, 16]
    item.add_new(0x00283006, "US", [int(65535 * (i / 4095) ** 2) for i in range(4096)])  # a curved VOI LUT
    path = tmp_path / "lut.dcm"
    write_dicom(path, sv, dict(BitsStored=12, VOILUTSequence=Sequence([item]), WindowCenter=2000, WindowWidth=400,
                               PhotometricInterpretation=photometric, PixelPaddingValue=0), "explicit")
    view = tiles.read_stored_view(path, 256)
    as_read = tiles.display_image(view, "read", None)
    np.testing.assert_allclose(as_read, read_image(path, min_size=(256, 128)), atol=1e-6)
    assert view.display.used_voi == "VOILUTSequence"
    window = Window(1500.0, 800.0, "LINEAR")
    np.testing.assert_allclose(tiles.display_image(view, "read", window),
                               read_dicom(path, min_size=(256, 128), window=window).image, atol=1e-6)
    assert not np.allclose(tiles.display_image(view, "read", window), as_read, atol=0.05)


def test_viewers_use_the_preprocessed_folder_the_model_trained_on(small_run, tmp_path):
    """A sweep run keeps its images in ``_shared/``, and a run may hold two preprocessed sizes: the
    viewers read the folder the run's config.json records, never the first one alphabetically."""
    import json
    import shutil

    from mammo_utils import paths

    run = tmp_path / "sweep" / "combo_seed0"
    shutil.copytree(small_run, run)
    shared = tmp_path / "sweep" / "_shared" / "preprocessed" / "train_64x32_abc"
    shutil.move(str(run / "preprocessed" / "train_64x32"), shared)
    decoy = run / "preprocessed" / "train_32x16"  # sorts first; its images are black
    decoy.mkdir(parents=True)
    (decoy / paths.MANIFEST).write_text("image_id,path\n")
    cfg_path = paths.train_dir(run, 0) / paths.CONFIG
    cfg = json.loads(cfg_path.read_text())
    cfg["preprocessed"] = str(shared)
    cfg_path.write_text(json.dumps(cfg))
    m = MistakeBrowser(run, display_px=256)
    assert m._preprocessed_dir() == shared
    screen = m.render()
    assert screen[30:].max() > 100 and "breast p=" in m.title()  # real images, and the model's probabilities
    assert all(m.probability(i) is not None for i in range(len(m.views)))
