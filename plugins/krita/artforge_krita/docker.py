"""The ArtForge docker and the menu actions (Qt widgets; talks to Krita through krita_adapter).

A QTimer on the main thread polls the running jobs; no call here waits on the network.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from krita import DockWidget, Extension, Krita
from PyQt5.QtCore import QTimer
from PyQt5.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QListWidget,
    QPlainTextEdit,
    QProgressBar,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

import artforge_krita

if TYPE_CHECKING:
    from artforge_client.server import ServerSummary
    from artforge_krita.jobs import Params

DOCKER_ID = "artforge_docker"
POLL_MS = 100
ACTIONS = ("generate", "refine", "fill", "stylize")


class ArtForgeDocker(DockWidget):
    def __init__(self) -> None:
        super().__init__()
        self.setWindowTitle("ArtForge")
        root = QWidget(self)
        self.setWidget(root)
        layout = QVBoxLayout(root)
        if artforge_krita.PROBLEM:
            message = QLabel(artforge_krita.PROBLEM)
            message.setWordWrap(True)
            layout.addWidget(message)
            return
        # Imported here, not at the top: these need the bundled grpcio, which may be missing.
        from artforge_krita import jobs, krita_adapter

        self._jobs, self._adapter = jobs, krita_adapter
        self.controller = krita_adapter.Controller()
        self.side_jobs: dict[str, jobs.Job] = {}  # prompt help and connection tests, beside the image job
        self._build(layout)
        self._timer = QTimer(self)
        self._timer.timeout.connect(self.poll)
        self._timer.start(POLL_MS)

    # -- widgets ----------------------------------------------------------------------------------

    def _build(self, layout: QVBoxLayout) -> None:
        self.prompt = QPlainTextEdit()
        self.prompt.setPlaceholderText("What to paint")
        self.prompt.setMaximumHeight(90)
        self.help_button = QPushButton("Help me write this")
        self.help_button.clicked.connect(self.expand_prompt)
        layout.addWidget(self.prompt)
        layout.addWidget(self.help_button)

        form = QFormLayout()
        self.model = QComboBox()
        self.model.setEditable(True)
        self.model.setToolTip("Empty: the server's default image model")
        self.steps = QSpinBox()
        self.steps.setRange(0, 150)
        self.steps.setValue(20)
        self.steps.setSpecialValueText("model default")
        self.strength = QDoubleSpinBox()
        self.strength.setRange(0.0, 1.0)
        self.strength.setSingleStep(0.05)
        self.strength.setValue(0.5)
        self.seed = QSpinBox()
        self.seed.setRange(-1, 2**31 - 1)
        self.seed.setValue(-1)
        self.seed.setSpecialValueText("random")
        self.style = QComboBox()
        self.source = QComboBox()
        self.source.addItems(["Current layer", "Visible canvas"])
        for label, widget in (
            ("Model", self.model),
            ("Steps", self.steps),
            ("Strength", self.strength),
            ("Seed", self.seed),
            ("Style", self.style),
            ("Source", self.source),
        ):
            form.addRow(label, widget)
        layout.addLayout(form)

        buttons = QHBoxLayout()
        self.action_buttons = {}
        for action in ACTIONS:
            button = QPushButton(action.capitalize())
            button.clicked.connect(lambda _checked=False, a=action: self.run(a))
            buttons.addWidget(button)
            self.action_buttons[action] = button
        layout.addLayout(buttons)
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.clicked.connect(self.cancel)
        layout.addWidget(self.cancel_button)
        self.progress = QProgressBar()
        self.progress.setRange(0, 100)
        self.status = QLabel("")
        self.status.setWordWrap(True)
        layout.addWidget(self.progress)
        layout.addWidget(self.status)

        self.history = QListWidget()
        self.history.setMaximumHeight(100)
        self.apply_button = QPushButton("Apply again")
        self.apply_button.clicked.connect(self.apply_history)
        layout.addWidget(QLabel("History"))
        layout.addWidget(self.history)
        layout.addWidget(self.apply_button)

        settings = self.controller.settings
        box = QGroupBox("Server")
        server = QFormLayout(box)
        self.address = QLineEdit(settings.address)
        self.token = QLineEdit(settings.token)
        self.token.setEchoMode(QLineEdit.Password)
        self.tls = QCheckBox("TLS")
        self.tls.setChecked(settings.tls)
        self.certificate = QLineEdit(settings.certificate)
        self.certificate.setPlaceholderText("CA certificate (PEM), for self-signed servers")
        self.test_button = QPushButton("Test Connection")
        self.test_button.clicked.connect(self.test_connection)
        for label, widget in (("Address", self.address), ("Token", self.token), ("", self.tls), ("Certificate", self.certificate)):
            server.addRow(label, widget)
        server.addRow(self.test_button)
        layout.addWidget(box)
        layout.addStretch(1)

    def canvasChanged(self, canvas: object) -> None:
        pass  # every action reads the active document when it starts

    # -- actions ----------------------------------------------------------------------------------

    def params(self) -> Params:
        return self._jobs.Params(
            prompt=self.prompt.toPlainText().strip(),
            model=self.model.currentText().strip(),
            steps=self.steps.value(),
            strength=self.strength.value(),
            seed=self.seed.value(),
            style_index=max(self.style.currentIndex(), 0),
        )

    def _apply_settings(self) -> None:
        settings = self._jobs.ServerSettings(
            self.address.text().strip(), self.token.text().strip(), self.tls.isChecked(), self.certificate.text().strip()
        )
        if settings != self.controller.settings:
            self._adapter.save_settings(settings)
            self.controller.settings = settings

    def run(self, action: str) -> None:
        self._apply_settings()
        try:
            self.controller.start(action, self.params(), visible=self.source.currentIndex() == 1)
        except self._jobs.Refused as refusal:
            self.status.setText(str(refusal))

    def cancel(self) -> None:
        self.controller.cancel()
        for job in self.side_jobs.values():
            job.state.request_cancel()

    def expand_prompt(self) -> None:
        self._apply_settings()
        idea = self.prompt.toPlainText().strip()
        if not idea:
            self.status.setText("Write a few words first; ArtForge turns them into a detailed prompt.")
            return
        self.side_jobs["prompt"] = self._jobs.start_prompt_expand(self.controller.settings, idea)

    def test_connection(self) -> None:
        self._apply_settings()
        self.side_jobs["connection"] = self._jobs.start_connection_test(self.controller.settings)

    def apply_history(self) -> None:
        row = self.history.currentRow()
        if row < 0 or row >= len(self.controller.history):
            self.status.setText("Pick a result in the history first.")
            return
        try:
            self.controller.paste(self.controller.history[row])
        except self._jobs.Refused as refusal:
            self.status.setText(str(refusal))

    # -- the timer --------------------------------------------------------------------------------

    def poll(self) -> None:
        for name, job in list(self.side_jobs.items()):
            snapshot = job.state.snapshot()
            if not snapshot.phase.finished:
                self.status.setText(snapshot.message)
                continue
            del self.side_jobs[name]
            self.status.setText(snapshot.message)
            if snapshot.result is None:
                continue
            if name == "prompt":
                self.prompt.setPlainText(snapshot.result)
            else:
                self._show_server(snapshot.result)
        try:
            snapshot = self.controller.poll()
        except self._jobs.Refused as refusal:  # the result could not be pasted; it stays in the history
            self.status.setText(str(refusal))
            snapshot = self.controller.job.state.snapshot()
        busy = self.controller.busy
        for button in self.action_buttons.values():
            button.setEnabled(not busy)
        self.cancel_button.setEnabled(busy or bool(self.side_jobs))
        if snapshot is None:
            return
        self.progress.setValue(round(snapshot.progress * 100))
        if snapshot.phase.active or not self.side_jobs:
            self.status.setText(snapshot.message)
        if self.history.count() != len(self.controller.history) or snapshot.phase.finished:
            labels = self.controller.history.labels()
            if [self.history.item(i).text() for i in range(self.history.count())] != labels:
                self.history.clear()
                self.history.addItems(labels)

    def _show_server(self, summary: ServerSummary) -> None:
        current_style = self.style.currentIndex()
        self.style.clear()
        self.style.addItems(summary.styles)
        self.style.setCurrentIndex(min(max(current_style, 0), len(summary.styles) - 1))
        model = self.model.currentText()
        self.model.clear()
        self.model.addItems(["", *summary.image_models])
        self.model.setCurrentText(model)


class ArtForgeExtension(Extension):
    """Menu entries (Tools > Scripts) that run the docker's actions, so they can get shortcuts."""

    def setup(self) -> None:
        pass

    def createActions(self, window) -> None:  # noqa: ANN001 - Krita's Extension API
        for action in ACTIONS:
            menu_action = window.createAction(f"artforge_{action}", f"ArtForge: {action.capitalize()}", "tools/scripts")
            menu_action.triggered.connect(lambda _checked=False, a=action: self._run(a))

    def _run(self, action: str) -> None:
        window = Krita.instance().activeWindow()
        docker = next((d for d in (window.dockers() if window else []) if isinstance(d, ArtForgeDocker)), None)
        if docker is not None and not artforge_krita.PROBLEM:
            docker.run(action)
