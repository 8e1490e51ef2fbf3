"""Augmentation and the training dataset: what the network sees."""
import sys

import numpy as np
import pandas as pd
import pytest
import torch

from mammo_utils.learn.data import AugmentConfig, MammoDataset, augment, train_batches
from mammo_utils.prepare.png import load_png, to_uint, write_png_atomic

OFF = dict(vflip=0.0, hflip=0.0, rotate_deg=0.0, scale=0.0, shift=0.0, brightness=0.0, contrast=0.0, gamma=0.0,
           dropout_boxes=0)


def image(h=64, w=32, seed=0):
    rng = np.random.default_rng(seed)
    img = np.zeros((h, w), np.float32)
    img[8:56, :20] = 0.3 + 0.4 * rng.random((48, 20))  # an asymmetric "breast" on the left
    return img


def test_each_transform_does_what_it_says():
    img, rng = image(), np.random.default_rng(0)
    np.testing.assert_array_equal(augment(img, AugmentConfig(**OFF), rng), img)  # all off: identity
    np.testing.assert_array_equal(augment(img, AugmentConfig(**{**OFF, "vflip": 1.0}), rng), img[::-1])
    np.testing.assert_array_equal(augment(img, AugmentConfig(**{**OFF, "hflip": 1.0}), rng), img[:, ::-1])
    rotated = augment(img, AugmentConfig(**{**OFF, "rotate_deg": 20.0}), np.random.default_rng(1))
    assert rotated.shape == img.shape and np.abs(rotated - img).mean() > 0.01
    darker = [augment(img, AugmentConfig(**{**OFF, "brightness": 0.3}), np.random.default_rng(s)).mean() for s in range(8)]
    assert np.ptp(darker) > 0.05
    cut = augment(img, AugmentConfig(**{**OFF, "dropout_boxes": 3, "dropout_size": 0.5}), np.random.default_rng(2))
    assert (cut == 0).sum() > (img == 0).sum()


def test_default_augmentation_changes_the_image_reproducibly():
    img = image()
    a = augment(img, AugmentConfig(), np.random.default_rng(5))
    b = augment(img, AugmentConfig(), np.random.default_rng(5))
    c = augment(img, AugmentConfig(), np.random.default_rng(6))
    np.testing.assert_array_equal(a, b)
    assert a.shape == img.shape and a.dtype == np.float32 and 0 <= a.min() and a.max() <= 1
    assert np.abs(a - img).mean() > 0.005 and np.abs(a - c).mean() > 0.005


def test_dataset_augments_each_draw_key_and_never_in_validation(tmp_path):
    paths = []
    for i in range(3):
        p = tmp_path / f"{i}.png"
        write_png_atomic(p, to_uint(image(seed=i)))
        paths.append(str(p))
    df = pd.DataFrame({"abs_path": paths, "cancer": [0, 1, 0]})
    val = MammoDataset(df, train=False)
    x, target = val[1]
    assert x.shape == (1, 64, 32) and target["cancer"] == 1 and target["index"] == 1
    torch.testing.assert_close(x[0], torch.from_numpy(load_png(paths[1])))
    train = MammoDataset(df, train=True, seed=0)
    first, info = train[(1, 0, 0, 5)]
    assert info["index"] == 1 and info["cancer"] == 1
    torch.testing.assert_close(train[(1, 0, 0, 5)][0], first)     # the same key, the same draw
    for other in ((1, 1, 0, 5), (1, 0, 0, 6), (1, 0, 1, 5)):      # another epoch, draw or rank: another draw
        assert not torch.equal(train[other][0], first), other
    assert not torch.equal(MammoDataset(df, train=True, seed=1)[(1, 0, 0, 5)][0], first)  # another seed
    assert not torch.equal(first, val[1][0])
    with pytest.raises(TypeError, match="KeyedDraws"):
        train[1]  # a bare index would give every epoch the same draw


def test_keyed_draws_number_every_sample_of_an_epoch():
    labels = np.array([1] * 3 + [0] * 13)
    draws = train_batches(labels, 4, "balanced", 0.5, seed=0)
    draws.set_epoch(3)
    keys = [k for batch in draws for k in batch]
    assert [k[3] for k in keys] == list(range(len(keys)))           # draw numbers run through the epoch
    assert {k[1] for k in keys} == {3} and {k[2] for k in keys} == {0}
    assert len({k[0] for k in keys if labels[k[0]]}) < sum(labels[k[0]] for k in keys)  # positives repeat
    again = train_batches(labels, 4, "balanced", 0.5, seed=0)
    again.set_epoch(3)
    assert [k for b in again for k in b] == keys                    # a function of (seed, epoch)
    again.set_epoch(4)
    assert [k[0] for b in again for k in b] != [k[0] for k in keys]  # the inner sampler moved on too
    shuffled = train_batches(labels, 4, "random", seed=0)
    shuffled.set_epoch(0)
    order0 = [k[0] for b in shuffled for k in b]
    shuffled.set_epoch(1)
    assert sorted(order0) == list(range(16)) and [k[0] for b in shuffled for k in b] != order0


def _loader_start_method(workers):
    """Run in a spawned process, as a Dask worker is: how do its DataLoader workers start, and do they
    deliver every item?"""
    import multiprocessing

    from mammo_utils.learn.data import create_loader

    loader = create_loader(list(range(6)), batch_size=2, workers=workers)
    ctx = loader.multiprocessing_context
    items = sorted(int(i) for batch in loader for i in batch)
    return multiprocessing.get_start_method(), ctx.get_start_method() if ctx is not None else None, items


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="fork is the Linux default")
def test_loader_workers_fork_inside_a_spawned_process():
    """A Dask worker is a spawned process (not a daemon): its DataLoader workers must still fork (spawned
    ones would import torch again, seconds each, for every fold and trial) and deliver every item."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        assert pool.submit(_loader_start_method, 2).result(timeout=120) == ("spawn", "fork", list(range(6)))
        assert pool.submit(_loader_start_method, 0).result(timeout=120) == ("spawn", None, list(range(6)))
    assert _loader_start_method(2)[1] is None  # a plain process keeps the platform's default
