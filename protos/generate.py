"""Generate the Python gRPC code for the v1 API into the client package.

    python protos/generate.py            # write plugins/client/artforge_client/v1/
    python protos/generate.py --out DIR  # write elsewhere (the staleness test compares)

protoc names imports after the proto path (`from artforge.v1 import jobs_pb2`), which would
resolve to the server package `artforge`; they are rewritten to relative imports so the
generated code lives inside `artforge_client` and works wherever the client is vendored
(Blender and Krita plugins).
"""

from __future__ import annotations

import argparse
import re
import sys
import tempfile
from pathlib import Path

PROTO_ROOT = Path(__file__).resolve().parent
REPO = PROTO_ROOT.parent
DEFAULT_OUT = REPO / "plugins" / "client" / "artforge_client" / "v1"
PACKAGE_IMPORT = re.compile(r"^from artforge\.v1 import (\w+) as", re.MULTILINE)


def generate(out: Path) -> list[Path]:
    from grpc_tools import protoc  # a dev dependency: only needed to regenerate

    protos = sorted((PROTO_ROOT / "artforge" / "v1").glob("*.proto"))
    include = Path(protoc.__file__).parent / "_proto"
    with tempfile.TemporaryDirectory() as tmp:
        args = [
            "protoc",
            f"-I{PROTO_ROOT}",
            f"-I{include}",
            f"--python_out={tmp}",
            f"--pyi_out={tmp}",
            f"--grpc_python_out={tmp}",
            *map(str, protos),
        ]
        if protoc.main(args) != 0:
            raise SystemExit("protoc failed")
        out.mkdir(parents=True, exist_ok=True)
        written = []
        for generated in sorted((Path(tmp) / "artforge" / "v1").iterdir()):
            text = PACKAGE_IMPORT.sub(r"from . import \1 as", generated.read_text())
            if generated.name.endswith("_pb2_grpc.py") and "Stub" not in text:
                continue  # protos without a service get an empty grpc module; skip it
            target = out / generated.name
            target.write_text(text)
            written.append(target)
        (out / "__init__.py").write_text('"""Generated from protos/artforge/v1 by protos/generate.py. Do not edit."""\n')
        written.append(out / "__init__.py")
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args(argv)
    for path in generate(args.out):
        print(path.relative_to(args.out.parent) if path.is_relative_to(args.out.parent) else path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
