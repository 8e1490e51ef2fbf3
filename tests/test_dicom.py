"""read_image against the DICOM standard's formulas, pydicom's own decode, and bad input."""
import cv2
import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.pixels import apply_modality_lut as pd_modality
from pydicom.pixels import apply_voi_lut as pd_voi

from mammo_utils import dicom
from mammo_utils.dicom import (
    DicomReadError,
    Window,
    apply_minmax,
    apply_modality_lut,
    apply_window,
    build_display_lut,
    read_dicom,
    read_image,
    write_dicom,
)
from mammo_utils.dicom.lut import apply_display_lut


# ---- formulas: PS3.3 C.11.2.1.2, computed by hand ------------------------------------------------
def test_linear_window_hand_values():
    x = np.array([0, 1023.5, 1024, 1535.5, 2047, 3000], np.float32)
    y = apply_window(x, center=1024, width=1024, function="LINEAR")
    # below c-0.5-(w-1)/2 = 512 -> 0; ((x-(c-0.5))/(w-1)+0.5)
    expect = [0.0, 0.5, (1024 - 1023.5) / 1023 + 0.5, (1535.5 - 1023.5) / 1023 + 0.5, 1.0, 1.0]
    np.testing.assert_allclose(y, np.clip(expect, 0, 1), atol=1e-6)


def test_linear_exact_and_sigmoid_hand_values():
    x = np.array([0.0, 50.0, 100.0, 150.0, 200.0], np.float32)
    np.testing.assert_allclose(apply_window(x, 100, 100, "LINEAR_EXACT"), [0, 0, 0.5, 1, 1], atol=1e-6)
    sig = apply_window(x, 100, 100, "SIGMOID")
    np.testing.assert_allclose(sig, 1 / (1 + np.exp(-4 * (x - 100) / 100)), rtol=1e-6)
    assert sig[2] == pytest.approx(0.5)


def test_window_rejects_bad_width_and_function():
    with pytest.raises(ValueError):
        apply_window(np.zeros(3), 0, 0.5, "LINEAR")
    with pytest.raises(NotImplementedError):
        apply_window(np.zeros(3), 0, 10, "LOG")


def _write(tmp_path, name, pixels, syntax="explicit", **attrs):
    path = tmp_path / name
    write_dicom(path, pixels, dict(BitsStored=12, **attrs), syntax)
    return path


@pytest.mark.parametrize("syntax", ["explicit", "rle", "j2k", "jpeg_lossless"])
@pytest.mark.parametrize("photometric", ["MONOCHROME1", "MONOCHROME2"])
def test_read_image_matches_standard(tmp_path, syntax, photometric):
    rng = np.random.default_rng(0)
    sv = rng.integers(0, 4096, (64, 48)).astype(np.uint16)
    path = _write(tmp_path, "a.dcm", sv, syntax, PhotometricInterpretation=photometric, RescaleSlope=1,
                  RescaleIntercept=-100, WindowCenter=[1500, 900], WindowWidth=[2000, 300], VOILUTFunction="SIGMOID")
    got = read_image(path)
    x = sv.astype(np.float64) - 100
    expect = 1 / (1 + np.exp(-4 * (x - 1500) / 2000))
    if photometric == "MONOCHROME1":
        expect = 1 - expect
    np.testing.assert_allclose(got, expect, atol=1e-5)
    # second window, LINEAR
    got2 = read_image(path, window_index=1)
    lin = np.clip((x - (900 - 0.5)) / (300 - 1) + 0.5, 0, 1)
    alt = 1 / (1 + np.exp(-4 * (x - 900) / 300))  # VOILUTFunction is single-valued: SIGMOID applies to both
    expect2 = alt if photometric == "MONOCHROME2" else 1 - alt
    np.testing.assert_allclose(got2, expect2, atol=1e-5)
    assert not np.allclose(lin, alt)


def test_no_window_is_minmax(tmp_path):
    sv = np.arange(100, 100 + 40 * 30, dtype=np.uint16).reshape(40, 30)
    got = read_image(_write(tmp_path, "b.dcm", sv))
    np.testing.assert_allclose(got, (sv - 100) / (sv.max() - 100), atol=1e-6)


def test_voi_lut_sequence_wins_over_window(tmp_path):
    from pydicom.dataset import Dataset
    from pydicom.sequence import Sequence

    sv = np.array([[0, 10, 20], [30, 40, 4095]], np.uint16)
    item = Dataset()
    item.LUTDescriptor = [32, 10, 8]
    item.add_new(0x00283006, "US", [i * 8 for i in range(32)])  # LUTData
    path = _write(tmp_path, "lut.dcm", sv, VOILUTSequence=Sequence([item]), WindowCenter=5, WindowWidth=2)
    got = read_image(path)
    expect = np.array([[0, 0, 80], [160, 240, 248]]) / 255.0  # clamp below 10 and above 41
    np.testing.assert_allclose(got, expect, atol=1e-6)


