"""The thin layer that touches `krita`: read documents, selections and settings; write layers.

Everything here runs on Krita's main thread. The Controller starts jobs (jobs.py does the network
on a worker thread) and `poll()`, called by the docker's QTimer, pastes previews and results.
"""

from __future__ import annotations

from collections.abc import Sequence

from krita import Document, Krita, Node
from PyQt5.QtCore import QUuid

from artforge_client import DEFAULT_ADDRESS
from artforge_client.job_state import JobSnapshot, Phase
from artforge_client.server import ServerSettings
from artforge_krita import controls, jobs
from artforge_krita.controls import ControlChoice, ControlLayer
from artforge_krita.jobs import History, Job, LayerResult, Params, Region, Target
from artforge_krita.pixels import PixelFormat, Refused, document_format

SETTINGS_GROUP = "artforge"
PREVIEW_LAYER = "ArtForge preview"
LAYER_NAMES = {"generate": "ArtForge", "refine": "ArtForge refine", "fill": "ArtForge fill", "stylize": "ArtForge stylize"}


def load_settings() -> ServerSettings:
    def read(key: str, default: str) -> str:
        return Krita.instance().readSetting(SETTINGS_GROUP, key, default)

    return ServerSettings(read("address", DEFAULT_ADDRESS), read("token", ""), read("tls", "false") == "true", read("certificate", ""))


def save_settings(settings: ServerSettings) -> None:
    """Krita keeps these in kritarc (the token in plain text, like every Krita setting)."""
    app = Krita.instance()
    app.writeSetting(SETTINGS_GROUP, "address", settings.address)
    app.writeSetting(SETTINGS_GROUP, "token", settings.token)
    app.writeSetting(SETTINGS_GROUP, "tls", "true" if settings.tls else "false")
    app.writeSetting(SETTINGS_GROUP, "certificate", settings.certificate)


def format_of(document: Document) -> PixelFormat:
    return document_format(document.colorModel(), document.colorDepth(), document.colorProfile())


def selection_area(document: Document) -> tuple[Region, bytes]:
    """The selection's bounds on the canvas and its coverage there (8-bit, feathering kept); the whole canvas and b"" without one."""
    canvas = Region(0, 0, document.width(), document.height())
    selection = document.selection()
    if selection is None or selection.width() <= 0 or selection.height() <= 0:
        return canvas, b""
    left, top = max(selection.x(), 0), max(selection.y(), 0)
    right, bottom = min(selection.x() + selection.width(), canvas.width), min(selection.y() + selection.height(), canvas.height)
    if right <= left or bottom <= top:
        raise Refused("The selection lies outside the canvas.")
    region = Region(left, top, right - left, bottom - top)
    return region, bytes(selection.pixelData(region.x, region.y, region.width, region.height))


def control_layers(document: Document | None) -> list[tuple[str, str]]:
    """The layers a control row can pick, top first: (unique id, name; "Group / name" inside groups).
    Masks have no pixels of their own to send, and the preview layer comes and goes."""
    found: list[tuple[str, str]] = []

    def walk(parent: Node, path: str) -> None:
        for node in reversed(parent.childNodes()):  # Krita lists children bottom first
            if node.type().endswith("mask") or node.name() == PREVIEW_LAYER:
                continue
            name = f"{path}{node.name()}"
            found.append((node.uniqueId().toString(), name))
            if node.type() == "grouplayer":
                walk(node, f"{name} / ")

    if document is not None:
        walk(document.rootNode(), "")
    return found


def node_id(node: Node) -> str:
    return node.uniqueId().toString()


def control_pixels(document: Document, choices: Sequence[ControlChoice], region: Region) -> list[ControlLayer]:
    """Each row's layer's own pixels over `region` (its alpha kept: a drawn layer's strokes are where it is painted)."""
    read = []
    for number, choice in enumerate(choices, 1):
        node = document.nodeByUniqueID(QUuid(choice.layer_id))
        if node is None:
            raise Refused(f"Control {number}: the layer '{choice.layer_name}' is not in this document; pick its layer again.")
        read.append(ControlLayer(choice, bytes(node.pixelData(region.x, region.y, region.width, region.height))))
    return read


