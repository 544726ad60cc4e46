"""The agent end to end on the host: `python -m bulkhead_agent --listen-unix DIR` with a fake crun
(a shell script standing in for crun; the real one is exercised in the VM integration tests),
driven over ttrpc and the data channel exactly as the shim drives it."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import bulkhead
import bulkhead_agent
import pytest
from agent_auth import prove, write_key
from bulkhead_wire.guest_abi import AGENT_SERVICE as SERVICE
from bulkhead_wire.proto import agent_pb2
from bulkhead_wire.stdio.channel import DataChannel
from bulkhead_wire.ttrpc import Client, Code, TtrpcError
from google.protobuf import empty_pb2
from google.protobuf.message import Message
from harness.procs import terminate

FAKE_CRUN = r"""#!/bin/sh
# Stand-in for crun: create leaves an init waiting for start, like crun's exec fifo.
log=/dev/null
while :; do
  case "$1" in
    --log=*) log=${1#--log=}; shift ;;
    --log-format=*|--root=*) shift ;;
    *) break ;;
  esac
done
state=${FAKE_CRUN_STATE:?}
fail() { echo "$*" >> "$log"; echo "$*" >&2; exit 1; }
cmd=$1; shift
case $cmd in
create)
  bundle=$2 pidfile=$4 id=$5
  [ -e "$state/$id" ] && fail "container \`$id\` already exists"
  [ -f "$bundle/fail" ] && fail "$(cat "$bundle/fail")"
  mkdir -p "$state/$id"
  exec 3<&0
  ( exec 0<&3 3<&-
    while [ ! -e "$state/$id/started" ]; do sleep 0.01; done
    exec /bin/sh "$bundle/run.sh" ) &
  echo $! > "$state/$id/pid"
  echo $! > "$pidfile"
  ;;
start)
  [ -d "$state/$1" ] || fail "container \`$1\` does not exist"
  touch "$state/$1/started"
  ;;
kill)
  [ "$1" = --all ] && shift
  [ -d "$state/$1" ] || fail "container \`$1\` does not exist"
  kill "-$2" "$(cat "$state/$1/pid")" 2>/dev/null || fail "container \`$1\` is not running"
  ;;
delete)
  [ "$1" = -f ] && shift
  [ -d "$state/$1" ] || fail "container \`$1\` does not exist"
  kill -9 "$(cat "$state/$1/pid")" 2>/dev/null
  rm -rf "$state/$1"
  ;;
