"""Commands that bring data in: ``synth``, ``import-dataset``, ``combine``."""
from __future__ import annotations

import sys
import warnings
from pathlib import Path

from .common import PRESET_NAMES, jobs_arg, positive, size_arg


def _synth(a) -> int:
    from ..synthetic import write_dataset

    truth = write_dataset(a.out, patients=a.patients, seed=a.seed, size=a.image_size, test_patients=a.test_patients,
                          cancer_rate=a.cancer_rate, lesion_contrast=a.lesion_contrast, jobs=a.jobs, preset=a.preset)
    train = truth[truth.split == "train"]
    n_breasts = train.groupby(["patient_id", "laterality"]).cancer.max()
    print(f"wrote {len(truth)} images ({len(train)} train, {len(truth) - len(train)} test) of "
          f"{truth.patient_id.nunique()} patients to {a.out}; cancer breasts in train: {int(n_breasts.sum())}")
    return 0


def _import_dataset(a) -> int:
    from ..datasets import import_dataset

    with warnings.catch_warnings(record=True) as caught:  # each as one line, after the summary
        warnings.simplefilter("always", UserWarning)
        record = import_dataset(a.dataset, a.src, a.out, copy=a.copy, label=a.label, jobs=a.jobs)
    c = record["counts"]
    print(f"{a.dataset}: {c['images']} images of {c['patients']} patients ({c['cancer_breasts']} of {c['breasts']} "
          f"breasts cancer), {c['lesion_boxes']} lesion boxes, {c['skipped']} file(s) skipped -> {a.out}")
    print(f"label: {record['label']}: {record['label_mapping']}")
    if c["duplicate_images_dropped"]:
        print(f"duplicates: {c['duplicate_images_dropped']} image(s) not imported, each the same image as one kept; "
              f"{c['patients_linked_by_duplicates']} patients linked (kept on one side of every split)")
    for note in record["notes"]:
        print(f"found: {note}")
    for s in record["skipped"][:10]:
        where = f" row {s['row']} {s['column']} {s['value']!r}" if "row" in s else ""
        print(f"skipped: {s['file']}{where}: {s['reason']}", file=sys.stderr)
    if len(record["skipped"]) > 10:
        print(f"... and {len(record['skipped']) - 10} more skipped files: see {Path(a.out) / 'import.json'}",
              file=sys.stderr)
    for w in caught:
        print(f"warning: {w.message}", file=sys.stderr)
    return 0


def _combine(a) -> int:
    from ..datasets import combine

    record = combine(a.folders, a.out, copy=a.copy, jobs=a.jobs)
    for source, c in record["counts"].items():
        print(f"{source}: {c['images']} images, {c['patients']} patients, {c['cancer_images']} cancer images")
    if record["duplicate_images_dropped"]:
        print(f"duplicates: {record['duplicate_images_dropped']} image(s) not combined, each the same image as one "
              f"kept: see {Path(a.out) / 'import.json'}")
    print(f"-> {a.out}")
    return 0


def register(command) -> None:
    """Add these commands' parsers (``command(name, help)`` returns a subparser)."""
    s = command("synth", "write the synthetic RSNA-format dataset (into a missing or empty folder)")
    s.add_argument("--out", required=True, help="a missing or empty folder")
    s.add_argument("--patients", type=positive(int), default=200, help="training patients (>= 2)")
    s.add_argument("--test-patients", type=positive(int), default=None, help="test patients (default: as many as training patients, at most 200; the labelled held-out estimate)")
    s.add_argument("--seed", type=int, default=0, help="same seed, same files")
    s.add_argument("--image-size", "--size", dest="image_size", type=size_arg, default="640x512",
                   help="base image size HxW (machines vary around it; at least 64x64)")
    s.add_argument("--preset", default="default", choices=PRESET_NAMES,
                   help="default: the demo data; hard: a benchmark where training recipes differ; hard_metadata: "
                        "hard with a table that carries signal (age risk, machine looks, BIRADS/density from the "
                        "image); hard_control: hard with a table that carries none")
    s.add_argument("--cancer-rate", type=float, default=None, help="share of patients with a cancer breast")
    s.add_argument("--lesion-contrast", type=float, default=None, help="mass contrast in attenuation units")
    s.add_argument("--jobs", type=jobs_arg, default=-1, help="worker processes (-1: all CPUs)")
    s.set_defaults(func=_synth)

    from ..datasets import IMPORTERS, labels

    label_help = "; ".join(f"{name}: " + ", ".join(labels(name)) for name in IMPORTERS)


    s = command("import-dataset", "bring a public dataset (as downloaded and unpacked) into the RSNA layout")
    s.add_argument("dataset", choices=sorted(IMPORTERS), help="which dataset SRC holds")
    s.add_argument("src", metavar="SRC", help="the dataset's folder (never written to)")
    s.add_argument("--out", required=True, help="folder to write: train.csv, train_images/, lesions.csv, import.json")
    s.add_argument("--copy", action="store_true", help="copy the DICOMs instead of linking them")
    s.add_argument("--label", default=None, help=f"label mapping (default: the first) - {label_help}")
    s.add_argument("--jobs", type=jobs_arg, default=-1, help="header-reading processes (-1: all CPUs)")
    s.set_defaults(func=_import_dataset)


    s = command("combine", "several RSNA-layout folders as one, ids unique across sources, with a source column")
    s.add_argument("folders", nargs="+", metavar="FOLDER", help="imported datasets or RSNA-layout folders")
    s.add_argument("--out", required=True, help="folder to write (links to the parts' images)")
    s.add_argument("--copy", action="store_true", help="copy the DICOMs instead of linking them")
    s.add_argument("--jobs", type=jobs_arg, default=-1, help="header-reading processes (-1: all CPUs)")
    s.set_defaults(func=_combine)
