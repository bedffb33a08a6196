"""The generated Python code matches the .proto files, and the contract keeps its shape."""

from __future__ import annotations

import filecmp
import importlib.util
from pathlib import Path

from artforge_client.v1 import service_pb2

REPO = Path(__file__).resolve().parent.parent
CHECKED_IN = REPO / "plugins" / "client" / "artforge_client" / "v1"


def _generator():
    spec = importlib.util.spec_from_file_location("generate", REPO / "protos" / "generate.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_generated_code_is_current(tmp_path):
    fresh = tmp_path / "v1"
    _generator().generate(fresh)
    names = sorted(p.name for p in fresh.iterdir())
    assert names == sorted(p.name for p in CHECKED_IN.iterdir() if p.is_file() and p.suffix in {".py", ".pyi"})
    _, mismatch, errors = filecmp.cmpfiles(fresh, CHECKED_IN, names, shallow=False)
    assert not mismatch and not errors, f"stale generated code {mismatch or errors}: run `python protos/generate.py`"


def test_generated_code_imports_only_itself_and_protobuf():
    """The client is vendored into Blender and Krita: no import of the server package."""
    for path in CHECKED_IN.glob("*.py"):
        text = path.read_text()
        assert "from artforge." not in text and "import artforge\n" not in text, path.name


def test_service_is_versioned_and_complete():
    service = service_pb2.DESCRIPTOR.services_by_name["ArtForge"]
    assert service.full_name == "artforge.v1.ArtForge"
    assert {m.name for m in service.methods} == {
        "GetServerInfo",
        "ListModels",
        "GenerateText",
        "GenerateImage",
        "Stylize",
        "Preprocess",
        "WatchJob",
        "CancelJob",
        "GetJob",
        "ListJobs",
        "GetServerStats",
    }
    streaming = {m.name for m in service.methods if m.server_streaming}
    assert streaming == {"GenerateText", "GenerateImage", "Stylize", "Preprocess", "WatchJob"}
