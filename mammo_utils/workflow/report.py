"""What a person opens after a run, without Jupyter: every figure as a PNG file, and one HTML report.

Both are made from the executed notebooks (papermill's copies in ``<run>/notebooks/``), so they show
exactly what the notebooks showed: ``<run>/notebooks/NN_name_figK.png`` beside each notebook, and
``<run>/report.html`` with every executed notebook in order, after the run's model card
(``<run>/model_card.md``, written by notebook 05) when it has one.
"""
from __future__ import annotations

import base64
from pathlib import Path

from .. import paths


def save_figures(executed: Path) -> list[Path]:
    """Write every PNG output of an executed notebook beside it, numbered in order; returns the files.
    Figures of an earlier execution of the same notebook are removed first."""
    import nbformat

    executed = Path(executed)
    for old in executed.parent.glob(f"{executed.stem}_fig*.png"):
        old.unlink()
    nb = nbformat.read(executed, as_version=4)
    written = []
    for cell in nb.cells:
        for out in cell.get("outputs", []) if cell.cell_type == "code" else []:
            png = out.get("data", {}).get("image/png")
            if png:
                path = executed.with_name(f"{executed.stem}_fig{len(written) + 1}.png")
                path.write_bytes(base64.b64decode(png))
                written.append(path)
    return written


def write_report(run, names) -> Path:
    """``<run>/report.html``: the run's model card first (when notebook 05 wrote one), then the executed
    notebooks ``names`` (those that exist), one after another, with a heading each; images are
    embedded, so the file stands alone."""
    import nbformat
    from nbconvert import HTMLExporter

    run = Path(run)
    combined = nbformat.v4.new_notebook()
    card = paths.model_card_md(run)
    if card.exists():
        combined.cells.append(nbformat.v4.new_markdown_cell(f"<a id='model_card'></a>\n\n{card.read_text(encoding='utf-8')}"))
    for name in names:
        executed = paths.notebooks_dir(run) / f"{name}.ipynb"
        if not executed.exists():
            continue
        nb = nbformat.read(executed, as_version=4)
        combined.cells.append(nbformat.v4.new_markdown_cell(f"<a id='{name}'></a>\n\n---\n*Notebook `{name}`, "
                                                            f"executed copy: `notebooks/{name}.ipynb`*"))
        figure = 0
        for cell in nb.cells:  # alt text: what each image is (the file it was also saved as)
            for out in cell.get("outputs", []) if cell.cell_type == "code" else []:
                if "image/png" in out.get("data", {}):
                    figure += 1
                    out.setdefault("metadata", {}).setdefault("image/png", {})["alt"] = f"{name}_fig{figure}.png"
        combined.cells.extend(nb.cells)
        combined.metadata.setdefault("kernelspec", nb.metadata.get("kernelspec", {}))
    html, _ = HTMLExporter(template_name="classic").from_notebook_node(combined)  # classic: it writes alt text
    path = paths.report_html(run)
    path.write_text(html, encoding="utf-8")
    return path
