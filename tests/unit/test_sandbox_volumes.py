"""OCI bind mounts shared into the guest: real bind mounts under a scratch share (needs root)."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest
from bulkhead.sandbox.mounts import mounts_under, remove_mounted_tree
from bulkhead.sandbox.volumes import VolumeError, share
from bulkhead_wire.checks import check_id, parse_process_spec

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="bind mounts need root")


def test_dirs_and_files_are_bound_and_rewritten(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "a").write_text("a")
    single = tmp_path / "single.txt"
    single.write_text("s")
    host = tmp_path / "share" / "c1"
    mounts = [{"destination": "/proc", "type": "proc", "source": "proc"},
              {"destination": "/data", "type": "bind", "source": str(src),
               "options": ["rbind", "rw"]},
              {"destination": "/etc/x", "type": "none", "source": str(single),
               "options": ["bind", "ro"]}]
    try:
        out = share(mounts, str(host), "/run/bulkhead/shared/c1")
        assert out[0] == mounts[0]
        assert out[1]["source"] == "/run/bulkhead/shared/c1/volumes/1-src"
        assert out[1]["options"] == ["rbind", "rw"] and out[1]["type"] == "bind"
        assert (host / "volumes" / "1-src" / "a").read_text() == "a"
        ro = host / "volumes" / "2-single.txt"
        assert ro.read_text() == "s"
        with pytest.raises(OSError):
            ro.write_text("no")
        assert len(mounts_under(str(host))) == 2
    finally:
        remove_mounted_tree(str(host))
    assert not host.exists() and single.read_text() == "s"


def test_what_cannot_be_shared_is_named(tmp_path: Path) -> None:
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(tmp_path / "app.sock"))
    host = tmp_path / "share"
    try:
        for source, why in ((str(tmp_path / "app.sock"), "is a socket"),
                            (str(tmp_path / "missing"), "does not exist"),
                            ("relative/dir", "absolute host path")):
            with pytest.raises(VolumeError, match=why) as exc:
                share([{"destination": "/d", "type": "bind", "source": source}], str(host),
                      "/g")
            assert source in str(exc.value)
    finally:
        sock.close()
        remove_mounted_tree(str(host))


@pytest.mark.parametrize("value", ["", ".", "..", "a/b", "../x", "x\n", "a" * 256])
def test_bad_ids_are_refused(value: str) -> None:
    with pytest.raises(ValueError, match="invalid exec id"):
        check_id("exec", value)


@pytest.mark.parametrize("raw,why", [
    (b"{", "not valid JSON"), (b"[]", "JSON object"), (b'{"args": []}', "non-empty list"),
    (b'{"args": ["sh", 3]}', "list of strings"), (b'{"args": ["sh"], "cwd": 1}', "cwd"),
    (b'{"args": ["sh"], "env": "A=1"}', "env"), (b'{"args": ["' + b"x" * (1 << 20) + b'"]}',
                                                 "exceeds"),
])
def test_bad_process_specs_are_refused(raw: bytes, why: str) -> None:
    with pytest.raises(ValueError, match=why):
        parse_process_spec(raw, "exec e1")