@pytest.mark.parametrize("name", ["MR_small_RLE.dcm", "MR_small_jpeg_ls_lossless.dcm", "MR_small.dcm"])
def test_against_pydicom_bundled_windowed(name):
    path = get_testdata_file(name)
    ds = pydicom.dcmread(path)
    ref = pd_voi(pd_modality(ds.pixel_array, ds), ds).astype(np.float64)
    bits = ds.BitsStored
    lo, hi = (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1) if ds.PixelRepresentation else (0, 2 ** bits - 1)
    np.testing.assert_allclose(read_image(path), (ref - lo) / (hi - lo), atol=1e-4)


@pytest.mark.parametrize("name", ["JPEG2000.dcm", "CT_small.dcm"])
def test_against_pydicom_bundled_unwindowed(name):
    path = get_testdata_file(name)
    ds = pydicom.dcmread(path)
    ref = pd_modality(ds.pixel_array, ds).astype(np.float64)
    np.testing.assert_allclose(read_image(path), (ref - ref.min()) / (ref.max() - ref.min()), atol=1e-5)


def test_every_synthetic_kind_reads_bright_breast_and_backends_agree(tiny_data, tiny_truth):
    kinds = tiny_truth[tiny_truth.split == "train"].drop_duplicates(["machine_id"])
    assert len(kinds) >= 5
    for r in kinds.itertuples():
        path = tiny_data / "train_images" / str(r.patient_id) / f"{r.image_id}.dcm"
        d = read_dicom(path)
        img = d.image
        assert img.dtype == np.float32 and img.shape == (r.rows, r.columns)
        assert 0.0 <= img.min() and img.max() <= 1.0
        outside = np.ones(img.shape, bool)
        outside[r.breast_y0:r.breast_y1, r.breast_x0:r.breast_x1] = False
        inside = img[r.breast_y0:r.breast_y1, r.breast_x0:r.breast_x1].mean()
        assert inside > np.median(img[outside]) + 0.3, f"breast not bright on dark for machine {r.machine_id}"
        a = dicom.read_stored(path, "dicomsdl")[0]
        b = dicom.read_stored(path, "pydicom")[0]
        np.testing.assert_array_equal(a, b)
        if r.syntax == "j2k":
            np.testing.assert_array_equal(dicom.read_stored(path, "pillow")[0], b)
        if r.syntax == "jpeg_lossless" and dicom.decoders.is_available("imagecodecs"):
            np.testing.assert_array_equal(dicom.read_stored(path, "imagecodecs")[0], b)


def test_reduced_j2k_decode_matches_area_downsample(tmp_path):
    yy, xx = np.mgrid[0:512, 0:384]
    sv = (2000 + 1500 * np.sin(yy / 40.0) * np.cos(xx / 30.0)).astype(np.uint16)
    path = _write(tmp_path, "j.dcm", sv, "j2k", WindowCenter=2000, WindowWidth=3500)
    d = read_dicom(path, min_size=(200, 150))
    assert d.scale == 2 and d.image.shape == (256, 192) and d.backend == "pillow"
    full = read_image(path)
    ref = cv2.resize(full, (192, 256), interpolation=cv2.INTER_AREA)
    assert np.abs(d.image - ref).mean() < 0.01
    assert read_dicom(path, min_size=(400, 300)).scale == 1  # a coarser level would not cover it


def test_bad_files_raise_dicom_read_error(tmp_path, tiny_data, tiny_truth):
    r = tiny_truth[tiny_truth.syntax == "j2k"].iloc[0]
    good = tiny_data / f"{r.split}_images" / str(r.patient_id) / f"{r.image_id}.dcm"
    truncated = tmp_path / "truncated.dcm"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    text = tmp_path / "notes.dcm"
    text.write_text("this is not a DICOM file\n" * 20)
    nopix = tmp_path / "nopix.dcm"
    ds = pydicom.dcmread(good)
    del ds.PixelData
    ds.save_as(nopix)
    for path, reason in [(tmp_path / "missing.dcm", "not found"), (truncated, "truncated"), (text, "not a DICOM"),
                         (nopix, "no Pixel Data")]:
        with pytest.raises(DicomReadError) as err:
            read_image(path)
        assert str(path) in str(err.value) and reason in str(err.value)


def test_read_metadata_without_pixels(tiny_data, tiny_truth):
    r = tiny_truth.iloc[0]
    meta = dicom.read_metadata(tiny_data / f"{r.split}_images" / str(r.patient_id) / f"{r.image_id}.dcm")
    assert meta["Rows"] == r.rows and meta["PhotometricInterpretation"] == r.photometric
    assert meta["TransferSyntaxUID"].startswith("1.2.840.10008.1.2")


