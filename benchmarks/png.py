"""PNG encoding of preprocessed outputs: time per image and size, as ratios against OpenCV in one run.

  (a) OpenCV, default settings (zlib level 1 here, its default filter choice);
  (b) OpenCV, zlib run-length strategy after the "up" filter (our fallback without ``isal``);
  (c) ours: the "up" filter in numpy, ISA-L deflate level 1 (``mammo_utils.prepare.png.encode_png``).

Inputs: 1024x512 outputs of the real-size JPEG Lossless files (breast on a black background).

    .venv/bin/python benchmarks/png.py [--n 8]
"""
from __future__ import annotations

import argparse
import statistics
import time

import cv2
import numpy as np
from _realsize import realsize_files

from mammo_utils.prepare import png
from mammo_utils.prepare.preprocess import PreprocessConfig, preprocess_file


def opencv(params):
    return lambda img: cv2.imencode(".png", img, params)[1].tobytes()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=8)
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    cv2.setNumThreads(1)
    if png.isal_zlib is None:
        raise SystemExit("isal is not installed: encode_png would be OpenCV's fallback (b)")
    outputs = [preprocess_file(p, PreprocessConfig(size=(1024, 512)))[0] for p in realsize_files("jpeg_lossless", args.n)]
    encoders = {"a": opencv([cv2.IMWRITE_PNG_COMPRESSION, 1]), "b": opencv(png.PNG_PARAMS), "c": png.encode_png}
    ms = {name: [] for name in encoders}
    for _ in range(args.rounds):  # interleaved: machine noise hits all alike
        for name, encode in encoders.items():
            t0 = time.perf_counter()
            for img in outputs:
                encode(img)
            ms[name].append(1000 * (time.perf_counter() - t0) / len(outputs))
    kib = {name: np.mean([len(encode(img)) for img in outputs]) / 1024 for name, encode in encoders.items()}
    for img in outputs:  # lossless: every encoder's file decodes to the same pixels
        for encode in encoders.values():
            assert np.array_equal(cv2.imdecode(np.frombuffer(encode(img), np.uint8), cv2.IMREAD_UNCHANGED), img)
    t = {name: statistics.median(v) for name, v in ms.items()}
    labels = {"a": "OpenCV defaults", "b": "OpenCV RLE + up (fallback)", "c": "ours: up + ISA-L level 1"}
    print(f"{len(outputs)} images 1024x512 uint8, median of {args.rounds} rounds, one thread")
    for name in encoders:
        print(f"  ({name}) {labels[name]:28s} {t[name]:6.2f} ms  {kib[name]:6.1f} KiB  "
              f"speed x{t['a'] / t[name]:.2f}  size x{kib[name] / kib['a']:.2f} vs (a)")
    print(f"  (c) vs (b): x{t['b'] / t['c']:.2f} faster, x{kib['c'] / kib['b']:.2f} the size; pixels identical")


if __name__ == "__main__":
    main()
