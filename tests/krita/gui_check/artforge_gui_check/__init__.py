"""Test only: a Krita Python plugin that looks at the ArtForge plugin in the real Krita window, then quits.

tests/test_krita_plugin.py installs ArtForge with Krita's own importer, puts this plugin beside
it, enables both in kritarc and starts the Krita GUI under Xvfb (1600x1000, like a laptop
screen). Once the window is up, this maximizes it (Xvfb has no window manager to do it), waits
for the ArtForge docker's own start-up connection test, and checks what an artist would see:
the docker docked in the default layout with every control in view, the lists filled, the
menus named as the README says, and the manual in Settings > Configure Krita > Python Plugin
Manager. ARTFORGE_OUT gets gui.json (one {"name", "ok", "message"} per check) and
krita-docker.png (the right dock column, for the README).
"""

from __future__ import annotations

import json
import os
import time
import traceback
from collections.abc import Callable
from pathlib import Path

from krita import Extension, Krita
from PyQt5.QtCore import QRect, Qt, QTimer
from PyQt5.QtTest import QTest
from PyQt5.QtWidgets import (
    QAbstractButton,
    QAbstractItemView,
    QAbstractSpinBox,
    QApplication,
    QComboBox,
    QDockWidget,
    QLineEdit,
    QPlainTextEdit,
    QProgressBar,
    QTextBrowser,
    QWidget,
)

OUT = Path(os.environ.get("ARTFORGE_OUT", "."))
RESULTS: list[dict] = []
CONTROLS = (QAbstractButton, QComboBox, QLineEdit, QAbstractSpinBox, QPlainTextEdit, QProgressBar)
DOCKED_HEIGHT = 400  # what the docker must fit in, title bar included: less than half of a 1000 px screen's dock column
CONNECT_TIMEOUT = 120.0  # the most the window waits for its layout and the docker's connection test
GIVE_UP_MS = 150_000


def check(name: str, function: Callable[[], str | None]) -> None:
    try:
        RESULTS.append({"name": name, "ok": True, "message": function() or ""})
    except Exception as error:
        RESULTS.append({"name": name, "ok": False, "message": f"{error!r}\n{traceback.format_exc()}"})


def text(action_text: str) -> str:
    return action_text.replace("&", "")


def menu(bar_or_menu, *path: str) -> list[str]:
    """The entries of the menu at `path` (e.g. "Tools", "Scripts")."""
    actions = bar_or_menu.actions()
    for name in path:
        found = next((a for a in actions if text(a.text()) == name and a.menu() is not None), None)
        assert found is not None, f"no menu {name!r} among {[text(a.text()) for a in actions]}"
        actions = found.menu().actions()
    return [text(a.text()) for a in actions if a.text()]


