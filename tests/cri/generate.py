#!/usr/bin/env python3
"""Regenerate tests/cri/runtime_v1_pb2.py{,i} from runtime_v1.proto with grpcio-tools' protoc.

The CRI subset is test-only, so its generated code lives here rather than in the shim's
bulkhead_wire.proto package; like the shim's, it is committed so the tests need no protoc.
Run: /opt/bulkhead/venv/bin/python tests/cri/generate.py
"""

from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main() -> int:
    """Run protoc over runtime_v1.proto, writing next to it (the client calls methods by path,
    so no grpc stubs are generated)."""
    import grpc_tools
    from grpc_tools import protoc

    include = Path(grpc_tools.__file__).parent / "_proto"
    return int(protoc.main(["protoc", f"-I{HERE}", f"-I{include}", f"--python_out={HERE}",
                            f"--pyi_out={HERE}", "runtime_v1.proto"]))


if __name__ == "__main__":
    sys.exit(main())
