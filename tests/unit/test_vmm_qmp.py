"""The QMP client against a scripted QMP server on a unix socket."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from bulkhead.vmm.qmp import QMPClient, QMPError

GREETING = {"QMP": {"version": {"qemu": {"major": 7, "minor": 2, "micro": 0}},
                    "capabilities": ["oob"]}}


async def serve(path: Path, seen: list[dict[str, object]]) -> asyncio.Server:
    """A QMP server: greeting, an event before each reply, errors for unknown commands."""
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(json.dumps(GREETING).encode() + b"\r\n")
        while line := await reader.readline():
            req = json.loads(line)
            seen.append(req)
            cmd = req["execute"]
            writer.write(b'{"event": "RTC_CHANGE", "data": {}}\r\n')
            if cmd in ("qmp_capabilities",):
                reply: dict[str, object] = {"return": {}}
            elif cmd == "query-status":
                reply = {"return": {"status": "running", "running": True}}
            elif cmd == "hang":
                continue
            else:
                reply = {"error": {"class": "CommandNotFound",
                                   "desc": f"The command {cmd} has not been found"}}
            reply["id"] = req["id"]
            writer.write(json.dumps(reply).encode() + b"\r\n")
        writer.close()
    return await asyncio.start_unix_server(handle, str(path))


def test_execute_and_errors(tmp_path: Path) -> None:
    async def main() -> None:
        seen: list[dict[str, object]] = []
        server = await serve(tmp_path / "qmp.sock", seen)
        async with server:
            qmp = await QMPClient.connect(str(tmp_path / "qmp.sock"))
            assert qmp.greeting["QMP"]["version"]["qemu"]["major"] == 7
            assert await qmp.execute("query-status") == {"status": "running", "running": True}
            with pytest.raises(QMPError, match="bogus-cmd failed: CommandNotFound"):
                await qmp.execute("bogus-cmd", {"x": 1})
            with pytest.raises(QMPError, match="hang .*no reply within 0.2 s"):
                await qmp.execute("hang", timeout=0.2)
            assert any(e["event"] == "RTC_CHANGE" for e in qmp.events)
            await qmp.close()
            await qmp.close()
        assert [r["execute"] for r in seen][:2] == ["qmp_capabilities", "query-status"]
        assert seen[2]["arguments"] == {"x": 1}
    asyncio.run(main())


def test_connect_failure_names_the_socket(tmp_path: Path) -> None:
    with pytest.raises(QMPError, match="nothing.sock"):
        asyncio.run(QMPClient.connect(str(tmp_path / "nothing.sock"), timeout=1))


def test_not_a_qmp_server(tmp_path: Path) -> None:
    async def main() -> None:
        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            writer.write(b'{"hello": 1}\n')
            await writer.drain()
            await reader.read()
        server = await asyncio.start_unix_server(handle, str(tmp_path / "q.sock"))
        async with server:
            with pytest.raises(QMPError, match="expected a QMP greeting"):
                await QMPClient.connect(str(tmp_path / "q.sock"))
    asyncio.run(main())
