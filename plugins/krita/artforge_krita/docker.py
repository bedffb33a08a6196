"""The ArtForge docker, its server settings dialog and the menu actions (Qt widgets; Krita through krita_adapter).

A QTimer on the main thread polls the running jobs; no call here waits on the network. The
docker is small enough to dock in Krita's default layout with every control in view (about
260 x 360 px: the fields two to a row, the history one line, the server settings in their own
dialog); Qt's dock layout then gives it that much under Layers and Brush Presets.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from krita import DockWidget, Extension, Krita
from PyQt5.QtCore import QRegularExpression, QSize, Qt, QTimer
from PyQt5.QtGui import QIcon, QPixmap, QRegularExpressionValidator
from PyQt5.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDialog,
    QDialogButtonBox,
    QDockWidget,
    QDoubleSpinBox,
    QFileDialog,
    QFormLayout,
    QGridLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPlainTextEdit,
    QProgressBar,
    QPushButton,
    QSizePolicy,
    QSpinBox,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

import artforge_krita

if TYPE_CHECKING:
    from artforge_client.server import ServerSettings, ServerSummary
    from artforge_krita.controls import ControlChoice, Use
    from artforge_krita.jobs import LayerResult, Params

DOCKER_ID = "artforge_docker"
POLL_MS = 100
ACTIONS = ("generate", "refine", "fill", "stylize")
ACTION_TIPS = {
    "generate": "A new layer from the prompt, over the selection's bounds or the whole canvas",
    "refine": "Image to image from the Source, with the prompt; Strength 0 keeps it",
    "fill": "Repaint the selection with the prompt; every other pixel keeps its value",
    "stylize": "The Source in the chosen style",
}
CONTROL_TIPS = {
    "add": "Add a control: a layer that steers Generate, Refine and Fill through a ControlNet",
    "preprocessor": "What From canvas makes of the visible canvas: edges (canny), strokes (scribble), lines (lineart) or depth",
    "from_canvas": "Make a control layer from the visible canvas on the server (in the selection's bounds), and add it as a control",
    "layer": "The layer this control reads: its own pixels over the job's area, hidden or not",
    "use": "The ControlNet type; 'from layer': the server makes it from the layer first (a drawing's strokes, a picture's edges or depth)",
    "strength": "Strength of this control: 0 adds nothing, 1 is the ControlNet's own, up to 2",
    "start": "The first step it acts on, as a share of the steps",
    "end": "The last step it acts on, as a share of the steps",
}
SERVER_DEFAULT = "Server default"
STYLE_ICON = QSize(24, 24)
STYLE_PREVIEW = QSize(64, 64)


class ServerDialog(QDialog):
    """Address, token, TLS and CA certificate, with Test Connection; the docker's ⚙ button opens it."""

    def __init__(self, docker: ArtForgeDocker) -> None:
        super().__init__(docker)
        self.setWindowTitle("ArtForge Server")
        self.docker = docker
        form = QFormLayout(self)
        self.address = QLineEdit()
        self.address.setPlaceholderText("host:port, e.g. 127.0.0.1:50051")
        self.token = QLineEdit()
        self.token.setEchoMode(QLineEdit.Password)
        self.token.setPlaceholderText("only if the server asks for one")
        self.tls = QCheckBox("TLS")
        self.certificate = QLineEdit()
        self.certificate.setPlaceholderText("CA certificate (PEM), for self-signed servers")
        browse = _button("…", "Choose the CA certificate file", self._browse)
        certificate_row = QHBoxLayout()
        certificate_row.addWidget(self.certificate, 1)
        certificate_row.addWidget(browse)
        self.test_button = QPushButton("Test Connection")
        self.test_button.clicked.connect(docker.test_connection)
        self.result = QLabel("")
        self.result.setWordWrap(True)
        buttons = QDialogButtonBox(QDialogButtonBox.Ok | QDialogButtonBox.Cancel)
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)
        form.addRow("Address", self.address)
        form.addRow("Token", self.token)
        form.addRow("", self.tls)
        form.addRow("Certificate", certificate_row)
        form.addRow(self.test_button)
        form.addRow(self.result)
        form.addRow(buttons)
        self.setMinimumWidth(420)

    def show_settings(self, settings: ServerSettings) -> None:
        self.address.setText(settings.address)
        self.token.setText(settings.token)
        self.tls.setChecked(settings.tls)
        self.certificate.setText(settings.certificate)

    def settings(self) -> ServerSettings:
        from artforge_client.server import ServerSettings  # the bundled libraries are on sys.path once a dialog exists

        return ServerSettings(self.address.text().strip(), self.token.text().strip(), self.tls.isChecked(), self.certificate.text().strip())

    def open_with(self, settings: ServerSettings) -> None:
        self.show_settings(settings)
        self.result.setText("")
        self.show()
        self.raise_()

    def accept(self) -> None:
        self.docker.apply_settings(self.settings())
        super().accept()

    def _browse(self) -> None:
        path = QFileDialog.getOpenFileName(self, "CA certificate", self.certificate.text(), "PEM (*.pem *.crt);;All files (*)")[0]
        if path:
            self.certificate.setText(path)


