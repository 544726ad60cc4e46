#!/usr/bin/env python3
"""Regenerate wire/bulkhead_wire/proto/*_pb2.py from proto/*.proto with grpcio-tools' protoc.

Generated modules are committed so that neither the shim nor the guest needs protoc.
Imports between our own files are rewritten to package-absolute ones (bulkhead_wire.proto.x_pb2).
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
OUT = HERE.parent / "wire" / "bulkhead_wire" / "proto"


def main() -> int:
    """Run protoc over every .proto here and fix the relative imports it emits."""
    import grpc_tools
    from grpc_tools import protoc

    import google.rpc

    include = Path(grpc_tools.__file__).parent / "_proto"
    googleapis = Path(google.rpc.__path__[0]).parent.parent  # ships google/rpc/status.proto
    protos = sorted(p.name for p in HERE.glob("*.proto"))
    rc = protoc.main(["protoc", f"-I{HERE}", f"-I{include}", f"-I{googleapis}",
                      f"--python_out={OUT}",
                      f"--pyi_out={OUT}", *protos])
    if rc != 0:
        return int(rc)
    ours = {p[:-len(".proto")] for p in protos}
    for gen in list(OUT.glob("*_pb2.py")) + list(OUT.glob("*_pb2.pyi")):
        text = gen.read_text()
        for name in ours:
            text = re.sub(rf"^import {name}_pb2\b", f"from bulkhead_wire.proto import {name}_pb2",
                          text, flags=re.M)
        gen.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