# ---- Modality LUT Sequence, the fused table, padding -------------------------------------------------

def test_modality_lut_sequence_is_applied_before_the_window(tmp_path):
    """PS3.3 C.11.1: a Modality LUT Sequence replaces RescaleSlope/Intercept; the window is in its output units."""
    from pydicom.dataset import Dataset
    from pydicom.sequence import Sequence

    sv = np.array([[0, 100, 200], [300, 400, 4095]], np.uint16)
    item = Dataset()
    item.LUTDescriptor = [512, 0, 16]
    item.ModalityLUTType = "US"
    item.add_new(0x00283006, "US", [3 * i for i in range(512)])  # LUTData: output = 3 x stored, clamped at 511
    path = _write(tmp_path, "mlut.dcm", sv, ModalityLUTSequence=Sequence([item]), RescaleSlope=1,
                  RescaleIntercept=1000, WindowCenter=600, WindowWidth=1200, VOILUTFunction="LINEAR_EXACT")
    got = read_image(path)
    modality = np.minimum(sv, 511) * 3.0
    expect = np.clip((modality - 600) / 1200 + 0.5, 0, 1)
    np.testing.assert_allclose(got, expect, atol=1e-6)


@pytest.mark.parametrize("window", [None, Window(1800, 900, "LINEAR"), Window(1500, 2500, "SIGMOID"),
                                    Window(-200, 400, "LINEAR_EXACT")])
@pytest.mark.parametrize("invert", [False, True])
def test_fused_table_equals_the_stages_one_by_one(window, invert):
    rng = np.random.default_rng(1)
    sv = rng.integers(3, 4000, (40, 30)).astype(np.uint16)
    slope, intercept = 1.5, -300.0
    lo, hi = int(sv.min()), int(sv.max())
    table, used = build_display_lut(lo, hi, slope, intercept, window=window, invert=invert, minmax_range=(lo, hi))
    fused = apply_display_lut(sv, table, lo)
    m = apply_modality_lut(sv, slope, intercept)
    staged = apply_window(m, window.center, window.width, window.function) if window else apply_minmax(m)
    staged = 1 - staged if invert else staged
    np.testing.assert_allclose(fused, staged, atol=2e-6)
    assert used == (str(window) if window else "minmax")


def test_reduced_read_matches_full_read_within_one_stored_value(tmp_path):
    """Non-pyramid files are area-reduced on the stored integers before the table, by halvings that
    each round to an integer: the error is at most one stored value through the window's slope
    (1 / (width - 1) for LINEAR) after two halvings, half of one after a single halving."""
    yy, xx = np.mgrid[0:512, 0:384]
    sv = (2000 + 1500 * np.sin(yy / 23.0) * np.cos(xx / 17.0)).astype(np.uint16)
    path = _write(tmp_path, "n.dcm", sv, "explicit", WindowCenter=2000, WindowWidth=1000)
    small = read_dicom(path, min_size=(120, 90))
    assert small.scale == 4 and small.image.shape == (128, 96)
    exact = apply_window(cv2.resize(sv.astype(np.float32), (96, 128), interpolation=cv2.INTER_AREA), 2000, 1000)
    assert np.abs(small.image - exact).max() <= 1 / 999 + 1e-6  # integer rounding of the averages only
    once = read_dicom(path, min_size=(240, 180))
    assert once.scale == 2
    exact = apply_window(cv2.resize(sv.astype(np.float32), (192, 256), interpolation=cv2.INTER_AREA), 2000, 1000)
    assert np.abs(once.image - exact).max() <= 0.5 / 999 + 1e-6
    # against windowing at full size then reducing, only blocks that straddle a clipped end differ
    ref = cv2.resize(apply_window(sv.astype(np.float32), 2000, 1000), (96, 128), interpolation=cv2.INTER_AREA)
    assert np.abs(small.image - ref).mean() < 0.005


def test_padding_is_background_and_does_not_stretch_minmax(tmp_path):
    sv = np.full((30, 20), 4095, np.uint16)  # padding value at the top of the range
    sv[5:25, 2:12] = np.arange(1000, 1200).reshape(20, 10)
    path = _write(tmp_path, "pad.dcm", sv, PixelPaddingValue=4095)
    img = read_image(path)
    assert img[0, 0] == 0 and img[sv == 4095].max() == 0
    tissue = img[5:25, 2:12]
    np.testing.assert_allclose(tissue, (sv[5:25, 2:12] - 1000) / 199.0, atol=1e-6)  # min-max of tissue only