class LayerList(QComboBox):
    """A control row's layer: the active document's layers, listed again each time the list opens (layers come and go)."""

    def __init__(self, docker: ArtForgeDocker) -> None:
        super().__init__()
        self.docker = docker
        self.setSizeAdjustPolicy(QComboBox.AdjustToMinimumContentsLengthWithIcon)
        self.setMinimumContentsLength(4)
        self.setToolTip(CONTROL_TIPS["layer"])

    def showPopup(self) -> None:
        self.fill()
        super().showPopup()

    def fill(self, select: str | None = None) -> None:
        """List the layers, keeping the chosen one (or choosing `select`); none chosen when it is gone."""
        wanted = select if select is not None else self.currentData()
        layers = self.docker._adapter.control_layers(Krita.instance().activeDocument())
        if [(self.itemData(i), self.itemText(i)) for i in range(self.count())] != layers:
            self.clear()
            for layer_id, name in layers:
                self.addItem(name, layer_id)
        self.setCurrentIndex(self.findData(wanted) if wanted else -1)


class ControlRow(QWidget):
    """One control: its layer, use (type), strength and steps, and a button to remove it (two lines, to fit the dock column)."""

    def __init__(self, docker: ArtForgeDocker, layer_id: str, use: Use | None) -> None:
        super().__init__()
        self.controls = docker._controls
        self.layer = LayerList(docker)
        self.layer.fill(layer_id)
        self.use = QComboBox()
        self.use.setSizeAdjustPolicy(QComboBox.AdjustToMinimumContentsLengthWithIcon)
        self.use.setMinimumContentsLength(4)
        self.use.setToolTip(CONTROL_TIPS["use"])
        self.set_uses(docker.control_options.uses, use)
        self.remove_button = _button("✕", "Remove this control", lambda: docker.remove_control(self))
        self.strength = QDoubleSpinBox()
        self.strength.setRange(0.0, 2.0)
        self.strength.setSingleStep(0.05)
        self.strength.setValue(1.0)
        self.strength.setPrefix("strength ")
        self.strength.setToolTip(CONTROL_TIPS["strength"])
        self.start, self.end = QSpinBox(), QSpinBox()
        for box, (low, high, value) in ((self.start, (0, 99, 0)), (self.end, (1, 100, 100))):
            box.setRange(low, high)
            box.setValue(value)
            box.setSuffix("%")
            box.setSingleStep(5)
        self.start.setToolTip(CONTROL_TIPS["start"])
        self.end.setToolTip(CONTROL_TIPS["end"])
        top, bottom = QHBoxLayout(), QHBoxLayout()
        for line in (top, bottom):
            line.setSpacing(2)
        top.addWidget(self.layer, 1)
        top.addWidget(self.use, 1)
        top.addWidget(self.remove_button)
        bottom.addWidget(self.strength, 1)
        bottom.addWidget(self.start, 1)
        bottom.addWidget(QLabel("to"))
        bottom.addWidget(self.end, 1)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 2, 0, 2)
        layout.setSpacing(2)
        layout.addLayout(top)
        layout.addLayout(bottom)

    def set_uses(self, uses: list[Use], keep: Use | None = None) -> None:
        """The Type list the server offers, keeping the chosen use when it still has it."""
        keep = keep if keep is not None else self.use.currentData()
        self.use.clear()
        for use in uses:
            self.use.addItem(use.label, use)
        index = next((i for i, use in enumerate(uses) if use == keep), 0)
        self.use.setCurrentIndex(index)

    def choice(self) -> ControlChoice:
        use = self.use.currentData() or self.controls.Use(self.controls.CONTROL_TYPES[0])
        return self.controls.ControlChoice(
            layer_id=self.layer.currentData() or "",
            layer_name=self.layer.currentText(),
            use=use,
            strength=round(self.strength.value(), 2),
            start=self.start.value() / 100,
            end=self.end.value() / 100,
        )


