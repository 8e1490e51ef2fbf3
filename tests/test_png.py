"""PNG files: what we write is what OpenCV, libpng and Pillow read back, with or without ISA-L."""
import io

import cv2
import numpy as np
import pytest
from PIL import Image

from mammo_utils.prepare import png


def _images():
    rng = np.random.default_rng(0)
    yield rng.integers(0, 256, (1, 1)).astype(np.uint8)
    yield rng.integers(0, 256, (7, 3)).astype(np.uint8)
    yield rng.integers(0, 65536, (5, 9)).astype(np.uint16)
    out = np.zeros((64, 32), np.uint16)  # a mostly black output with a bright breast, as preprocessing writes
    out[10:50, :20] = rng.integers(0, 65536, (40, 20))
    yield out
    yield (out >> 8).astype(np.uint8)


@pytest.mark.parametrize("fast", [True, False], ids=["isal", "opencv"])
def test_encoded_png_decodes_to_the_same_pixels(fast, monkeypatch):
    if fast and png.isal_zlib is None:
        pytest.skip("isal not installed")
    if not fast:
        monkeypatch.setattr(png, "isal_zlib", None)
    for img in _images():
        data = png.encode_png(img)
        assert data.startswith(png.PNG_SIGNATURE)
        by_cv2 = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
        by_pil = np.asarray(Image.open(io.BytesIO(data)))  # Pillow checks every chunk's CRC
        assert by_cv2.dtype == img.dtype and by_cv2.shape == img.shape
        np.testing.assert_array_equal(by_cv2, img)
        np.testing.assert_array_equal(by_pil.astype(img.dtype), img)


def test_up_filter_stores_differences_to_the_row_above():
    img = np.array([[1, 2], [3, 1]], np.uint16)
    rows = png.up_filtered(img)
    # big-endian samples; row 0 unfiltered (type 0), row 1 minus row 0 modulo 256 (type 2)
    np.testing.assert_array_equal(rows, [[0, 0, 1, 0, 2], [2, 0, 2, 0, 255]])


def test_bad_images_are_refused_and_no_temp_file_is_left(tmp_path):
    for bad in (np.zeros((4, 4), np.float32), np.zeros((4, 4, 3), np.uint8), np.zeros((0, 4), np.uint8)):
        with pytest.raises(ValueError, match="uint8/uint16"):
            png.write_png_atomic(tmp_path / "x.png", bad)
    assert list(tmp_path.iterdir()) == []
    png.write_png_atomic(tmp_path / "ok.png", np.full((3, 3), 200, np.uint8))
    assert [p.name for p in tmp_path.iterdir()] == ["ok.png"]
    assert png.load_png(tmp_path / "ok.png").max() == pytest.approx(200 / 255)
