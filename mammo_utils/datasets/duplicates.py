"""Duplicate images: the same instance (a SOPInstanceUID over one image) or the same stored pixels under two ids.

CBIS-DDSM ships the same full mammogram under a ``Mass-...`` and a ``Calc-...`` folder; CMMD has
images duplicated across patient ids. Kept twice, an image is double-weighted in training and can
sit on both sides of the holdout. So each group of duplicates keeps one image (its lesions merged,
its breast's label the highest of the copies), the others are reported, and patients linked by a
duplicated image share a ``duplicate_group``: the splits (folds, holdout) keep them on one side.
"""
from __future__ import annotations

import math
import numbers
from collections import defaultdict

from .headers import pixel_hash


def components(pairs, nodes=()) -> dict:
    """Union-find: ``{node: the smallest node of its connected component}`` over ``pairs`` and ``nodes``."""
    parent = {}

    def root(x):
        parent.setdefault(x, x)
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for n in nodes:
        root(n)
    for a, b in pairs:
        ra, rb = root(a), root(b)
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)
    members = defaultdict(list)
    for n in list(parent):
        members[root(n)].append(n)
    return {n: min(ms) for ms in members.values() for n in ms}


def decoded_hash(path: str) -> str | None:
    """SHA-1 of a file's decoded stored values with their shape and type: the same for one image in any
    lossless encoding, by any encoder. None when the file cannot be decoded."""
    import hashlib

    import numpy as np

    from ..dicom.read import read_stored

    try:
        arr = np.ascontiguousarray(read_stored(path)[0])
    except Exception:  # noqa: BLE001 - an undecodable file is judged by its header alone
        return None
    h = hashlib.sha1(f"{arr.shape} {arr.dtype}".encode())
    h.update(arr.tobytes())
    return h.hexdigest()


def same_image(path_a: str, path_b: str, a: dict, b: dict) -> bool:
    """Whether two files that share a SOPInstanceUID hold one image: their sizes agree, and their stored
    bytes (quick key) or, failing that, their decoded values do. Decoding, the slow part, happens only for
    such pairs, once per file (kept in ``a`` and ``b``); a file that cannot be decoded trusts the UID."""
    if a.get("rows") and b.get("rows") and (a["rows"], a.get("columns")) != (b["rows"], b.get("columns")):
        return False
    if a.get("pixel_key") and a.get("pixel_key") == b.get("pixel_key"):
        return True
    for path, f in ((path_a, a), (path_b, b)):
        if "decoded_hash" not in f:
            f["decoded_hash"] = decoded_hash(str(path))
    return a["decoded_hash"] is None or b["decoded_hash"] is None or a["decoded_hash"] == b["decoded_hash"]


def _by_uid(facts: list[dict]) -> dict:
    groups = defaultdict(list)
    for i, f in enumerate(facts):
        if f.get("uid"):
            groups[f["uid"]].append(i)
    return groups


def uid_conflicts(files: list, facts: list[dict]) -> list[str]:
    """SOPInstanceUIDs that files holding other images share (an anonymiser that reused a UID): such files
    are not duplicates, and each is kept."""
    return sorted(uid for uid, same in _by_uid(facts).items()
                  if any(not same_image(files[same[0]], files[i], facts[same[0]], facts[i]) for i in same[1:]))


