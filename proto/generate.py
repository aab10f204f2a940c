"""Regenerate the committed Python wire code under interplay/v1/ from proto/interplay/v1/*.proto.

Usage: python proto/generate.py [--out DIR]. With --out the code is written to DIR instead
(the staleness test generates into a temporary folder and compares byte for byte).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROTO_DIR = ROOT / "proto"
SOURCES = sorted((PROTO_DIR / "interplay" / "v1").glob("*.proto"))


def generate(out: Path) -> list[Path]:
    """Run grpcio-tools' protoc into `out`; return the generated files."""
    import grpc_tools
    from grpc_tools import protoc

    include = Path(grpc_tools.__file__).parent / "_proto"
    out.mkdir(parents=True, exist_ok=True)
    args = [
        "protoc",
        f"-I{PROTO_DIR}",
        f"-I{include}",
        f"--python_out={out}",
        f"--pyi_out={out}",
        f"--grpc_python_out={out}",
        *[str(p.relative_to(PROTO_DIR)) for p in SOURCES],
    ]
    rc = protoc.main(args)
    if rc != 0:
        raise RuntimeError(f"protoc failed with exit code {rc}")
    gen_dir = out / "interplay" / "v1"
    return sorted(p for p in gen_dir.iterdir() if p.suffix in {".py", ".pyi"} and p.name != "__init__.py")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=ROOT)
    ns = parser.parse_args()
    files = generate(ns.out)
    for f in files:
        print(f.relative_to(ns.out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