def test_dicomsdl_files_are_read_without_loading_pixel_bytes_in_pydicom(tmp_path, monkeypatch):
    """dicomsdl decodes from the file itself: pydicom must read the header only."""
    from mammo_utils.dicom import read as reader

    if not dicom.decoders.is_available("dicomsdl"):
        pytest.skip("dicomsdl not installed")
    calls = []
    real_open = reader.open_dataset
    monkeypatch.setattr(reader, "open_dataset", lambda path, stop_before_pixels: calls.append(stop_before_pixels)
                        or real_open(path, stop_before_pixels))
    sv = (np.arange(64 * 48).reshape(64, 48) % 4096).astype(np.uint16)
    assert np.array_equal(reader.read_stored(_write(tmp_path, "jl.dcm", sv, "jpeg_lossless"), "dicomsdl")[0], sv)
    assert calls == [True]
    calls.clear()
    reader.read_stored(_write(tmp_path, "n.dcm", sv))  # native: the bytes are the pixels (and are length-checked)
    assert calls == [True, False]


@pytest.mark.parametrize("backend, syntax, can", [("pillow", "jpeg_lossless", "JPEG 2000"),
                                                   ("imagecodecs", "j2k", "JPEG Lossless")])
def test_a_backend_asked_for_a_format_it_cannot_decode_says_so(tmp_path, backend, syntax, can):
    path = _write(tmp_path, "x.dcm", np.full((64, 48), 900, np.uint16), syntax)
    with pytest.raises(DicomReadError, match=f"x.dcm: backend '{backend}' decodes {can} only"):
        dicom.read_stored(path, backend)


@pytest.mark.parametrize("bits", [10, 12, 16])
def test_jpeg_lossless_goes_through_libjpeg_turbo_with_the_same_stored_values(tmp_path, bits):
    if not dicom.decoders.is_available("imagecodecs"):
        pytest.skip("imagecodecs not installed")
    rng = np.random.default_rng(bits)
    sv = rng.integers(0, 2 ** bits, (61, 47)).astype(np.uint16)  # odd sizes, every bit used
    path = tmp_path / f"jl{bits}.dcm"
    write_dicom(path, sv, {"BitsStored": bits}, "jpeg_lossless")
    arr, _, _, used = dicom.read_stored(path)
    assert used == "imagecodecs"
    np.testing.assert_array_equal(arr, sv)
    np.testing.assert_array_equal(dicom.read_stored(path, "dicomsdl")[0], sv)


def test_compressed_file_without_pixel_data_is_named(tmp_path):
    sv = np.full((32, 24), 1000, np.uint16)
    ds = pydicom.dcmread(_write(tmp_path, "jl.dcm", sv, "jpeg_lossless"))
    del ds.PixelData
    ds.save_as(tmp_path / "nopix.dcm")
    with pytest.raises(DicomReadError, match="no Pixel Data"):
        read_image(tmp_path / "nopix.dcm")


@pytest.mark.parametrize("bits", [8, 16])
@pytest.mark.parametrize("window", [None, Window(1800, 1200, "SIGMOID"), Window(2000, 900)])
def test_quantized_table_equals_quantizing_the_display(window, bits):
    from mammo_utils.dicom.lut import make_display
    from mammo_utils.prepare.png import to_uint

    sv = np.random.default_rng(0).integers(200, 4000, (50, 40)).astype(np.uint16)
    d = make_display(sv, None, 1.0, 0.0, None, window, None, invert=window is None)
    assert np.array_equal(d.to_uint(sv, bits), to_uint(d(sv), bits))
    assert d.to_uint(sv, bits).dtype == (np.uint8 if bits == 8 else np.uint16)


@pytest.mark.parametrize("predictor", range(1, 8))
def test_every_jpeg_lossless_predictor_decodes_alike(tmp_path, predictor):
    """Process 14 allows seven predictors (.4.57; SV1 is .4.70): libjpeg-turbo, dicomsdl and pydicom agree."""
    imagecodecs = pytest.importorskip("imagecodecs")
    from pydicom.encaps import encapsulate

    rng = np.random.default_rng(predictor)
    sv = (2000 + rng.integers(-900, 900, (40, 30)).cumsum(axis=1) % 1500).astype(np.uint16)
    path = _write(tmp_path, "native.dcm", sv)
    ds = pydicom.dcmread(path)
    frame = imagecodecs.jpeg8_encode(sv, lossless=True, predictor=predictor, bitspersample=12)
    ds.PixelData = encapsulate([bytes(frame)])
    ds["PixelData"].VR = "OB"
    ds.file_meta.TransferSyntaxUID = "1.2.840.10008.1.2.4.70" if predictor == 1 else "1.2.840.10008.1.2.4.57"
    ds.save_as(tmp_path / "jl.dcm")
    for backend in ("auto", "dicomsdl", "pydicom"):
        arr, _, _, used = dicom.read_stored(tmp_path / "jl.dcm", backend)
        np.testing.assert_array_equal(arr, sv, err_msg=f"{backend} ({used}), predictor {predictor}")
        assert backend != "auto" or used == "imagecodecs"
