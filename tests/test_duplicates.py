"""Duplicate images: found by SOPInstanceUID and by their stored pixels, imported once, never on both
sides of a split (holdout and folds, or two folds)."""
import shutil

import pandas as pd
import pytest

from mammo_utils import paths
from mammo_utils.datasets import combine, import_dataset, read_lesions
from mammo_utils.learn.holdout import split_holdout
from mammo_utils.learn.sampling import make_folds, split_groups
from mammo_utils.synthetic.public import WRITERS
from mammo_utils.tables import read_table


def assert_never_cut(df: pd.DataFrame, pairs, seeds=range(8), fraction=0.3, n_splits=3):
    """For every seed: each linked pair of patients lies wholly in the holdout or wholly in one fold."""
    for seed in seeds:
        holdout, rest, _ = split_holdout(df, fraction, seed)
        folds = make_folds(rest, n_splits=n_splits, seed=seed)
        fold_of = folds.groupby("patient_id").fold.agg(set)
        for a, b in pairs:
            inside = {p in set(holdout.patient_id) for p in (a, b)}
            assert len(inside) == 1, f"seed {seed}: {a} and {b} straddle the holdout"
            if not inside.pop():
                assert len(fold_of[a] | fold_of[b]) == 1, f"seed {seed}: {a} and {b} in folds {fold_of[a] | fold_of[b]}"


def test_splits_never_cut_patients_linked_by_a_duplicate():
    """40 patients, 8 pairs linked by a duplicated image (and one chain of three): over 8 seeds, every pair is
    on one side of the holdout and in one fold. Ignoring duplicate_group, some pair straddles."""
    n = 40
    patients = [f"P{i:02d}" for i in range(n)]
    links = {f"P{2 * k:02d}": f"P{2 * k:02d}" for k in range(8)} | {f"P{2 * k + 1:02d}": f"P{2 * k:02d}" for k in range(8)}
    links |= {"P30": "P30", "P31": "P30", "P32": "X"}
    rows = [{"patient_id": p, "image_id": f"{p}_{v}", "laterality": "L", "view": v, "cancer": int(i % 4 == 0),
             "duplicate_group": links.get(p, "")} for i, p in enumerate(patients) for v in ("CC", "MLO")]
    df = pd.DataFrame(rows)
    df.loc[df.image_id == "P31_MLO", "duplicate_group"] = "X"  # a chain: P31 in two groups links P30 and P32
    groups = split_groups(df)
    assert groups[df.patient_id == "P32"].iloc[0] == groups[df.patient_id == "P30"].iloc[0] == "P30"
    assert groups[df.patient_id == "P20"].iloc[0] == "P20"  # not linked: its own unit
    pairs = [(f"P{2 * k:02d}", f"P{2 * k + 1:02d}") for k in range(8)] + [("P30", "P32")]
    assert_never_cut(df, pairs)


def test_cbis_mammogram_under_mass_and_calc_folders_is_imported_once(tmp_path):
    truth = WRITERS["cbis-ddsm"](tmp_path / "src", patients=2, duplicate=True)
    record = import_dataset("cbis-ddsm", tmp_path / "src", tmp_path / "out", jobs=1, progress=False)
    table = read_table(tmp_path / "out")
    assert len(table) == len(truth) and record["counts"]["duplicate_images_dropped"] == 1
    [group] = record["duplicates"]
    twin = truth.dropna(subset=["duplicate_of"]).iloc[0]
    assert {group["kept"]["image_id"], group["dropped"][0]["image_id"]} == {twin.image_id, twin.duplicate_of}
    assert group["why"] == ["same SOPInstanceUID", "same stored pixels"]
    kept = group["kept"]["image_id"]
    lesions = read_lesions(tmp_path / "out").query("image_id == @kept")
    assert sorted(lesions.finding) == ["calcification", "mass"]  # both folders' lesions, on the one image
    inside = (lesions.x0 <= twin.lesion_x) & (twin.lesion_x <= lesions.x1) & \
             (lesions.y0 <= twin.lesion_y) & (twin.lesion_y <= lesions.y1)
    assert inside.any()
    assert table.set_index("image_id").loc[kept, "cancer"] == 1  # the malignant mass's label survives the merge
    assert record["counts"]["patients_linked_by_duplicates"] == 0  # one patient: nothing to link