class Controller:
    """One image job at a time, plus the history. Owned by the docker; the tests drive it directly."""

    def __init__(self, settings: ServerSettings | None = None) -> None:
        self.settings = settings or load_settings()
        self.history = History()
        self.job: Job | None = None
        self.result_node: Node | None = None  # the layer the last finished job made
        self.made_control: tuple[Node, str] | None = None  # a From canvas layer and its type, until the docker takes it
        self._document: Document | None = None
        self._above: Node | None = None
        self._preview: Node | None = None
        self._finished = True
        self._polling = False

    @property
    def busy(self) -> bool:
        return self.job is not None and not self.job.state.snapshot().phase.finished

    def start(
        self,
        action: str,
        params: Params,
        document: Document | None = None,
        node: Node | None = None,
        visible: bool = False,
        control_choices: Sequence[ControlChoice] = (),
        max_controls: int = controls.DEFAULT_MAX_CONTROLS,
    ) -> Job:
        """Generate, refine, fill or stylize on `document` (the active one by default), reading `node`
        (the active layer) or, with `visible`, the whole visible canvas; Generate, Refine and Fill
        steered by `control_choices` (Stylize takes none). Refused with a sentence when it cannot."""
        document = self._document_for_a_job(document)
        if action == "stylize":
            control_choices = ()
        controls.check_choices(control_choices, max_controls)
        fmt = format_of(document)
        region, coverage = selection_area(document)
        node = node or document.activeNode()
        if action == "fill" and not coverage:
            raise Refused("Fill repaints the selection: select the area to fill first.")
        source = b""
        if action != "generate":
            if not visible and (node is None or node.type() != "paintlayer"):
                raise Refused("Pick a paint layer to work on, or choose the visible canvas as the source.")
            reader = document if visible else node
            source = bytes(reader.pixelData(region.x, region.y, region.width, region.height))
        # Only Fill composites through the selection; the others use it as a rectangle.
        target = Target(action, region, fmt, original=source if action == "fill" else b"", coverage=coverage if action == "fill" else b"")
        if action == "stylize":
            request = jobs.stylize_request(params, target, source)
        else:
            request = jobs.image_request(params, target, source, control_pixels(document, control_choices, region))
        return self._submit(request, target, document, node)

    def start_preprocess(self, preprocessor: str, document: Document | None = None) -> Job:
        """From canvas: the server makes a control image (canny, scribble, lineart, depth) of the
        visible canvas over the selection's bounds (or all of it), as Refine reads the canvas; it
        arrives as a hidden layer named "Control: <preprocessor>" on top, for a control row."""
        document = self._document_for_a_job(document)
        fmt = format_of(document)
        region, _ = selection_area(document)
        source = bytes(document.pixelData(region.x, region.y, region.width, region.height))
        target = Target("preprocess", region, fmt)
        return self._submit(jobs.preprocess_request(preprocessor, target, source), target, document, None)

    def _document_for_a_job(self, document: Document | None) -> Document:
        if self.busy:
            raise Refused("Another ArtForge job is still running: wait for it or cancel it.")
        document = document or Krita.instance().activeDocument()
        if document is None:
            raise Refused("Open or create a document first.")
        return document

    def _submit(self, request: jobs.ImageJobRequest, target: Target, document: Document, above: Node | None) -> Job:
        self._document, self._above, self.result_node, self._finished = document, above, None, False
        self.job = jobs.start_image_job(self.settings, request, target)
        return self.job

    def cancel(self) -> bool:
        return self.job is not None and self.job.state.request_cancel()

    def poll(self) -> JobSnapshot | None:
        """Called by the docker's timer: shows the latest preview, and pastes the result once.

        Krita's layer calls can run Qt's event loop while they wait for the image, and so fire
        the timer again inside this call; that inner call only reports, or it would remove the
        preview layer that the outer one is still setting up."""
        if self.job is None:
            return None
        snapshot = self.job.state.snapshot()
        if self._polling:
            return snapshot
        self._polling = True
        try:
            self._apply(snapshot)
        finally:
            self._polling = False
        return snapshot

    def _apply(self, snapshot: JobSnapshot) -> None:
        preview = self.job.take_preview()
        if preview is not None and snapshot.phase.active:
            self._show_preview(preview)
        if snapshot.phase.finished and not self._finished:
            self._finished = True
            self._remove_preview()
            if snapshot.phase is Phase.SUCCEEDED:
                self.history.add(snapshot.result)
                if not _is_open(self._document):
                    raise Refused("The document was closed before the result came: it is in the history (Apply again).")
                self.result_node = self.paste(snapshot.result, self._document, self._above)
                if snapshot.result.action == "preprocess":  # its prompt is the preprocessor, the control's type
                    self.made_control = (self.result_node, snapshot.result.prompt)

    def paste(self, result: LayerResult, document: Document | None = None, above: Node | None = None) -> Node:
        """A new paint layer holding `result` at its region, above `above` (or on top)."""
        document = document or Krita.instance().activeDocument()
        if document is None:
            raise Refused("Open a document to paste the result into.")
        if format_of(document) != result.fmt:
            raise Refused("This result was made for a document of another colour depth or profile.")
        node = document.createNode(result.layer_name or LAYER_NAMES[result.action], "paintlayer")
        if result.action == "preprocess":
            node.setVisible(False)  # an opaque control image would hide the painting; it is there for a control row
        self._insert(document, node, above)
        region = result.region
        node.setPixelData(result.data, region.x, region.y, region.width, region.height)
        document.refreshProjection()
        return node

    def _insert(self, document: Document, node: Node, above: Node | None) -> None:
        parent = above.parentNode() if above is not None else None
        if parent is None:
            document.rootNode().addChildNode(node, None)
        else:
            parent.addChildNode(node, above)

    def _show_preview(self, data: bytes) -> None:
        target = self.job.target
        if not _is_open(self._document):
            self._preview = None  # went with its document
            return
        if self._preview is None:
            self._preview = self._document.createNode(PREVIEW_LAYER, "paintlayer")
            self._insert(self._document, self._preview, self._above)
            self._preview.setLocked(True)  # a locked layer cannot be painted on by mistake
        region = target.region
        self._preview.setPixelData(data, region.x, region.y, region.width, region.height)
        self._document.refreshProjection()

    def _remove_preview(self) -> None:
        if self._preview is not None and _is_open(self._document):
            self._preview.remove()
            self._document.refreshProjection()
        self._preview = None


def _is_open(document: Document | None) -> bool:
    """Whether `document` is still open: a job may outlive the document it was started on."""
    return document is not None and any(open_document == document for open_document in Krita.instance().documents())
