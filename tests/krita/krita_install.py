"""Install the plugin zip the way Krita's Tools > Scripts > Import Python Plugin from File... does.

`kritarunner -s krita_install -f run` (tests/test_krita_plugin.py) runs Krita's own importer,
the `plugin_importer` that ships with Krita, on ARTFORGE_ZIP into ARTFORGE_RESOURCES (the
resources folder of the Krita GUI that the test starts later: kritarunner's own is another one),
then answers "Enable plugins now?" with yes through the importer's own `activate_plugins`.
ARTFORGE_OUT/install.json reports what was imported, or the importer's error.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from krita import Krita


def run(*_args: object) -> None:
    out = Path(os.environ["ARTFORGE_OUT"])
    out.mkdir(parents=True, exist_ok=True)
    from plugin_importer.plugin_importer import PluginImporter, PluginImportError
    from plugin_importer.plugin_importer_extension import PluginImporterExtension

    try:
        imported = PluginImporter(os.environ["ARTFORGE_ZIP"], os.environ["ARTFORGE_RESOURCES"], lambda _plugin: True).import_all()
    except (PluginImportError, OSError) as error:  # kritarunner would swallow it without a word
        (out / "install.json").write_text(json.dumps({"error": f"{type(error).__name__}: {error}"}))
        return
    PluginImporterExtension(Krita.instance()).activate_plugins(imported)
    enabled = {plugin["name"]: Krita.instance().readSetting("python", f"enable_{plugin['name']}", "") for plugin in imported}
    (out / "install.json").write_text(json.dumps({"imported": imported, "enabled": enabled}))