*) fail "unknown command $cmd" ;;
esac
"""


@dataclass
class AgentProcess:
    """A development agent and the directories it works in."""

    proc: subprocess.Popen[bytes]
    dir: Path
    bundles: Path
    crun_state: Path
    key: bytes  # the channel secret it holds (agent_dir/channel.key)

    def bundle(self, name: str, script: str, fail: str | None = None) -> str:
        """A bundle whose container runs `script` with /bin/sh."""
        path = self.bundles / name
        path.mkdir(parents=True, exist_ok=True)
        (path / "config.json").write_text("{}")
        (path / "run.sh").write_text(script)
        if fail is not None:
            (path / "fail").write_text(fail)
        return str(path)

    def log(self) -> str:
        try:
            return (self.dir / "agent.log").read_text()
        except OSError:
            return ""


def start_agent(root: Path) -> AgentProcess:
    """Run the agent in development mode with the fake crun; waits for its sockets."""
    root.mkdir(parents=True, exist_ok=True)
    crun = root / "crun"
    crun.write_text(FAKE_CRUN)
    crun.chmod(0o755)
    state = root / "crun-state"
    state.mkdir()
    agent_dir = root / "agent"
    agent_dir.mkdir()
    key = write_key(agent_dir)
    paths = [os.path.dirname(os.path.dirname(m.__file__ or "")) for m in (bulkhead, bulkhead_agent)]
    env = dict(os.environ, FAKE_CRUN_STATE=str(state),
               PYTHONPATH=os.pathsep.join([*paths, os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.Popen([sys.executable, "-m", "bulkhead_agent", "--listen-unix",
                             str(agent_dir), "--crun", str(crun), "--debug"], env=env)
    deadline = time.monotonic() + 20
    while not ((agent_dir / "ctl.sock").exists() and (agent_dir / "data.sock").exists()):
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError(f"agent did not start (status {proc.poll()})")
        time.sleep(0.02)
    return AgentProcess(proc, agent_dir, root / "bundles", state, key)


def stop_agent(agent: AgentProcess) -> None:
    terminate(agent.proc)


@pytest.fixture(scope="module")
def agent(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AgentProcess]:
    ag = start_agent(tmp_path_factory.mktemp("agent"))
    try:
        yield ag
    finally:
        stop_agent(ag)
    assert ag.proc.returncode == 0, ag.log()


@dataclass
class Shim:
    """What the shim holds: a ttrpc client on ctl and a DataChannel on data."""

    client: Client
    data: DataChannel

    async def call(self, method: str, req: Message, resp: type[Message]) -> Message:
        return await self.client.call(SERVICE, method, req, resp, timeout=20)

    async def create(self, cid: str, bundle: str, stdin: int = 0, stdout: int = 0,
                     stderr: int = 0, terminal: bool = False) -> int:
        for stream in (stdout, stderr):  # the shim opens its inbound streams first
            if stream:
                self.data.inbound(stream)
        req = agent_pb2.CreateContainerRequest(
            container_id=cid, bundle=bundle, terminal=terminal,
            stdio=agent_pb2.StdioStreams(stdin=stdin, stdout=stdout, stderr=stderr))
        resp = await self.call("CreateContainer", req, agent_pb2.CreateContainerResponse)
        assert isinstance(resp, agent_pb2.CreateContainerResponse)
        return resp.pid

    async def start(self, cid: str, exec_id: str = "") -> int:
        resp = await self.call("StartProcess", agent_pb2.StartProcessRequest(
            container_id=cid, exec_id=exec_id), agent_pb2.StartProcessResponse)
        assert isinstance(resp, agent_pb2.StartProcessResponse)
        return resp.pid

    async def wait(self, cid: str) -> agent_pb2.WaitProcessResponse:
        resp = await self.call("WaitProcess", agent_pb2.WaitProcessRequest(container_id=cid),
                               agent_pb2.WaitProcessResponse)
        assert isinstance(resp, agent_pb2.WaitProcessResponse)
        return resp

    async def signal(self, cid: str, sig: int, all_: bool = False) -> None:
        await self.call("SignalProcess", agent_pb2.SignalProcessRequest(
            container_id=cid, signal=sig, all=all_), empty_pb2.Empty)

    async def pids(self, cid: str) -> list[int]:
        resp = await self.call("ListPids", agent_pb2.ListPidsRequest(container_id=cid),
                               agent_pb2.ListPidsResponse)
        assert isinstance(resp, agent_pb2.ListPidsResponse)
        return [p.pid for p in resp.processes]

    async def remove(self, cid: str) -> None:
        await self.call("RemoveContainer", agent_pb2.RemoveContainerRequest(container_id=cid),
                        empty_pb2.Empty)

    async def drain(self, stream: int) -> bytes:
        """Everything on a stream until its EOF, granting credit like a fast host sink."""
        out = bytearray()
        while chunk := await self.data.read(stream):
            out += chunk
            await self.data.grant(stream, len(chunk))
        return bytes(out)


async def open_link(path: Path, key: bytes, role: str
                    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await asyncio.open_unix_connection(str(path))
    await prove(reader, writer, key, role)
    return reader, writer


@asynccontextmanager
async def shim(agent: AgentProcess) -> AsyncIterator[Shim]:
    ctl, data = await asyncio.gather(open_link(agent.dir / "ctl.sock", agent.key, "ctl"),
                                     open_link(agent.dir / "data.sock", agent.key, "data"))
    client = Client(*ctl, name="agent ctl")
    client.start()
    channel = DataChannel(*data)
    channel.start()
    try:
        yield Shim(client, channel)
    finally:
        await client.close()
        await channel.close()


def code_of(exc: pytest.ExceptionInfo[TtrpcError]) -> Code:
    return exc.value.code


# -- tests ---------------------------------------------------------------------------------


def test_check_reports_version_and_uptimes(agent: AgentProcess) -> None:
    async def run() -> agent_pb2.CheckResponse:
        async with shim(agent) as s:
            resp = await s.call("Check", agent_pb2.CheckRequest(), agent_pb2.CheckResponse)
            assert isinstance(resp, agent_pb2.CheckResponse)
            return resp

    resp = asyncio.run(run())
    assert resp.agent_version == bulkhead_agent.__version__
    assert resp.kernel_release == os.uname().release
    assert 0 < resp.agent_start_uptime <= resp.now_uptime
    assert resp.init_start_uptime == resp.switch_root_uptime == 0  # no init on the host


def test_exit_is_reported_only_after_all_output_was_sent(agent: AgentProcess) -> None:
    size = (1 << 20) + 20 * 1024  # more than one credit window: the last part waits for us
    bundle = agent.bundle("big", f"head -c {size} /dev/zero | tr '\\0' x\n"
                                 "echo done >&2\nexit 7\n")

    async def run() -> None:
        async with shim(agent) as s:
            pid = await s.create("big", bundle, stdout=2, stderr=4)
            assert pid > 0
            assert await s.start("big") == pid
            waiting = asyncio.ensure_future(s.wait("big"))
            deadline = time.monotonic() + 10
            while True:  # until the process is reaped: signals then say it finished
                try:
                    await s.signal("big", 0)
                except TtrpcError as exc:
                    assert exc.code == Code.NOT_FOUND and exc.message == \
                        "process already finished"
                    break
                assert time.monotonic() < deadline, "process never exited"
                await asyncio.sleep(0.05)
            await asyncio.sleep(0.3)
            assert not waiting.done(), "Wait returned while output was still undelivered"
            out, err = await asyncio.gather(s.drain(2), s.drain(4))
            resp = await asyncio.wait_for(waiting, 10)
            assert (len(out), set(out), err) == (size, {ord("x")}, b"done\n")
            assert resp.exit_status == 7
            assert abs(resp.exited_at.ToNanoseconds() - time.time_ns()) < 30e9
            again = await s.wait("big")  # repeated waits agree
            assert again == resp
            await s.remove("big")

    asyncio.run(run())


def test_stdin_is_delivered_then_closed(agent: AgentProcess) -> None:
    bundle = agent.bundle("cat", "exec cat\n")

    async def run() -> None:
        async with shim(agent) as s:
            await s.create("cat", bundle, stdin=1, stdout=3)
            await s.start("cat")
            await s.data.send(1, b"hello\n" * 1000)
            await s.data.send_eof(1)
            assert await s.drain(3) == b"hello\n" * 1000
            assert (await s.wait("cat")).exit_status == 0
            await s.remove("cat")

    asyncio.run(run())


def test_kill_gives_137_and_concurrent_waits_agree(agent: AgentProcess) -> None:
    bundle = agent.bundle("sleeper", "exec sleep 30\n")

    async def run() -> None:
        async with shim(agent) as s:
            pid = await s.create("sleeper", bundle)
            await s.start("sleeper")
            assert await s.pids("sleeper") == [pid]
            waits = [asyncio.ensure_future(s.wait("sleeper")) for _ in range(3)]
            await asyncio.sleep(0.1)
            await s.signal("sleeper", 9)
            results = await asyncio.wait_for(asyncio.gather(*waits), 10)
            assert [r.exit_status for r in results] == [137] * 3
            assert results[0] == results[1] == results[2]
            with pytest.raises(TtrpcError) as exc:
                await s.signal("sleeper", 15)
            assert (exc.value.code, exc.value.message) == (Code.NOT_FOUND,
                                                           "process already finished")
            with pytest.raises(TtrpcError) as exc:
                await s.signal("sleeper", 9, all_=True)
            assert exc.value.code == Code.NOT_FOUND
            assert await s.pids("sleeper") == []
            await s.remove("sleeper")

    asyncio.run(run())


def test_signal_all_goes_through_crun_kill(agent: AgentProcess) -> None:
    bundle = agent.bundle("killall", "exec sleep 30\n")

    async def run() -> None:
        async with shim(agent) as s:
            await s.create("killall", bundle)
            await s.start("killall")
            await s.signal("killall", 15, all_=True)
            assert (await asyncio.wait_for(s.wait("killall"), 10)).exit_status == 143
            await s.remove("killall")

    asyncio.run(run())


def test_remove_kills_a_running_container_and_releases_its_waiters(agent: AgentProcess) -> None:
    bundle = agent.bundle("victim", "echo started\nexec sleep 30\n")

    async def run() -> None:
        async with shim(agent) as s:
            await s.create("victim", bundle, stdout=6)
            await s.start("victim")
            out = asyncio.ensure_future(s.drain(6))
            waiting = asyncio.ensure_future(s.wait("victim"))
            await asyncio.sleep(0.2)
            await s.remove("victim")
            assert (await asyncio.wait_for(waiting, 10)).exit_status == 137
            assert await asyncio.wait_for(out, 10) == b"started\n"
            with pytest.raises(TtrpcError) as exc:
                await s.wait("victim")
            assert exc.value.code == Code.NOT_FOUND

    asyncio.run(run())
    assert os.listdir(agent.crun_state) == []
    assert not (agent.dir / "containers" / "victim").exists()


def test_created_container_can_be_removed_without_starting(agent: AgentProcess) -> None:
    bundle = agent.bundle("never", "echo never ran\n")

    async def run() -> None:
        async with shim(agent) as s:
            await s.create("never", bundle, stdout=8)
            await s.remove("never")
            assert await s.drain(8) == b""

    asyncio.run(run())


def test_error_codes_and_messages(agent: AgentProcess) -> None:
    good = agent.bundle("good", "exit 0\n")
    bad = agent.bundle("bad", "exit 0\n",
                       fail='exec: "foo": executable file not found in $PATH')
    empty = agent.bundles / "empty"
    empty.mkdir()

    async def expect(call: asyncio.Future[object] | object, code: Code, text: str) -> None:
        with pytest.raises(TtrpcError) as exc:
            await call  # type: ignore[misc]
        assert exc.value.code == code, exc.value
        assert text in exc.value.message, exc.value

    async def run() -> None:
        async with shim(agent) as s:
            for call in (s.wait("ghost"), s.signal("ghost", 9), s.remove("ghost"),
                         s.start("ghost"), s.pids("ghost")):
                await expect(call, Code.NOT_FOUND, "container ghost not found")
            await expect(s.create("bad", bad, stdout=2), Code.UNKNOWN,
                         'crun create failed: exec: "foo": executable file not found in $PATH')
            await expect(s.create("e", str(empty)), Code.FAILED_PRECONDITION,
                         "config.json not found")
            await expect(s.create("", good), Code.INVALID_ARGUMENT, "invalid container id")
            await s.create("good", good)
            await expect(s.create("good", good), Code.ALREADY_EXISTS, "already exists")
            await expect(s.start("good", exec_id="exec1"), Code.NOT_FOUND,
                         "process exec1 of container good not found")
            await expect(s.call("WaitProcess", agent_pb2.WaitProcessRequest(
                container_id="good", exec_id="exec1"), agent_pb2.WaitProcessResponse),
                Code.NOT_FOUND, "process exec1 of container good not found")
            await expect(s.signal("good", 999), Code.INVALID_ARGUMENT, "invalid signal")
            await s.start("good")
            await expect(s.start("good"), Code.FAILED_PRECONDITION, "not created")
            assert (await s.wait("good")).exit_status == 0
            await s.remove("good")
            # a failed create leaves nothing behind: the id can be used again
            os.unlink(os.path.join(bad, "fail"))
            await s.create("bad", bad)
            await s.remove("bad")

    asyncio.run(run())
    assert os.listdir(agent.crun_state) == []
    assert os.listdir(agent.dir / "containers") == []
    assert os.listdir(agent.dir / "crun") == []


def test_exit_does_not_wait_for_a_child_that_keeps_stdout(agent: AgentProcess) -> None:
    """The exit carries the stream length up to it; a surviving child holds the pipe open."""
    bundle = agent.bundle("bg", "sleep 3 &\nprintf done\n")

    async def run() -> None:
        async with shim(agent) as s:
            await s.create("bg", bundle, stdout=10)
            out = asyncio.ensure_future(s.drain(10))
            await s.start("bg")
            t0 = time.monotonic()
            resp = await asyncio.wait_for(s.wait("bg"), 10)
            assert time.monotonic() - t0 < 2.5 and not out.done()
            assert (resp.exit_status, resp.stdout_bytes) == (0, 4)
            assert await asyncio.wait_for(out, 10) == b"done"  # the child's EOF comes later
            await s.remove("bg")

    asyncio.run(run())


def test_a_host_peer_without_the_secret_is_dropped(agent: AgentProcess) -> None:
    """Whoever connects first does not become the agent's shim: without the VM's secret the
    agent drops it, logs it, and the real shim connects after."""
    async def run() -> agent_pb2.CheckResponse:
        reader, writer = await asyncio.open_unix_connection(str(agent.dir / "ctl.sock"))
        with pytest.raises((asyncio.IncompleteReadError, ConnectionError)):
            await prove(reader, writer, b"w" * len(agent.key), "ctl")
        writer.close()
        async with shim(agent) as s:
            return await s.call("Check", agent_pb2.CheckRequest(), agent_pb2.CheckResponse)

    assert asyncio.run(run()).agent_version
    assert "dropped a host peer" in agent.log()