class ArtForgeDocker(DockWidget):
    def __init__(self) -> None:
        super().__init__()
        self.setWindowTitle("ArtForge")
        root = QWidget(self)
        self.setWidget(root)
        layout = QVBoxLayout(root)
        layout.setContentsMargins(4, 4, 4, 4)
        layout.setSpacing(4)
        if artforge_krita.PROBLEM:
            message = QLabel(artforge_krita.PROBLEM)
            message.setWordWrap(True)
            layout.addWidget(message)
            return
        # Imported here, not at the top: these need the bundled grpcio, which may be missing.
        from artforge_krita import controls, jobs, krita_adapter
        from artforge_krita.status import StatusLine

        self._jobs, self._adapter, self._controls = jobs, krita_adapter, controls
        self.control_options = controls.ControlOptions()  # until the server says which ControlNets it has
        self.control_rows: list[ControlRow] = []
        self.controller = krita_adapter.Controller()
        self.side_jobs: dict[str, jobs.Job] = {}  # prompt help and connection tests, beside the image job
        self.status_line = StatusLine()
        self._helping = ""  # the idea Help me write this is working on
        self._helped: tuple[str, str] | None = None  # the last idea it answered, and the prompt it wrote
        self._build(layout)
        self.server = ServerDialog(self)
        self._timer = QTimer(self)
        self._timer.timeout.connect(self.poll)
        self._timer.start(POLL_MS)
        self.test_connection()  # fills the model and style lists, and says at once if the server is unreachable

    # -- widgets ----------------------------------------------------------------------------------

    def _build(self, layout: QVBoxLayout) -> None:
        self.prompt = QPlainTextEdit()
        self.prompt.setPlaceholderText("What to paint")
        self.prompt.setFixedHeight(self.prompt.fontMetrics().lineSpacing() * 3 + 12)
        self.help_button = _button(
            "Help me write this", "Turn a few words into a detailed prompt, with the server's text model", self.expand_prompt, wide=True
        )
        self.server_button = _button("Server", "Server address, token and TLS; Test Connection", self.open_server_settings)
        self.server_button.setIcon(Krita.instance().icon("configure"))
        self.server_button.setToolButtonStyle(Qt.ToolButtonTextBesideIcon)
        top = QHBoxLayout()
        top.addWidget(self.help_button, 1)
        top.addWidget(self.server_button)
        layout.addWidget(self.prompt)
        layout.addLayout(top)

        self.model = QComboBox()
        self.model.addItem(SERVER_DEFAULT, "")
        self.model.setToolTip("The image model; Server default: the one the server is configured with")
        self.style = QComboBox()
        self.style.setIconSize(STYLE_ICON)
        self.style.view().setIconSize(STYLE_PREVIEW)  # the open list shows the previews big enough to compare
        self.style.setToolTip("Stylize: the built-in style (listed when the server is reached)")
        self.steps = QSpinBox()
        self.steps.setRange(0, 150)
        self.steps.setValue(20)
        self.steps.setSpecialValueText("default")
        self.steps.setToolTip("Denoising steps; default: the model's own (few-step models want about 4)")
        self.strength = QDoubleSpinBox()
        self.strength.setRange(0.0, 1.0)
        self.strength.setSingleStep(0.05)
        self.strength.setValue(0.5)
        self.strength.setToolTip("Refine and Fill: 0 keeps the layer, 1 ignores it. Stylize: how much of the style")
        self.seed = QLineEdit()
        self.seed.setPlaceholderText("random")
        self.seed.setValidator(QRegularExpressionValidator(QRegularExpression("[0-9]{0,20}"), self.seed))
        self.seed.setToolTip("The same seed and settings give the same picture; empty: a new one each time")
        self.source = QComboBox()
        self.source.addItems(["Layer", "Canvas"])
        self.source.setToolTip("What Refine, Fill and Stylize start from: the current layer or the visible canvas")
        # Krita's default layout leaves a docker about 260 px wide: no row may need more.
        for widget in (self.model, self.style, self.source):
            widget.setSizeAdjustPolicy(QComboBox.AdjustToMinimumContentsLengthWithIcon)
            widget.setMinimumContentsLength(4)
        grid = QGridLayout()
        grid.setHorizontalSpacing(4)
        grid.setVerticalSpacing(4)
        rows = (
            (("Model", self.model),),
            (("Style", self.style),),
            (("Steps", self.steps), ("Strength", self.strength)),
            (("Seed", self.seed), ("Source", self.source)),
        )
        for row, fields in enumerate(rows):
            for column, (label, widget) in enumerate(fields):
                grid.addWidget(QLabel(label), row, column * 2)
                grid.addWidget(widget, row, column * 2 + 1, 1, 3 if len(fields) == 1 else 1)
        grid.setColumnStretch(1, 1)
        grid.setColumnStretch(3, 1)
        layout.addLayout(grid)

        self.add_control_button = _button("+ Control", CONTROL_TIPS["add"], lambda: self.add_control())
        self.preprocessor = QComboBox()
        self.preprocessor.addItems(list(self._controls.PREPROCESSORS))
        self.preprocessor.setToolTip(CONTROL_TIPS["preprocessor"])
        self.preprocessor.setSizeAdjustPolicy(QComboBox.AdjustToMinimumContentsLengthWithIcon)
        self.preprocessor.setMinimumContentsLength(4)
        self.from_canvas_button = _button("From canvas", CONTROL_TIPS["from_canvas"], self.from_canvas)
        control_bar = QHBoxLayout()
        control_bar.setSpacing(2)
        control_bar.addWidget(self.add_control_button)
        control_bar.addStretch(1)
        control_bar.addWidget(self.preprocessor, 1)
        control_bar.addWidget(self.from_canvas_button)
        layout.addLayout(control_bar)
        self.controls_box = QVBoxLayout()
        self.controls_box.setSpacing(0)
        layout.addLayout(self.controls_box)

        buttons = QHBoxLayout()
        buttons.setSpacing(2)
        self.action_buttons = {}
        for action in ACTIONS:
            button = _button(action.capitalize(), ACTION_TIPS[action], lambda _checked=False, a=action: self.run(a), wide=True)
            buttons.addWidget(button)
            self.action_buttons[action] = button
        layout.addLayout(buttons)
        self.progress = QProgressBar()
        self.progress.setRange(0, 100)
        self.cancel_button = _button("Cancel", "Stop the running job (and Help me write this)", self.cancel, wide=True)
        running = QHBoxLayout()
        running.addWidget(self.progress, 1)
        running.addWidget(self.cancel_button)
        layout.addLayout(running)
        self.status = QLabel("")
        self.status.setWordWrap(True)
        self.status.setTextInteractionFlags(Qt.TextSelectableByMouse)
        layout.addWidget(self.status)

        self.history = QComboBox()
        self.history.setPlaceholderText("History: no results yet")
        self.history.setSizeAdjustPolicy(QComboBox.AdjustToMinimumContentsLengthWithIcon)
        self.history.setMinimumWidth(60)  # its placeholder would otherwise set the docker's width
        self.history.setToolTip("The last results of this session, newest first")
        self.apply_button = _button("Apply again", "Paste this result again as a new layer", self.apply_history)
        self.seed_button = _button(
            "Use seed", "Put this result's seed in the Seed box, to make it again with other settings", self.reuse_seed
        )
        history = QHBoxLayout()
        history.addWidget(self.history, 1)
        history.addWidget(self.apply_button)
        history.addWidget(self.seed_button)
        layout.addLayout(history)
        layout.addStretch(1)

    def canvasChanged(self, canvas: object) -> None:
        pass  # every action reads the active document when it starts

    def _say(self, message: str) -> None:
        self.status_line.say(message)
        self._show_status()

    def _show_status(self) -> None:
        if self.status.text() != self.status_line.text:
            self.status.setText(self.status_line.text)

    # -- actions ----------------------------------------------------------------------------------

    def params(self) -> Params:
        """Refused when a field cannot be used (the Seed box takes any 64-bit seed)."""
        return self._jobs.Params(
            prompt=self.prompt.toPlainText().strip(),
            model=self.model.currentData() or "",
            steps=self.steps.value(),
            strength=self.strength.value(),
            seed=self._jobs.parse_seed(self.seed.text()),
            style_index=max(self.style.currentIndex(), 0),
        )

    def apply_settings(self, settings: ServerSettings) -> None:
        if settings != self.controller.settings:
            self._adapter.save_settings(settings)
            self.controller.settings = settings

    def open_server_settings(self) -> None:
        self.server.open_with(self.controller.settings)

    def control_choices(self) -> list[ControlChoice]:
        return [row.choice() for row in self.control_rows]

    def run(self, action: str) -> None:
        try:
            self.controller.start(
                action,
                self.params(),
                visible=self.source.currentIndex() == 1,
                control_choices=self.control_choices(),
                max_controls=self.control_options.max_controls,
            )
        except self._jobs.Refused as refusal:
            self._say(str(refusal))
        self.poll()

    def add_control(self, layer_id: str | None = None, use: Use | None = None) -> ControlRow | None:
        """A control row for `layer_id` (the active layer by default); None, with a sentence, when the server's limit is reached."""
        limit = self.control_options.max_controls
        if len(self.control_rows) >= limit:
            self._say(f"The server takes at most {limit} controls a job.")
            return None
        document = Krita.instance().activeDocument()
        layers = dict(self._adapter.control_layers(document))
        if layer_id is None:
            active = document.activeNode() if document is not None else None
            layer_id = self._adapter.node_id(active) if active is not None else ""
        if use is None:
            use = self._controls.default_use(self.control_options.uses, layers.get(layer_id, "").rsplit(" / ", 1)[-1])
        row = ControlRow(self, layer_id if layer_id in layers else "", use)
        self.control_rows.append(row)
        self.controls_box.addWidget(row)
        self._enable_buttons()
        return row

    def remove_control(self, row: ControlRow) -> None:
        if row in self.control_rows:
            self.control_rows.remove(row)
            self.controls_box.removeWidget(row)
            row.hide()
            row.deleteLater()
        self._enable_buttons()

    def from_canvas(self) -> None:
        try:
            self.controller.start_preprocess(self.preprocessor.currentText())
        except self._jobs.Refused as refusal:
            self._say(str(refusal))
        self.poll()

    def _take_made_control(self) -> None:
        """A From canvas layer has come: add it as a control (when there is room)."""
        made, self.controller.made_control = self.controller.made_control, None
        if made is None:
            return
        node, kind = made
        use = self._controls.Use(kind)
        if use not in self.control_options.uses:
            self.status_line.say(f"Made the layer '{node.name()}'; the server has no {kind} ControlNet to use it with.")
        elif len(self.control_rows) >= self.control_options.max_controls:
            limit = self.control_options.max_controls
            self.status_line.say(f"Made the layer '{node.name()}'; remove a control to use it (at most {limit}).")
        else:
            self.add_control(self._adapter.node_id(node), use)

    def cancel(self) -> None:
        self.controller.cancel()
        for job in self.side_jobs.values():
            job.state.request_cancel()

    def expand_prompt(self) -> None:
        idea = self.prompt.toPlainText().strip()
        if not idea:
            self._say("Write a few words first; ArtForge turns them into a detailed prompt.")
            return
        if self._helped is not None and idea == self._helped[1]:
            idea = self._helped[0]  # pressed again on its own answer: another answer for the same idea
        self.side_jobs["prompt"] = self._jobs.start_prompt_expand(self.controller.settings, idea)
        self._helping = idea
        self.poll()

    def test_connection(self) -> None:
        """With the dialog's fields while it is open (and saves them), else with the saved settings."""
        if self.server.isVisible():
            self.apply_settings(self.server.settings())
        self.side_jobs["connection"] = self._jobs.start_connection_test(self.controller.settings)
        self.poll()

    def apply_history(self) -> None:
        entry = self._history_entry()
        if entry is None:
            return
        try:
            self.controller.paste(entry)
        except self._jobs.Refused as refusal:
            self._say(str(refusal))

    def reuse_seed(self) -> None:
        entry = self._history_entry()
        if entry is not None:
            self.seed.setText(str(entry.seed))

    def _history_entry(self) -> LayerResult | None:
        """The result picked in the history, or None (and the status says to pick one)."""
        row = self.history.currentIndex()
        if row < 0 or row >= len(self.controller.history):
            self._say("Pick a result in the history first.")
            return None
        return self.controller.history[row]

    # -- the timer --------------------------------------------------------------------------------

    def poll(self) -> None:
        for name, job in list(self.side_jobs.items()):
            self.status_line.watch(name, job)
            snapshot = job.state.snapshot()
            if name == "connection" and self.server.isVisible():
                self.server.result.setText(snapshot.message)
            if not snapshot.phase.finished:
                continue
            del self.side_jobs[name]
            if snapshot.result is None:
                continue
            if name == "prompt":
                self.prompt.setPlainText(snapshot.result)
                self._helped = (self._helping, snapshot.result)
            else:
                self._show_server(snapshot.result)
        self.status_line.watch("image", self.controller.job)
        try:
            snapshot = self.controller.poll()
        except self._jobs.Refused as refusal:  # the result could not be pasted; it stays in the history
            self.status_line.say(str(refusal))
            snapshot = self.controller.job.state.snapshot()
        self._take_made_control()
        self._show_status()
        self._enable_buttons()
        if snapshot is None:
            return
        # Only a running job or a result has progress to show: a cancelled or failed job goes back to 0.
        shown = snapshot.progress if snapshot.phase.active or snapshot.result is not None else 0.0
        self.progress.setValue(round(shown * 100))
        labels = self.controller.history.labels()
        if [self.history.itemText(i) for i in range(self.history.count())] != labels:
            self.history.clear()
            self.history.addItems(labels)
            self.history.setCurrentIndex(0 if labels else -1)

    def _enable_buttons(self) -> None:
        busy = self.controller.busy
        for button in (*self.action_buttons.values(), self.from_canvas_button):
            button.setEnabled(not busy)
        self.add_control_button.setEnabled(len(self.control_rows) < self.control_options.max_controls)
        self.cancel_button.setEnabled(busy or bool(self.side_jobs))

    def _show_server(self, summary: ServerSummary) -> None:
        self.control_options = self._controls.control_options(summary.control_types, summary.max_controls)
        for row in self.control_rows:
            row.set_uses(self.control_options.uses)
        style = self.style.currentIndex()
        self.style.clear()
        previews = summary.style_previews
        for index, name in enumerate(summary.styles):
            pixmap = QPixmap()
            if index < len(previews) and pixmap.loadFromData(previews[index], "PNG"):
                self.style.addItem(QIcon(pixmap), name)
            else:
                self.style.addItem(name)
        self.style.setCurrentIndex(min(max(style, 0), len(summary.styles) - 1))
        model = self.model.currentData() or ""
        self.model.clear()
        self.model.addItem(SERVER_DEFAULT, "")
        for name in summary.image_models:
            self.model.addItem(name, name)
        self.model.setCurrentIndex(max(self.model.findData(model), 0))


