"""The patient browser for JupyterLab: four views, window, overlays (a run's mistakes: :mod:`.mistakes`).

Everything the widgets show comes from a small programmatic surface that tests call directly:
``select(patient_id)``, ``next()``/``previous()``, ``set_filter(...)``, ``set_window(center, width,
function)``, ``set_mode(...)``, ``set_overlays(box=, mask=, lesions=, cam=)`` and ``render()``, which
returns the composited HxWx3 uint8 image that is on screen.

Responsive on large files: views decode lazily, at the screen size (a reduced JPEG 2000 level, or an
area reduction right after decoding), and the stored values are kept in an LRU cache, so a window
change is one table lookup and moving back to a patient costs nothing. Without a widget front-end
(papermill, nbconvert) ``show()`` draws one static figure of the current state instead.
"""
from __future__ import annotations

from collections import OrderedDict
from pathlib import Path

import cv2
import numpy as np

from .. import paths, tables
from ..dicom.lut import Window
from ..errors import UserError
from .tiles import (COLORS, FUNCTIONS, MODES, STANDARD_VIEWS, ViewState, ViewUnavailable,
                    display_image, fit_tile, in_widget_frontend, placeholder, read_stored_view, to_rgb)

class PatientViewer:
    """A patient browser over an RSNA-layout folder; see the module docstring for the surface."""

    MODES, FUNCTIONS = MODES, FUNCTIONS  # what the widget front-end offers

    def __init__(self, data_dir, split: str = "train", run_dir=None, display_px: int = 512, cache_size: int = 48,
                 tile_px: tuple[int, int] = (360, 288), fold: int = 0):
        from ..tables import read_table

        self.data, self.split, self.run = Path(data_dir), split, Path(run_dir) if run_dir else None
        self.display_px, self.tile = display_px, tile_px
        self.table = read_table(self.data, split)
        truth = paths.synthetic_truth(self.data)
        self.truth = tables.read_csv(truth).set_index("image_id") if truth.exists() else None
        from ..datasets import read_lesions

        self.lesion_boxes = read_lesions(self.data)  # an imported dataset's boxes (stored pixels)
        self.fold = fold
        self._cache: OrderedDict = OrderedDict()
        self._cache_size = cache_size
        self._cam_cache: dict = {}
        self._model = None
        self.overlays = {"box": False, "mask": False, "lesions": True, "cam": False}
        self.view_states: dict[int, ViewState] = {}
        self.patients = list(self.table.patient_id.drop_duplicates())
        self.filter = {}
        self.patient_id = None
        self._widget = None
        self.select(self.patients[0])

    # ---- navigation ------------------------------------------------------------------------------

    def set_filter(self, cancer_only: bool = False, machine_id=None, site_id=None) -> list:
        """Restrict the patients browsed; returns the patients left (the current one changes if filtered out)."""
        df = self.table
        if cancer_only and "cancer" in df:
            df = df[df.patient_id.isin(df[df.cancer == 1].patient_id)]
        if machine_id is not None:
            df = df[df.machine_id == machine_id]
        if site_id is not None:
            df = df[df.site_id == site_id]
        patients = list(df.patient_id.drop_duplicates())
        if not patients:
            raise UserError(f"no patient matches cancer_only={cancer_only}, machine_id={machine_id}, site_id={site_id}")
        self.filter = dict(cancer_only=cancer_only, machine_id=machine_id, site_id=site_id)
        self.patients = patients
        if self.patient_id not in patients:
            self.select(patients[0])
        return patients

    def select(self, patient_id) -> "PatientViewer":
        patient_id = str(patient_id)
        if patient_id not in set(self.table.patient_id):
            raise UserError(f"patient {patient_id} is not in {paths.split_csv(self.data, self.split)}")
        self.patient_id = patient_id
        rows = self.table[self.table.patient_id == patient_id]
        order = {lv: i for i, lv in enumerate(STANDARD_VIEWS)}
        self.views = sorted(rows.to_dict("records"),
                            key=lambda r: (order.get((r["laterality"], r["view"]), 99), r["laterality"], r["view"]))
        self.view_states = {i: self.view_states.get(i, ViewState()) for i in range(len(self.views))}
        self._refresh()
        return self

    def _step(self, delta: int) -> "PatientViewer":
        i = self.patients.index(self.patient_id) if self.patient_id in self.patients else 0
        return self.select(self.patients[(i + delta) % len(self.patients)])

    def next(self) -> "PatientViewer":
        return self._step(+1)

    def previous(self) -> "PatientViewer":
        return self._step(-1)

    # ---- display settings ------------------------------------------------------------------------

    def _targets(self, view):
        return list(self.view_states) if view is None else [view]

    def set_window(self, center: float, width: float, function: str = "LINEAR", view: int | None = None):
        """Window in the image's modality units (after RescaleSlope/Intercept), on one view or all of them."""
        function = function.upper()
        if function not in FUNCTIONS:
            raise UserError(f"function must be one of {FUNCTIONS}, got {function!r}")
        if width <= 0 or (function == "LINEAR" and width < 1):
            raise UserError(f"window width must be > 0 (>= 1 for LINEAR), got {width}")
        for i in self._targets(view):
            self.view_states[i].window = Window(float(center), float(width), function)
        self._refresh()
        return self

    def reset_window(self, view: int | None = None):
        for i in self._targets(view):
            self.view_states[i].window = None
        self._refresh()
        return self

    def presets(self, view: int = 0) -> list[Window]:
        """The header's windows of a view (all WindowCenter/WindowWidth pairs)."""
        return self._stored(view).windows

    def set_mode(self, mode: str, view: int | None = None):
        if mode not in MODES:
            raise UserError(f"mode must be one of {MODES}, got {mode!r}")
        if mode == "preprocessed" and self._preprocessed_dir() is None:
            raise UserError("mode 'preprocessed' needs a run_dir with preprocessed images")
        for i in self._targets(view):
            self.view_states[i].mode = mode
        self._refresh()
        return self

    def set_overlays(self, box: bool | None = None, mask: bool | None = None, lesions: bool | None = None,
                     cam: bool | None = None):
        for k, v in dict(box=box, mask=mask, lesions=lesions, cam=cam).items():
            if v is not None:
                self.overlays[k] = bool(v)
        if self.overlays["cam"] and self.run is None:
            raise UserError("the Grad-CAM overlay needs a run_dir with a trained model")
        self._refresh()
        return self

    # ---- pixels ----------------------------------------------------------------------------------

    def _path(self, view: int) -> Path:
        r = self.views[view]
        return paths.dicom_path(self.data, self.split, r["patient_id"], r["image_id"])

    def _stored(self, view: int):
        key = (str(self._path(view)), self.display_px)
        if key in self._cache:
            self._cache.move_to_end(key)
            return self._cache[key]
        v = read_stored_view(self._path(view), self.display_px)
        self._cache[key] = v
        if len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)
        return v

    def _preprocessed_dir(self) -> Path | None:
        """The preprocessed folder the run's model was trained on, as its config.json records it (a sweep
        keeps it in ``_shared/``); without a record, the run's only preprocessed folder of this split."""
        if self.run is None:
            return None
        import json

        cfg = paths.train_dir(self.run, self.fold) / paths.CONFIG
        if cfg.exists() and self.split == "train":
            recorded = Path(json.loads(cfg.read_text()).get("preprocessed", ""))
            if (recorded / paths.MANIFEST).exists():
                return recorded
        found = sorted((self.run / "preprocessed").glob(f"{self.split}_*/{paths.MANIFEST}"))
        return found[0].parent if len(found) == 1 else None

    def _png(self, view: int) -> np.ndarray | None:
        from ..prepare.png import load_png

        folder = self._preprocessed_dir()
        r = self.views[view]
        path = folder / paths.png_relpath(r["patient_id"], r["image_id"]) if folder else None
        return load_png(path) if path is not None and path.exists() else None

    def probability(self, view: int) -> float | None:
        """The run's model probability for a view (from its preprocessed image), or None."""
        cam = self._cam(view)
        return None if cam is None else cam[1]

    def _cam(self, view: int):
        if self.run is None:
            return None
        r = self.views[view]
        key = r["image_id"]
        if key not in self._cam_cache:
            img = self._png(view)
            if img is None:
                return None
            import torch

            from ..judge.evaluate import grad_cam

            if self._model is None:
                from ..learn.checkpoint import load_model
                from ..learn.runs import Run

                self._model, _ = load_model(Run(self.run).fold(self.fold).checkpoint)  # never a set-aside one
            x = torch.from_numpy(img)[None, None]
            with torch.no_grad():
                prob = float(torch.sigmoid(self._model(x)["cancer"])[0])
            self._cam_cache[key] = (grad_cam(self._model, x), prob)
        return self._cam_cache[key]

    def view_image(self, view: int) -> np.ndarray:
        """The float [0, 1] image of one view as its mode and window say (no overlays)."""
        state = self.view_states[view]
        if state.mode == "preprocessed":
            img = self._png(view)
            if img is None:
                raise ViewUnavailable("no preprocessed image of this view in the run's preprocessed folder")
            return img
        return display_image(self._stored(view), state.mode, state.window)

    def view_rgb(self, view: int) -> np.ndarray:
        """One view with its overlays, as RGB uint8 at display resolution."""
        from ..dicom import DicomReadError, StoredImage
        from ..prepare.preprocess import locate_breast

        state = self.view_states[view]
        img = self.view_image(view)
        rgb = to_rgb(img)
        r = self.views[view]
        found = None
        if state.mode != "preprocessed" and (self.overlays["box"] or self.overlays["mask"]):
            base = img if state.mode == "read" and state.window is None else display_image(self._stored(view), "read", None)
            try:
                found = locate_breast(StoredImage.from_display(base))  # exactly as preprocessing finds it
            except DicomReadError:  # a blank view has no breast
                pass
        if found is not None:
            box, seg = found
            if self.overlays["mask"]:
                m = cv2.resize(seg.breast.view(np.uint8), img.shape[::-1], interpolation=cv2.INTER_NEAREST)
                contours, _ = cv2.findContours(m, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
                cv2.drawContours(rgb, contours, -1, COLORS["mask"], 2)
            if self.overlays["box"]:
                y0, x0, y1, x1 = box
                cv2.rectangle(rgb, (x0, y0), (x1 - 1, y1 - 1), COLORS["box"], 2)
        if state.mode != "preprocessed" and self.overlays["lesions"] and self.truth is not None \
                and r["image_id"] in self.truth.index:
            t = self.truth.loc[r["image_id"]]
            if "lesion_y" in t and t.lesion_y == t.lesion_y:
                s = self._stored(view).scale
                radius = int(round((t.lesion_r if t.lesion_r == t.lesion_r else 10) * 1.6 / s))
                cv2.circle(rgb, (int(round(t.lesion_x / s)), int(round(t.lesion_y / s))), max(4, radius),
                           COLORS["lesion"], 2)
        if state.mode != "preprocessed" and self.overlays["lesions"] and len(self.lesion_boxes):
            s = self._stored(view).scale
            for b in self.lesion_boxes[self.lesion_boxes.image_id == str(r["image_id"])].itertuples():
                cv2.rectangle(rgb, (int(b.x0 / s), int(b.y0 / s)), (max(int(b.x0 / s) + 1, int(b.x1 / s)),
                                                                    max(int(b.y0 / s) + 1, int(b.y1 / s))),
                              COLORS["lesion"], 2)
        if state.mode == "preprocessed" and self.overlays["cam"]:
            cam = self._cam(view)
            if cam is not None:
                heat = cv2.applyColorMap(np.rint(cam[0] * 255).astype(np.uint8), cv2.COLORMAP_JET)[..., ::-1]
                rgb = cv2.addWeighted(rgb, 0.6, cv2.resize(heat, rgb.shape[1::-1]), 0.4, 0)
        return rgb

    def render(self) -> np.ndarray:
        """The composited screen: every view of the patient in a row (L-CC, R-CC, L-MLO, R-MLO, extras),
        each in a tile with a caption strip. Returns HxWx3 uint8."""
        th, tw = self.tile
        tiles = []
        from ..dicom import DicomReadError

        for i, r in enumerate(self.views):
            prob = None
            try:
                tile = fit_tile(self.view_rgb(i), th, tw)
                prob = self.probability(i) if self.overlays["cam"] or self.view_states[i].mode == "preprocessed" else None
            except (ViewUnavailable, DicomReadError, OSError) as exc:  # one unreadable view never hides the others
                tile = placeholder(th, tw, str(exc))
            caption = np.full((22, tw, 3), 32, np.uint8)
            text = f"{r['laterality']}-{r['view']}"
            if "cancer" in r:
                text += f" cancer={r['cancer']}"
            if prob is not None:
                text += f" p={prob:.2f}"
            cv2.putText(caption, text, (4, 16), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (235, 235, 235), 1, cv2.LINE_AA)
            tiles.append(np.vstack([caption, tile]))
        return np.hstack(tiles)

    def title(self) -> str:
        r = self.views[0]
        label = f", cancer breasts: {sorted({v['laterality'] for v in self.views if v.get('cancer') == 1}) or 'none'}" \
            if "cancer" in r else ""
        win = self.view_states[0].window
        return (f"patient {self.patient_id} ({self.patients.index(self.patient_id) + 1 if self.patient_id in self.patients else '-'}"
                f"/{len(self.patients)}), machine {r.get('machine_id')}, site {r.get('site_id')}{label}; "
                f"window {win if win else 'from the header'}")

    # ---- front-ends ------------------------------------------------------------------------------

    def figure(self):
        """One static matplotlib figure of the current state (what headless runs keep)."""
        import matplotlib.pyplot as plt

        img = self.render()
        fig, ax = plt.subplots(figsize=(min(18, 2.2 + img.shape[1] / 110), 2.2 + img.shape[0] / 110))
        ax.imshow(img)
        ax.set_title(self.title())
        ax.set_xlabel("views side by side (display pixels)")
        ax.set_ylabel("y (display pixels)")
        fig.tight_layout()
        return fig

    def _refresh(self) -> None:
        if self._widget is not None:
            self._widget.update()

    def widget(self):
        """The ipywidgets front-end (built on first use)."""
        from .viewer_widgets import ViewerWidget

        if self._widget is None:
            self._widget = ViewerWidget(self)
        return self._widget.box

    def show(self, interactive: bool | None = None):
        """The widget in JupyterLab; one static figure where no widget front-end runs (papermill)."""
        from IPython.display import display

        interactive = in_widget_frontend() if interactive is None else interactive
        if interactive:
            display(self.widget())
            return None
        return self.figure()
