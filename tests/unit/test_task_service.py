"""TaskService and ExitReporter over fakes (tests/task_fakes.py): the real Sandbox, share and
ttrpc, a scripted agent instead of a VM. Event order, exit reporting, cleanup and the exact
error codes, in milliseconds each; tests/integration prove the same against containerd."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
from bulkhead.shim.task_service import SERVICES
from bulkhead.vmm.base import VMError
from bulkhead_wire.proto import task_pb2, task_types_pb2
from bulkhead_wire.ttrpc import Client, Code, Server, TtrpcError
from google.protobuf import empty_pb2
from task_codes import expected_codes
from task_fakes import KILLED, VM_PID, Shim

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the share is a tmpfs: needs root")


def run(tmp_path: Path, case: Callable[[Shim], Awaitable[None]]) -> None:
    """One case on a fresh shim core; its sandbox is destroyed after, whatever happened."""
    async def main() -> None:
        shim = Shim.make(tmp_path)
        try:
            await asyncio.wait_for(case(shim), 20)
        finally:
            await shim.close()
    asyncio.run(main())


async def code_of(call: Awaitable[object]) -> Code:
    try:
        await call
    except TtrpcError as exc:
        return Code(exc.code)
    return Code.OK


def test_start_is_published_before_an_instant_exit(tmp_path: Path) -> None:
    async def case(shim: Shim) -> None:
        await shim.create("c1")
        start = shim.service.start(task_pb2.StartRequest(id="c1"))
        shim.agent.exit("c1", status=3)  # the guest reports the exit before Start returns
        assert (await start).pid == VM_PID
        assert (await shim.wait("c1")).exit_status == 3
        assert shim.events.topics() == ["/tasks/create", "/tasks/start", "/tasks/exit"]
    run(tmp_path, case)


def test_kill_after_an_exit_is_not_found(tmp_path: Path) -> None:
    async def case(shim: Shim) -> None:
        await shim.run("c1")
        shim.agent.exit("c1", status=0)
        assert (await shim.wait("c1")).exit_status == 0
        kill = shim.service.kill(task_pb2.KillRequest(id="c1", signal=signal.SIGTERM))
        assert await code_of(kill) == Code.NOT_FOUND
        state = await shim.service.state(task_pb2.StateRequest(id="c1"))
        assert (state.status, state.exit_status, state.pid) == (task_types_pb2.STOPPED, 0,
                                                                VM_PID)
    run(tmp_path, case)


def test_exec_exits_before_the_init(tmp_path: Path) -> None:
    async def case(shim: Shim) -> None:
        await shim.run("c1")
        await shim.exec("c1", "e1")
        await shim.service.kill(task_pb2.KillRequest(id="c1", signal=signal.SIGKILL))
        assert (await shim.wait("c1")).exit_status == KILLED
        assert shim.events.exits() == [("e1", KILLED), ("c1", KILLED)]
        assert shim.events.topics().index("/tasks/exec-started") < \
            shim.events.topics().index("/tasks/exit")
    run(tmp_path, case)


def test_a_vm_death_reports_137_to_every_waiter(tmp_path: Path) -> None:
    async def case(shim: Shim) -> None:
        await shim.run("c1")
        await shim.exec("c1", "e1")
        waiters = [asyncio.ensure_future(shim.wait("c1", e)) for e in ("", "e1", "")]
        shim.launcher.vms[0].die()
        assert [(await w).exit_status for w in waiters] == [KILLED] * 3
        assert sorted(shim.events.exits()) == [("c1", KILLED), ("e1", KILLED)]
        assert "exited with" in shim.sandbox.dead and shim.sandbox.agent is None
        kill = shim.service.kill(task_pb2.KillRequest(id="c1", signal=signal.SIGKILL))
        assert await code_of(kill) == Code.NOT_FOUND
        create = shim.create("c2")
        assert await code_of(create) == Code.UNAVAILABLE  # no second VM after a death
        assert len(shim.launcher.vms) == 1 and "c2" not in shim.service.tasks
    run(tmp_path, case)


def test_deleting_the_last_container_stops_the_vm(tmp_path: Path) -> None:
    async def case(shim: Shim) -> None:
        await shim.run("c1")
        await shim.run("c2")
        vm = shim.launcher.vms[0]
        for cid in ("c2", "c1"):
            shim.agent.exit(cid, status=0)
            await shim.wait(cid)
        await shim.service.delete(task_pb2.DeleteRequest(id="c2"))
        assert not vm.stopped and ("RemoveContainer", "c2") in shim.agent.calls
        await shim.service.shutdown(task_pb2.ShutdownRequest())
        assert shim.shutdowns == []  # a task remains: the shim stays
        reply = await shim.service.delete(task_pb2.DeleteRequest(id="c1"))
        assert (reply.pid, reply.exit_status) == (VM_PID, 0)
        assert vm.stopped and shim.sandbox.agent is None
        assert ("RemoveContainer", "c1") not in shim.agent.calls  # the VM goes anyway
        assert shim.events.topics().count("/tasks/delete") == 2
        assert shim.sandbox.state.containers == [] and shim.sandbox.share.containers == {}
        await shim.service.shutdown(task_pb2.ShutdownRequest())
        assert shim.shutdowns == [True]
    run(tmp_path, case)


def test_a_failed_create_undoes_what_it_did(tmp_path: Path) -> None:
    async def case(shim: Shim) -> None:
        shim.agent.fail["CreateContainer"] = TtrpcError(Code.INTERNAL, "crun: no such image")
        with pytest.raises(TtrpcError, match="no such image"):
            await shim.create("c1")
        assert shim.service.tasks == {} and shim.events.published == []
        assert shim.sandbox.share.containers == {} and shim.sandbox.state.containers == []
        assert shim.launcher.vms[0].stopped and shim.sandbox.agent is None
        assert os.listdir(shim.sandbox.share.path) == []
    run(tmp_path, case)


def test_a_vm_that_cannot_start_fails_create_unavailable(tmp_path: Path) -> None:
    async def case(shim: Shim) -> None:
        shim.launcher.fail = VMError("QEMU exited with status 1: no kernel")
        try:
            await shim.create("c1")
        except TtrpcError as exc:
            assert exc.code == Code.UNAVAILABLE and "no kernel" in exc.message
        else:
            raise AssertionError("Create succeeded without a VM")
        assert shim.service.tasks == {} and shim.sandbox.share.containers == {}
        shim.launcher.fail = None  # a later Create boots the VM afresh
        await shim.create("c1")
        assert len(shim.launcher.vms) == 1
    run(tmp_path, case)


def test_bad_ids_and_duplicates_get_the_exact_codes(tmp_path: Path) -> None:
    """The table the fuzz test also checks on a live shim, here through ttrpc to TaskService."""
    async def case(shim: Shim) -> None:
        await shim.run("c1")
        server = Server()
        for name in SERVICES:
            server.register(name, shim.service.methods())
        a, b = socket.socketpair()
        serving = asyncio.create_task(server.serve_connection(
            *await asyncio.open_unix_connection(sock=a)))
        client = Client(*await asyncio.open_unix_connection(sock=b))
        client.start()
        got = []
        for method, request, want in expected_codes("c1"):
            code = await code_of(client.call(SERVICES[0], method, request,  # type: ignore[arg-type]
                                             empty_pb2.Empty, timeout=5))
            got.append((method, code.name, want.name))
        assert [g for g in got if g[1] != g[2]] == []
        assert shim.service.tasks["c1"].init.exit is None  # still running
        await client.close()
        serving.cancel()
    run(tmp_path, case)


def test_a_second_create_joins_the_running_vm(tmp_path: Path) -> None:
    async def case(shim: Shim) -> None:
        await shim.run("c1")
        await shim.create("c2")
        assert len(shim.launcher.vms) == 1
        (cfg, request), = shim.launcher.requests
        assert cfg.io_engine == "python" and request.shared_dir == shim.sandbox.share.path
        assert shim.sandbox.state.containers == ["c1", "c2"]
    run(tmp_path, case)