class GuiCheck:
    def __init__(self) -> None:
        self.qwindow = None
        self.docker = None
        self.started = 0.0
        self.screen = QRect()
        self.layout: list[tuple[int, int, int, int]] = []  # the right docks' geometry at the last look
        self.finished = False

    def window_created(self) -> None:
        QTimer.singleShot(GIVE_UP_MS, self.finish)
        self.step(self.maximize)

    def step(self, function: Callable[[], None], delay_ms: int = 200) -> None:
        """Run `function` from the event loop; an exception ends the run with a report, not a hang."""

        def guarded() -> None:
            try:
                function()
            except Exception as error:
                RESULTS.append({"name": function.__name__, "ok": False, "message": f"{error!r}\n{traceback.format_exc()}"})
                self.finish()

        QTimer.singleShot(delay_ms, guarded)

    def maximize(self) -> None:
        window = Krita.instance().activeWindow()
        if window is None:  # windowCreated comes before the window is the active one
            self.step(self.maximize)
            return
        self.qwindow = window.qwindow()
        self.screen = QApplication.primaryScreen().availableGeometry()
        self.qwindow.setGeometry(self.screen)
        self.started = time.monotonic()
        self.step(self.wait_for_docker)

    def wait_for_docker(self) -> None:
        from artforge_krita.docker import ArtForgeDocker

        docker = self.qwindow.findChild(QDockWidget, "artforge_docker")
        self.docker = docker if isinstance(docker, ArtForgeDocker) else None
        # Qt lays the docks out again after the resize: wait until two looks in a row agree,
        # however long that takes on this machine, and for the docker's start-up connection test.
        layout = [d.geometry().getRect() for d in self.right_docks()]
        settled, self.layout = layout == self.layout and self.qwindow.size() == self.screen.size(), layout
        connecting = self.docker is not None and "connection" in getattr(self.docker, "side_jobs", {})
        if (not settled or connecting) and time.monotonic() - self.started < CONNECT_TIMEOUT:
            self.step(self.wait_for_docker)
            return
        self.look()

    # -- the window ---------------------------------------------------------------------------

    def look(self) -> None:
        check("docker_in_the_default_layout", self.docker_in_the_default_layout)
        if self.docker is not None:
            check("every_control_inside_the_docked_area", self.every_control_inside_the_docked_area)
            check("lists_filled_on_start", self.lists_filled_on_start)
        check("plugin_loaded_from_the_plugin_managers_folder", self.plugin_loaded_from_the_plugin_managers_folder)
        check("menus_named_as_the_readme_says", self.menus_named_as_the_readme_says)
        self.screenshot()
        if self.docker is not None:
            check("a_menu_action_runs_in_the_docker", self.a_menu_action_runs_in_the_docker)
            check("fits_a_docked_height_of_400_px", self.fits_a_docked_height_of_400_px)
            check("a_control_row_fits_the_dock_column", self.a_control_row_fits_the_dock_column)
        self.step(self.look_at_the_plugin_manager, 1000)
        Krita.instance().action("options_configure").trigger()  # a modal dialog: its event loop runs the timer

    def docker_in_the_default_layout(self) -> str:
        assert self.docker is not None, "no ArtForge docker in the window"
        assert self.docker.isVisible() and not self.docker.isFloating(), "the docker is hidden or floating"
        area = self.qwindow.dockWidgetArea(self.docker)
        assert area == Qt.RightDockWidgetArea, f"docked in area {int(area)}, not on the right"
        column = sorted((d.geometry().y(), d.windowTitle()) for d in self.right_docks())
        return f"docked at {self.geometry(self.docker)} in a {self.qwindow.width()}x{self.qwindow.height()} window; right column: {column}"

    def fits_a_docked_height_of_400_px(self) -> str:
        """What the artist gets by dragging the docker's top edge down to 400 px, title bar included."""
        self.qwindow.resizeDocks([self.docker], [DOCKED_HEIGHT], Qt.Vertical)
        QApplication.processEvents()
        height = self.docker.height()
        assert height <= DOCKED_HEIGHT, f"the docker will not get smaller than {height} px"
        return f"{height} px: {self.every_control_inside_the_docked_area()}"

    def a_control_row_fits_the_dock_column(self) -> str:
        """+ Control adds a row (layer, type, remove; strength, steps) that needs no more width than the docker has."""
        docker = self.docker
        docker.add_control_button.click()
        QApplication.processEvents()
        try:
            assert len(docker.control_rows) == 1, f"{len(docker.control_rows)} control rows"
            row, content = docker.control_rows[0], docker.widget()
            row_controls = [row.layer, row.use, row.remove_button, row.strength, row.start, row.end]
            too_wide = []
            for widget in row_controls:
                rect = QRect(widget.mapTo(content, widget.rect().topLeft()), widget.size())
                width, _ = self.smallest(widget)
                if rect.left() < 0 or rect.right() > content.rect().right() or rect.width() < width:
                    too_wide.append(f"{self.name(widget)} at {rect.getRect()} (needs {width} px) in {content.width()} px")
            assert not too_wide, "; ".join(too_wide)
            needed = row.minimumSizeHint()
            return f"a row needs {needed.width()}x{needed.height()} px in a {content.width()} px wide docker"
        finally:
            for row in list(docker.control_rows):
                docker.remove_control(row)
            QApplication.processEvents()

    def every_control_inside_the_docked_area(self) -> str:
        content = self.docker.widget()
        area = content.rect()
        controls = [w for w in content.findChildren(QWidget) if isinstance(w, CONTROLS) and not self.inside_a_control(w, content)]
        controls.append(self.docker.status)
        outside = []
        for widget in controls:
            rect = QRect(widget.mapTo(content, widget.rect().topLeft()), widget.size())
            width, height = self.smallest(widget)
            if not widget.isVisibleTo(content) or not area.contains(rect):
                outside.append(f"{self.name(widget)} at {rect.getRect()} outside {area.getRect()}")
            elif rect.width() < width or rect.height() < height:
                outside.append(f"{self.name(widget)} squeezed to {rect.width()}x{rect.height()} (needs {width}x{height})")
        docker = self.docker
        named = [docker.prompt, docker.help_button, docker.server_button, docker.model, docker.style, docker.steps]
        named += [docker.strength, docker.seed, docker.source, *docker.action_buttons.values(), docker.cancel_button]
        named += [docker.progress, docker.history, docker.apply_button, docker.seed_button]
        named += [docker.add_control_button, docker.preprocessor, docker.from_canvas_button]
        missed = [self.name(widget) for widget in named if widget not in controls]
        assert not missed, f"controls not found in the docker: {missed}"
        assert not outside, "; ".join(outside)
        needed = content.minimumSizeHint()
        return f"{len(controls)} controls inside {area.width()}x{area.height()} (the content needs {needed.width()}x{needed.height()})"

    def lists_filled_on_start(self) -> str:
        docker = self.docker
        assert docker.status.text().startswith("Connected to ArtForge"), docker.status.text()
        assert docker.model.itemText(0) == "Server default", docker.model.itemText(0)
        styles = [docker.style.itemText(i) for i in range(docker.style.count())]
        assert len(styles) >= 20, f"{len(styles)} styles listed without pressing Test Connection"
        assert len(set(styles)) == len(styles), f"styles that cannot be told apart: {styles}"
        icons = sum(not docker.style.itemIcon(i).isNull() for i in range(docker.style.count()))
        assert icons == len(styles), f"{icons} of {len(styles)} styles have a preview"
        models = [docker.model.itemText(i) for i in range(docker.model.count())]
        return f"{len(styles)} styles with previews, e.g. {styles[:3]}; models {models}"

    def plugin_loaded_from_the_plugin_managers_folder(self) -> str:
        import artforge_krita

        folder = Path(Krita.instance().getAppDataLocation()) / "pykrita" / "artforge_krita"
        loaded = Path(artforge_krita.__file__).resolve().parent
        assert loaded == folder.resolve(), f"artforge_krita came from {loaded}, not {folder}"
        assert artforge_krita.PROBLEM is None, artforge_krita.PROBLEM
        return str(loaded)

    def menus_named_as_the_readme_says(self) -> str:
        bar = self.qwindow.menuBar()
        scripts = menu(bar, "Tools", "Scripts")
        wanted = ["Import Python Plugin from File...", "ArtForge: Generate", "ArtForge: Refine", "ArtForge: Fill", "ArtForge: Stylize"]
        wanted.append("ArtForge: Control from Canvas")
        assert all(name in scripts for name in wanted), f"Tools > Scripts has {scripts}"
        settings = menu(bar, "Settings")
        assert "Configure Krita..." in settings, f"Settings has {settings}"
        assert "ArtForge" in menu(bar, "Settings", "Dockers"), f"Settings > Dockers has {menu(bar, 'Settings', 'Dockers')}"
        return f"Tools > Scripts: {[name for name in scripts if 'ArtForge' in name or 'Import' in name]}"

    def a_menu_action_runs_in_the_docker(self) -> str:
        """Tools > Scripts > ArtForge: Control from Canvas before any document is open, then
        ArtForge: Fill on a document without a selection: the docker's refusals."""
        from_canvas = Krita.instance().action("artforge_from_canvas")
        assert from_canvas is not None, "no artforge_from_canvas action"
        from_canvas.trigger()
        assert self.docker.status.text() == "Open or create a document first.", self.docker.status.text()
        action = Krita.instance().action("artforge_fill")
        assert action is not None, "no artforge_fill action"
        document = Krita.instance().createDocument(64, 64, "artforge-menu", "RGBA", "U8", "", 72.0)
        Krita.instance().activeWindow().addView(document)
        QApplication.processEvents()
        try:
            assert action.isEnabled(), "ArtForge: Fill is greyed out with a document open"
            action.trigger()
            status = self.docker.status.text()
            assert status.startswith("Fill repaints the selection"), status
        finally:
            document.setModified(False)
            document.close()
        return status

    def screenshot(self) -> None:
        """The right dock column (Layers, Brush Presets, ArtForge ...) as the artist sees it."""
        docks = self.right_docks()
        left = min(d.geometry().x() for d in docks)
        top = min(d.geometry().y() for d in docks)
        bottom = max(d.geometry().bottom() for d in docks)
        picture = self.qwindow.grab(QRect(left, top, self.qwindow.width() - left, bottom - top + 1))
        picture.save(str(OUT / "krita-docker.png"))

    # -- Settings > Configure Krita > Python Plugin Manager -------------------------------------

    def look_at_the_plugin_manager(self) -> None:
        dialog = QApplication.activeModalWidget()
        check("manual_in_the_plugin_manager", lambda: self.manual_in_the_plugin_manager(dialog))
        if dialog is not None:
            dialog.reject()
        self.step(self.finish, 500)

    def manual_in_the_plugin_manager(self, dialog: QWidget | None) -> str:
        assert dialog is not None, "Settings > Configure Krita did not open"
        views = dialog.findChildren(QAbstractItemView)
        pages = next(v for v in views if self.row_of(v, "Python Plugin Manager") is not None)
        pages.setCurrentIndex(pages.model().index(self.row_of(pages, "Python Plugin Manager"), 0))
        QApplication.processEvents()
        plugins = dialog.findChild(QAbstractItemView, "pluginsList")
        row = self.row_of(plugins, "ArtForge")
        assert row is not None, "ArtForge is not in the Python Plugin Manager"
        index = plugins.model().index(row, 0)
        assert index.data(Qt.CheckStateRole) == Qt.Checked, "ArtForge is not enabled in the Python Plugin Manager"
        QTest.mouseClick(plugins.viewport(), Qt.LeftButton, Qt.NoModifier, plugins.visualRect(index).center())
        QApplication.processEvents()
        manual = next((b.toPlainText() for b in dialog.findChildren(QTextBrowser) if b.isVisible()), "")
        assert "Help me write this" in manual and "Test Connection" in manual, f"the manual box shows {manual[:300]!r}"
        return manual[:120]

    # -- helpers --------------------------------------------------------------------------------

    def right_docks(self) -> list[QDockWidget]:
        """The dockers shown on the right; a docker behind another's tab is visible too, but off the window."""
        docks = self.qwindow.findChildren(QDockWidget)
        shown = [d for d in docks if d.isVisible() and not d.isFloating() and self.qwindow.rect().intersects(d.geometry())]
        return [d for d in shown if self.qwindow.dockWidgetArea(d) == Qt.RightDockWidgetArea]

    @staticmethod
    def row_of(view: QAbstractItemView | None, label: str) -> int | None:
        model = view.model() if view is not None else None
        if model is None:
            return None
        return next((r for r in range(model.rowCount()) if model.index(r, 0).data() == label), None)

    @staticmethod
    def inside_a_control(widget: QWidget, content: QWidget) -> bool:
        """A spin box's or combo box's own line edit is part of that control, not one of its own."""
        parent = widget.parentWidget()
        while parent is not None and parent is not content:
            if isinstance(parent, CONTROLS):
                return True
            parent = parent.parentWidget()
        return False

    @staticmethod
    def smallest(widget: QWidget) -> tuple[int, int]:
        """The size below which a layout squeezes `widget`: its minimum size where one is set, else its hint (as Qt's layouts take it)."""
        size, hint = widget.minimumSize(), widget.minimumSizeHint()
        return (size.width() or hint.width(), size.height() or hint.height())

    @staticmethod
    def name(widget: QWidget) -> str:
        label = widget.text() if isinstance(widget, QAbstractButton) else widget.toolTip()[:30]
        return f"{type(widget).__name__}({label!r})"

    @staticmethod
    def geometry(widget: QWidget) -> str:
        rect = widget.geometry()
        return f"{rect.width()}x{rect.height()}+{rect.x()}+{rect.y()}"

    def finish(self) -> None:
        if self.finished:
            return
        self.finished = True
        OUT.mkdir(parents=True, exist_ok=True)
        (OUT / "gui.json").write_text(json.dumps(RESULTS, indent=1))
        QApplication.closeAllWindows()  # no documents were opened, so nothing asks to be saved
        QApplication.quit()


class GuiCheckExtension(Extension):
    def setup(self) -> None:
        self.run = GuiCheck()
        Krita.instance().notifier().windowCreated.connect(self.run.window_created)

    def createActions(self, window) -> None:
        pass


Krita.instance().addExtension(GuiCheckExtension(Krita.instance()))