@pytest.mark.filterwarnings("ignore:only 1 cancer patient")
def test_cmmd_image_duplicated_across_patient_ids_links_them(tmp_path):
    """CMMD ships a few images under two patient ids (here with a new SOPInstanceUID: only the pixels match)."""
    WRITERS["cmmd"](tmp_path / "src", patients=12, duplicate=True)
    record = import_dataset("cmmd", tmp_path / "src", tmp_path / "out", jobs=1, progress=False)
    [group] = record["duplicates"]
    assert group["why"] == ["same stored pixels"]
    assert (group["kept"]["image_id"], group["dropped"][0]["image_id"]) == ("D1-0001_1-1", "D1-0012_1-5")
    table = read_table(tmp_path / "out")
    assert "D1-0012_1-5" not in set(table.image_id)
    assert set(table.duplicate_group.fillna("")) == {"", "D1-0001"}
    assert set(table[table.duplicate_group == "D1-0001"].patient_id) == {"D1-0001", "D1-0012"}
    assert record["counts"]["patients_linked_by_duplicates"] == 2
    assert_never_cut(table, [("D1-0001", "D1-0012")])


def test_combine_finds_duplicates_across_sources(tiny_data, tmp_path):
    """The same scans in two folders (a dataset copied under another name): combine keeps one of each and
    links the two sources' patients, so no split can put one copy in training and the other in the holdout."""
    copy = tmp_path / "copy"
    train = pd.read_csv(tiny_data / "train.csv", dtype=str)
    some = sorted(train.patient_id.unique())[:3]
    part = train[train.patient_id.isin(some)]
    copy.mkdir()
    part.to_csv(copy / "train.csv", index=False)
    for r in part.itertuples():
        dst = paths.dicom_path(copy, "train", r.patient_id, r.image_id)
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(paths.dicom_path(tiny_data, "train", r.patient_id, r.image_id), dst)
    record = combine([tiny_data, copy], tmp_path / "both", progress=False)
    assert record["duplicate_images_dropped"] == len(part)
    both = read_table(tmp_path / "both")
    assert len(both) == len(train) and both.image_id.is_unique
    base = tiny_data.resolve().name
    pairs = [(f"copy-{p}", f"{base}-{p}") for p in some]  # the first by patient id is kept: the copy's
    for kept, dropped in pairs:
        assert set(both[both.patient_id == kept].duplicate_group) == {kept}  # linked to the dropped copy
        assert dropped not in set(both.patient_id)
    assert all(g["why"] == ["same SOPInstanceUID", "same stored pixels"] for g in record["duplicates"])
    assert {g["dropped"][0]["patient_id"] for g in record["duplicates"]} == {b for _, b in pairs}
    assert set(both.duplicate_group.fillna("")) == {""} | {a for a, _ in pairs}


@pytest.mark.parametrize("official", [False, True])
def test_a_group_spanning_two_sources_follows_its_holdout_side(official):
    """Combined sources: a source's official test split (or its drawn holdout) takes the linked patients
    of another source with it."""
    rows = []
    for src in ("a", "b"):
        for i in range(12):
            rows.append({"source": src, "patient_id": f"{src}{i:02d}", "image_id": f"{src}{i:02d}_cc",
                         "laterality": "L", "view": "CC", "cancer": int(i % 3 == 0),
                         "official_split": ("test" if i < 3 else "train") if (official and src == "a") else "",
                         "duplicate_group": "a01" if f"{src}{i:02d}" in ("a01", "b07") else ""})
    assert_never_cut(pd.DataFrame(rows), [("a01", "b07")], seeds=range(6), n_splits=2)


