"""The shim's side of the agent link against a hostile agent (issue 15, part 4).

The agent is untrusted: these tests run the shim's real client code (AgentClient, the OOM long
poll, the snapshot figures, the event queue) against a ttrpc server that floods, stalls and
lies, and check that every reply is bounded, the shim's memory stays under a stated bound, and
a second, honest agent served by the same loop keeps answering.
"""

from __future__ import annotations

import asyncio
import math
import socket
import time
import tracemalloc
from dataclasses import dataclass, field
from typing import Any

import pytest
from bulkhead.agent import client as agent_client
from bulkhead.agent.client import AgentClient
from bulkhead.monitor.guest_reading import CPU_MODES, guest_figures
from bulkhead.shim import events as events_mod
from bulkhead.shim import exits
from bulkhead.shim.events import EventPublisher
from bulkhead.shim.exits import ExitReporter
from bulkhead.shim.task import Container, Process
from bulkhead_wire.guest_abi import AGENT_SERVICE
from bulkhead_wire.proto import agent_pb2, events_pb2, ttrpc_pb2
from bulkhead_wire.ttrpc import Client, Code, Server, TtrpcError, frame
from bulkhead_wire.ttrpc.errors import PEER_MESSAGE_CHARS
from google.protobuf import empty_pb2

MEMORY_BOUND = 32 << 20  # bytes the shim's Python heap may grow by under any flood below


class HostileAgent:
    """An agent that answers the way a compromised guest would."""

    def __init__(self) -> None:
        self.oom_kills = 0
        self.oom_replies = 0

    def server(self) -> Server:
        server = Server()

        async def check(_: agent_pb2.CheckRequest) -> agent_pb2.CheckResponse:
            raise TtrpcError(Code.INTERNAL, "\x1b[31mforged\nlevel=error msg=x " + "A" * (1 << 20))

        async def guest_stats(_: empty_pb2.Empty) -> agent_pb2.GuestStatsResponse:
            cpu = {f"mode{i}": float(i) for i in range(20000)}
            cpu.update(user=math.nan, system=-5.0, idle=math.inf, iowait=3.5)
            return agent_pb2.GuestStatsResponse(cpu_seconds=cpu, uptime_seconds=math.nan,
                                                memory_total_bytes=1 << 63, vcpus=1 << 31)

        async def wait_oom(_: empty_pb2.Empty) -> agent_pb2.OOMEvent:
            self.oom_kills += 1
            self.oom_replies += 1
            return agent_pb2.OOMEvent(container_id="c1", oom_kills=self.oom_kills)

        async def signal_process(_: agent_pb2.SignalProcessRequest) -> empty_pb2.Empty:
            await asyncio.Event().wait()  # never answers
            return empty_pb2.Empty()

        server.register(AGENT_SERVICE, {
            "Check": (agent_pb2.CheckRequest, check),
            "GuestStats": (empty_pb2.Empty, guest_stats),
            "WaitOOM": (empty_pb2.Empty, wait_oom),
            "SignalProcess": (agent_pb2.SignalProcessRequest, signal_process),
        })
        return server


def honest_server() -> Server:
    """The other sandbox's agent: answers Check at once."""
    server = Server()

    async def check(_: agent_pb2.CheckRequest) -> agent_pb2.CheckResponse:
        return agent_pb2.CheckResponse(agent_version="honest")

    server.register(AGENT_SERVICE, {"Check": (agent_pb2.CheckRequest, check)})
    return server


async def connect(server: Server) -> tuple[AgentClient, asyncio.Task[None]]:
    a, b = socket.socketpair()
    sr, sw = await asyncio.open_unix_connection(sock=a)
    task = asyncio.create_task(server.serve_connection(sr, sw))
    cr, cw = await asyncio.open_unix_connection(sock=b)
    client = Client(cr, cw)
    client.start()
    return AgentClient(client), task


@dataclass
class FakeSandbox:
    """What ExitReporter reads of a Sandbox."""

    agent: AgentClient | None
    id: str = "hostile"
    dead: str = ""


@dataclass
class Events:
    """What ExitReporter publishes to (EventPublisher's publish)."""

    published: list[tuple[str, Any]] = field(default_factory=list)

    def publish(self, topic: str, event: Any) -> None:
        self.published.append((topic, event))


def container(cid: str) -> Container:
    init = Process(cid, "", "", "", "", False, None)  # type: ignore[arg-type]  # io unused
    return Container(cid, "/bundle", init)