def _button(text: str, tip: str, clicked: Callable[..., None], wide: bool = False) -> QToolButton:
    """A tool button: no wider than its text needs, since QPushButton's minimum of 80 px in Krita's
    styles would make the docker wider than Krita's default dock column; `wide` ones share their row."""
    button = QToolButton()
    button.setText(text)
    button.setToolTip(tip)
    button.clicked.connect(clicked)
    if wide:
        button.setSizePolicy(QSizePolicy.Expanding, QSizePolicy.Fixed)
    return button


class ArtForgeExtension(Extension):
    """Menu entries (Tools > Scripts > ArtForge: Generate ...) that run the docker's actions, so they can get shortcuts."""

    def setup(self) -> None:
        pass

    def createActions(self, window) -> None:  # noqa: ANN001 - Krita's Extension API
        for action in ACTIONS:
            menu_action = window.createAction(f"artforge_{action}", f"ArtForge: {action.capitalize()}", "tools/scripts")
            menu_action.triggered.connect(lambda _checked=False, a=action: self._run(lambda docker: docker.run(a)))
        from_canvas = window.createAction("artforge_from_canvas", "ArtForge: Control from Canvas", "tools/scripts")
        from_canvas.triggered.connect(lambda _checked=False: self._run(ArtForgeDocker.from_canvas))

    def _run(self, act: Callable[[ArtForgeDocker], None]) -> None:
        window = Krita.instance().activeWindow()
        # Each window has its own docker; Krita names a docker's QDockWidget after its factory's id.
        docker = window.qwindow().findChild(QDockWidget, DOCKER_ID) if window is not None else None
        if isinstance(docker, ArtForgeDocker) and not artforge_krita.PROBLEM:
            act(docker)