def test_mias_duplicate_pgm_is_wrapped_once(tmp_path):
    """The same film under two references: one DICOM in --out, the other's wrapped file removed."""
    src = tmp_path / "src"
    WRITERS["mias"](src, patients=2)
    shutil.copy(src / "mdb001.pgm", src / "mdb004.pgm")
    record = import_dataset("mias", src, tmp_path / "out", jobs=1, progress=False)
    [group] = record["duplicates"]
    assert (group["kept"]["image_id"], group["dropped"][0]["image_id"], group["why"]) == \
        ("mdb001", "mdb004", ["same stored pixels"])
    assert not paths.dicom_path(tmp_path / "out", "train", "mias002", "mdb004").exists()
    assert set(read_table(tmp_path / "out").duplicate_group.fillna("")) == {"mias001"}  # mias001 and mias002 linked


@pytest.mark.filterwarnings("ignore:only 1 cancer patient")
def test_a_shared_sop_instance_uid_over_different_pixels_is_no_duplicate(tmp_path):
    """An anonymiser that reused a UID once made two different mammograms one: a cancer image could be
    merged into another woman's. Different stored pixels keep both, and the note names the UID."""
    import pydicom

    src = tmp_path / "src"
    truth = WRITERS["cmmd"](src, patients=2)
    first, second = (next((src / "CMMD" / p).rglob("1-1.dcm")) for p in ("D1-0001", "D1-0002"))
    uid = pydicom.dcmread(first).SOPInstanceUID
    ds = pydicom.dcmread(second)
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = uid
    ds.save_as(second, enforce_file_format=True)
    record = import_dataset("cmmd", src, tmp_path / "out", jobs=1, progress=False)
    assert record["duplicates"] == [] and len(read_table(tmp_path / "out")) == len(truth)
    assert any(str(uid) in n and "pixels differ" in n for n in record["notes"])
    WRITERS["mias"](tmp_path / "msrc", patients=1)  # combined, the pair is kept and named again
    import_dataset("mias", tmp_path / "msrc", tmp_path / "mias", jobs=1, progress=False)
    both = combine([tmp_path / "out", tmp_path / "mias"], tmp_path / "both", progress=False, jobs=1)
    assert both["duplicates"] == [] and len(read_table(tmp_path / "both")) == len(truth) + 2
    assert any(str(uid) in n and "pixels differ" in n for n in both["notes"])


def test_one_instance_in_two_encodings_is_one_image_and_a_reused_uid_over_another_image_never_is(tmp_path):
    """Stored bytes differ between encodings (and between two encoders of one): the decoded values decide
    whether two files with one SOPInstanceUID hold one image. A re-encoded copy merges; another image under
    the reused UID, raw or compressed, is kept with a note."""
    import pydicom
    from pydicom.uid import RLELossless

    from mammo_utils.datasets.duplicates import duplicate_groups, uid_conflicts
    from mammo_utils.datasets.headers import header_facts

    WRITERS["vindr"](tmp_path / "src", studies=1)
    first, second = sorted((tmp_path / "src" / "images").rglob("*.dicom"))[:2]
    uid = pydicom.dcmread(first).SOPInstanceUID

    def saved(name, source, compress=False):
        ds = pydicom.dcmread(source)
        if compress:
            ds.compress(RLELossless, generate_instance_uid=False)
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = uid
        ds.save_as(tmp_path / name, enforce_file_format=True)
        return str(tmp_path / name)

    raw, rle = saved("raw.dcm", first), saved("rle.dcm", first, compress=True)
    other, other_rle = saved("other.dcm", second), saved("other_rle.dcm", second, compress=True)
    for files, one_image in (([raw, rle], True), ([raw, other], False), ([raw, other_rle], False),
                             ([rle, other_rle], False)):
        facts = [header_facts(f) for f in files]
        assert facts[0]["pixel_key"] != facts[1]["pixel_key"]  # the stored bytes alone cannot tell
        assert (duplicate_groups(files, facts) == [([0, 1], ["same SOPInstanceUID"])]) == one_image, files
        assert uid_conflicts(files, facts) == ([] if one_image else [uid]), files