def test_error_text_is_bounded_and_cannot_forge_log_lines() -> None:
    async def run() -> None:
        agent, _ = await connect(HostileAgent().server())
        with pytest.raises(TtrpcError) as err:
            await agent.check(timeout=5)
        text = err.value.message
        assert len(text) < PEER_MESSAGE_CHARS + 64, len(text)
        assert "\n" not in text and "\x1b" not in text and "more characters" in text
    asyncio.run(run())


def test_bogus_guest_stats_become_bounded_figures() -> None:
    async def run() -> None:
        agent, _ = await connect(HostileAgent().server())
        figures = guest_figures(await agent.guest_stats(timeout=10))
        assert set(figures.cpu_seconds) <= CPU_MODES
        assert figures.cpu_seconds == {"user": 0.0, "system": 0.0, "idle": 0.0, "iowait": 3.5}
        assert figures.uptime_seconds == 0.0
    asyncio.run(run())


def test_an_oversized_reply_fails_its_call_only() -> None:
    async def run() -> None:
        a, b = socket.socketpair()
        cr, cw = await asyncio.open_unix_connection(sock=b)
        client = Client(cr, cw)
        client.start()
        sr, sw = await asyncio.open_unix_connection(sock=a)
        first = asyncio.create_task(client.call(AGENT_SERVICE, "Check", agent_pb2.CheckRequest(),
                                                agent_pb2.CheckResponse, 10))
        second = asyncio.create_task(client.call(AGENT_SERVICE, "Check", agent_pb2.CheckRequest(),
                                                 agent_pb2.CheckResponse, 10))
        for _ in range(2):
            await frame.read_frame(sr)
        huge = frame.MAX_MESSAGE + 1
        sw.write(frame.HEADER.pack(huge, 1, frame.TYPE_RESPONSE, 0) + b"\0" * huge)
        ok = ttrpc_pb2.Response(payload=agent_pb2.CheckResponse(
            agent_version="fine").SerializeToString()).SerializeToString()
        sw.write(frame.encode(3, frame.TYPE_RESPONSE, ok))
        await sw.drain()
        with pytest.raises(TtrpcError) as err:
            await first
        assert err.value.code == Code.RESOURCE_EXHAUSTED
        assert (await second).agent_version == "fine"
    asyncio.run(run())


def test_a_kill_the_agent_never_answers_has_a_deadline(monkeypatch: pytest.MonkeyPatch
                                                       ) -> None:
    monkeypatch.setattr(agent_client, "SIGNAL_DEADLINE", 0.3)

    async def run() -> None:
        agent, _ = await connect(HostileAgent().server())
        with pytest.raises(TtrpcError) as err:
            await agent.signal_process("c1", "", 9)
        assert err.value.code == Code.DEADLINE_EXCEEDED
    asyncio.run(run())


def test_an_oom_flood_is_throttled_and_another_sandbox_keeps_working() -> None:
    async def run() -> tuple[int, int, float, int]:
        hostile = HostileAgent()
        agent, _ = await connect(hostile.server())
        honest, _ = await connect(honest_server())
        events = Events()
        reporter = ExitReporter(FakeSandbox(agent), events, {"c1": container("c1")})  # type: ignore[arg-type]
        tracemalloc.start()
        loop_task = asyncio.create_task(reporter._oom_loop())  # noqa: SLF001 (our own code)
        slowest = 0.0
        deadline = time.monotonic() + 2.0
        while time.monotonic() < deadline:
            t0 = time.monotonic()
            assert (await honest.check(timeout=5)).agent_version == "honest"
            slowest = max(slowest, time.monotonic() - t0)
            await asyncio.sleep(0.05)
        loop_task.cancel()
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        return hostile.oom_replies, len(events.published), slowest, peak

    replies, published, slowest, peak = asyncio.run(run())
    assert replies <= 2.0 / exits.OOM_POLL_INTERVAL + 2, replies
    assert published <= 3, published  # one per OOM_EVENT_INTERVAL for the one container
    assert slowest < 1.0, slowest
    assert peak < MEMORY_BOUND, peak


def test_the_event_queue_is_bounded_while_containerd_is_away(tmp_path: Any) -> None:
    async def run() -> tuple[int, int, int]:
        publisher = EventPublisher(str(tmp_path / "absent.sock"), "ns")
        tracemalloc.start()
        for _ in range(events_mod.MAX_QUEUED * 3):
            publisher.publish("/tasks/oom", events_pb2.TaskOOM(container_id="c" * 64))
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        queued = publisher._queue.qsize()  # noqa: SLF001 (our own code)
        await publisher.close()
        return queued, publisher.dropped, peak

    queued, dropped, peak = asyncio.run(run())
    assert queued == events_mod.MAX_QUEUED
    assert dropped == events_mod.MAX_QUEUED * 2
    assert peak < MEMORY_BOUND, peak
