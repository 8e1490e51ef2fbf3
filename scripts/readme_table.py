"""The README's "What to expect" table, written from runs' summary.json files instead of by hand.

    .venv/bin/python scripts/readme_table.py --run runs/demo [--control runs/demo_shuffled] [--write]

Prints the table; ``--write`` replaces the block between the README's ``<!-- expect:begin -->`` and
``<!-- expect:end -->`` markers. The table says which commit and which machine produced the numbers.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import re
from pathlib import Path

README = Path(__file__).resolve().parent.parent / "README.md"
BEGIN, END = "<!-- expect:begin -->", "<!-- expect:end -->"


def fmt(value, digits: int = 3) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def machine() -> str:
    cpus = os.cpu_count()
    gpu = "no GPU"
    try:
        import torch

        if torch.cuda.is_available():
            gpu = torch.cuda.get_device_name(0)
    except ImportError:
        pass
    return f"{platform.system()} {platform.machine()}, {cpus} CPU cores, {gpu}"


def ci(e: dict, key: str) -> str:
    lo_hi = e.get(f"{key}_ci")
    return f" [{lo_hi[0]:.3f}, {lo_hi[1]:.3f}]" if lo_hi and None not in lo_hi else ""


def rows(summary: dict, label: str) -> list[str]:
    """Table rows for one run: time per notebook, then each estimate, the one to quote last."""
    seconds = summary.get("seconds", {})
    out = []
    if label == "demo":
        steps = ", ".join(f"{name[:2]} {s:.0f} s" for name, s in seconds.items())
        out.append(f"| `make demo` | {summary.get('total_seconds', 0) / 60:.1f} min: {steps} |")
    est = summary.get("estimates", {})
    names = {"selection": "validation, one fold (selection: best epoch and threshold chosen on these breasts)",
             "oof": "out of fold, every trained fold (the threshold is chosen here)",
             "synthetic_test": "the generator's labelled test set (untouched)",
             "holdout": "**locked holdout** (untouched; quote this one)"}
    for key in ("selection", "oof", "synthetic_test", "holdout"):
        e = est.get(key)
        if not e:
            continue
        out.append(f"| {label}: {names[key]} | AUC {fmt(e.get('auc'))}{ci(e, 'auc')}, pF1 {fmt(e.get('pf1'))}"
                   f"{ci(e, 'pf1')} at threshold {fmt(e.get('threshold'))} ({e.get('breasts')} breasts, "
                   f"{e.get('cancer_breasts', e.get('positives'))} cancer) |")
    return out


def table(run: Path, control: Path | None = None) -> str:
    summary = json.loads((run / "summary.json").read_text())
    commit = (summary.get("provenance") or {}).get("git_commit") or "unknown"
    lines = [f"Measured by `scripts/readme_table.py` from `{run.name}/summary.json` (commit {commit[:10]}, "
             f"{machine()}).", "", "| step | measured |", "|---|---|"]
    lines += rows(summary, "demo")
    if control is not None:
        lines += rows(json.loads((control / "summary.json").read_text()), "shuffled labels")
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--run", type=Path, default=Path("runs/demo"), help="a finished pipeline run")
    ap.add_argument("--control", type=Path, default=None, help="the same run with shuffled labels, if any")
    ap.add_argument("--write", action="store_true", help="replace the README's marked block")
    a = ap.parse_args()
    text = table(a.run, a.control)
    print(text)
    if a.write:
        readme = README.read_text()
        if BEGIN not in readme or END not in readme:
            raise SystemExit(f"{README} has no {BEGIN} ... {END} block")
        block = re.compile(re.escape(BEGIN) + ".*?" + re.escape(END), re.S)
        README.write_text(block.sub(lambda _: f"{BEGIN}\n{text}\n{END}", readme))
        print(f"-> {README}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