def duplicate_groups(files: list, facts: list[dict]) -> list[tuple[list[int], list[str]]]:
    """Groups (indices into ``files``, reasons) of two or more files holding the same image: the same
    SOPInstanceUID holding one image (:func:`same_image`; a reused UID is no duplicate), or the same stored
    pixel bytes (equal quick keys confirmed by a hash of every byte)."""
    edges = defaultdict(set)
    by_key = defaultdict(list)
    for i, f in enumerate(facts):
        if f.get("pixel_key"):
            by_key[f["pixel_key"]].append(i)
    for same in _by_uid(facts).values():
        for n, i in enumerate(same[1:], 1):
            twin = next((j for j in same[:n] if same_image(files[j], files[i], facts[j], facts[i])), None)
            if twin is not None:
                edges[(twin, i)].add("same SOPInstanceUID")
    for same in by_key.values():
        if len(same) < 2:
            continue
        full = defaultdict(list)
        for i in same:
            full[facts[i].get("pixel_hash") or pixel_hash(str(files[i]), facts[i]["span"])].append(i)
        for twins in full.values():
            for i in twins[1:]:
                edges[(twins[0], i)].add("same stored pixels")
    root = components(edges, range(len(files)))
    groups = defaultdict(list)
    for i in range(len(files)):
        groups[root[i]].append(i)
    out = []
    for members in groups.values():
        if len(members) > 1:
            why = sorted({w for (a, b), ws in edges.items() if root[a] == root[members[0]] for w in ws})
            out.append((sorted(members), why))
    return sorted(out)


def merge_duplicates(rows: list[dict], lesions: list[dict], facts: list[dict], source: str = "") -> tuple:
    """``(rows kept, lesions, report)``: one row per group of duplicates (the first by patient and image
    id), its cancer and biopsy the highest of the copies, the others' lesions moved onto it, and every
    row's ``duplicate_group`` (empty, or the smallest patient id of the patients a duplicate links).
    ``facts[i]`` belongs to ``rows[i]`` (see :func:`~.headers.header_facts`); ``source`` prefixes nothing,
    it only names rows in the report when several sources are checked together."""
    groups = duplicate_groups([r["src"] for r in rows], facts)
    drop, rename, report, links = set(), {}, [], []
    for members, why in groups:
        ordered = sorted(members, key=lambda i: (str(rows[i]["patient_id"]), str(rows[i]["image_id"])))
        keep = rows[ordered[0]]
        for i in ordered[1:]:
            other = rows[i]
            for col in ("cancer", "biopsy"):
                values = [v for v in (keep.get(col), other.get(col)) if isinstance(v, numbers.Real) and not math.isnan(v)]
                if values:
                    keep[col] = max(values)
            rename[other["image_id"]] = keep["image_id"]
            links.append((str(keep["patient_id"]), str(other["patient_id"])))
            drop.add(i)
        report.append({"kept": _name(keep, source), "dropped": [_name(rows[i], source) for i in ordered[1:]],
                       "why": why, "rule": "kept the first by patient id and image id; lesions merged onto it"})
    kept = [r for i, r in enumerate(rows) if i not in drop]
    label = patient_groups(links + [(str(r["patient_id"]), "\0" + str(r["duplicate_group"])) for r in rows
                                    if str(r.get("duplicate_group") or "").strip() not in ("", "nan")])
    kept = [dict(r, duplicate_group=label.get(str(r["patient_id"]), "")) for r in kept]
    merged, seen = [], set()
    for lesion in lesions:
        lesion = dict(lesion, image_id=rename.get(lesion["image_id"], lesion["image_id"]))
        key = tuple(sorted((k, str(v)) for k, v in lesion.items()))
        if key not in seen:
            seen.add(key)
            merged.append(lesion)
    return kept, merged, report


def patient_groups(pairs) -> dict:
    """``{patient: group}`` for the patients ``pairs`` link to another patient (directly, or through a group
    node, a string starting with NUL); the group is named by its smallest patient id."""
    root = components(pairs)
    patients = defaultdict(list)
    for node, r in root.items():
        if not node.startswith("\0"):
            patients[r].append(node)
    return {p: min(ps) for ps in patients.values() if len(ps) > 1 for p in ps}


def _name(row: dict, source: str) -> dict:
    out = {"patient_id": str(row["patient_id"]), "image_id": str(row["image_id"]), "file": str(row["src"])}
    return {"source": row.get("source") or source, **out} if source or row.get("source") else out
