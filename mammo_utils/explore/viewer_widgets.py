"""The ipywidgets front-end of :class:`~mammo_utils.explore.viewer.PatientViewer`: controls only.

Every control calls the viewer's programmatic surface (``select``, ``set_window``, ``set_mode``,
``set_overlays``...) and then shows ``render()``; nothing is drawn here, so what the tests assert
through that surface is what a person sees.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import cv2

from ..dicom.lut import Window

if TYPE_CHECKING:  # the viewer imports this module; this one needs only its surface
    from .viewer import PatientViewer


class ViewerWidget:
    """ipywidgets controls bound to a PatientViewer; each control calls the programmatic surface."""

    def __init__(self, viewer: PatientViewer):
        import ipywidgets as W

        self.v = viewer
        self._busy = False
        self.image = W.Image(format="png", layout=W.Layout(max_width="100%"))
        self.image.add_class("mammo-viewer-image")
        self.title = W.HTML()
        self.patient = W.Dropdown(options=viewer.patients, value=viewer.patient_id, description="patient")
        self.prev_btn, self.next_btn = W.Button(description="◀ previous"), W.Button(description="next ▶")
        self.cancer_only = W.Checkbox(description="cancer only", value=False)
        machines = ["all"] + sorted(viewer.table.machine_id.dropna().unique().tolist()) if "machine_id" in viewer.table else ["all"]
        self.machine = W.Dropdown(options=machines, value="all", description="machine")
        self.view_pick = W.Dropdown(description="view")
        self.mode = W.ToggleButtons(options=[m for m in viewer.MODES if m != "preprocessed" or viewer._preprocessed_dir()],
                                    value="read", description="show")
        self.function = W.Dropdown(options=viewer.FUNCTIONS, value="LINEAR", description="VOI")
        self.preset = W.Dropdown(description="preset")
        self.center = W.FloatSlider(description="center")
        self.width = W.FloatSlider(description="width")
        self.center.add_class("mammo-center")
        self.width.add_class("mammo-width")
        self.boxes = {k: W.Checkbox(description=k, value=viewer.overlays[k]) for k in ("box", "mask", "lesions", "cam")}
        if viewer.run is None:
            self.boxes["cam"].disabled = True
        self.prev_btn.on_click(lambda _: self._nav(viewer.previous))
        self.next_btn.on_click(lambda _: self._nav(viewer.next))
        self.patient.observe(lambda c: self._nav(lambda: viewer.select(c["new"])), "value")
        self.cancer_only.observe(lambda _: self._filter(), "value")
        self.machine.observe(lambda _: self._filter(), "value")
        self.view_pick.observe(lambda _: self._sync_controls(), "value")
        self.mode.observe(lambda c: self._guard(lambda: viewer.set_mode(c["new"], self._view())), "value")
        self.preset.observe(lambda c: self._apply_preset(c["new"]), "value")
        for w in (self.center, self.width, self.function):
            w.observe(lambda _: self._apply_window(), "value")
        for k, b in self.boxes.items():
            b.observe(lambda c, k=k: self._guard(lambda: viewer.set_overlays(**{k: c["new"]})), "value")
        self.box = W.VBox([
            W.HBox([self.prev_btn, self.patient, self.next_btn, self.cancer_only, self.machine]),
            W.HBox([self.view_pick, self.mode]),
            W.HBox([self.function, self.preset, self.center, self.width]),
            W.HBox(list(self.boxes.values())), self.title, self.image])
        self._sync_controls()
        self.update()

    def _view(self):
        return self.view_pick.value

    def _guard(self, fn):
        if not self._busy:
            fn()

    def _nav(self, fn):
        if self._busy:
            return
        self._busy = True
        try:
            fn()
            self.patient.value = self.v.patient_id
        finally:
            self._busy = False
        self._sync_controls()
        self.update()

    def _filter(self):
        machine = None if self.machine.value == "all" else self.machine.value
        self.v.set_filter(cancer_only=self.cancer_only.value, machine_id=machine)
        self._busy = True
        try:
            self.patient.options = self.v.patients
            self.patient.value = self.v.patient_id
        finally:
            self._busy = False
        self.update()

    def _sync_controls(self):
        """Slider ranges and presets from the selected view's stored values and header windows."""
        self._busy = True
        try:
            labels = [(f"{r['laterality']}-{r['view']}", i) for i, r in enumerate(self.v.views)]
            if self.view_pick.options != tuple(labels):
                self.view_pick.options = labels
                self.view_pick.value = 0
            i = self.view_pick.value or 0
            sv = self.v._stored(i)
            slope, intercept, _ = sv.modality
            lo = float(sv.stored.min()) * slope + intercept
            hi = float(sv.stored.max()) * slope + intercept
            lo, hi = min(lo, hi), max(lo, hi) + 1
            win = self.v.view_states[i].window or (sv.windows[0] if sv.windows else Window((lo + hi) / 2, hi - lo))
            self.center.min, self.center.max = lo - (hi - lo), hi + (hi - lo)
            self.width.min, self.width.max = 1.0, 2 * (hi - lo)
            self.center.step = self.width.step = max(1.0, (hi - lo) / 100)
            self.center.value, self.width.value = win.center, win.width
            self.function.value = win.function if win.function in self.v.FUNCTIONS else "LINEAR"
            self.preset.options = [("header", None)] + [(str(w), k) for k, w in enumerate(sv.windows)]
            self.preset.value = None
            self.mode.value = self.v.view_states[i].mode
        finally:
            self._busy = False

    def _apply_window(self):
        if not self._busy:
            self.v.set_window(self.center.value, self.width.value, self.function.value, view=None)

    def _apply_preset(self, k):
        if self._busy:
            return
        if k is None:
            self.v.reset_window()
        else:
            w = self.v.presets(self.view_pick.value or 0)[k]
            self.v.set_window(w.center, w.width, w.function)
        self._sync_controls()

    def update(self):
        self.image.value = cv2.imencode(".png", self.v.render()[..., ::-1])[1].tobytes()
        self.title.value = f"<b>{self.v.title()}</b>"
