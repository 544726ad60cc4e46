"""bulkhead_wire.guest_abi against what each side builds from it: proto/agent.proto's service,
the agent's method table, and the template builder's console line."""

from __future__ import annotations

from typing import Any

import pytest
from bulkhead_agent import log as agentlog
from bulkhead_agent.bootinfo import BootInfo
from bulkhead_agent.service import AgentService
from bulkhead_wire import guest_abi
from bulkhead_wire.proto import agent_pb2


def test_agent_service_is_the_proto_service_and_serves_every_method() -> None:
    proto = agent_pb2.DESCRIPTOR.services_by_name["Agent"]
    assert proto.full_name == guest_abi.AGENT_SERVICE
    supervisor: Any = None  # methods() only binds handlers
    served = AgentService(supervisor, BootInfo(0.0, 0.0, 0.0)).methods()
    assert set(served) == {m.name for m in proto.methods}


def test_the_agent_writes_the_template_ready_line(capsys: pytest.CaptureFixture[str]) -> None:
    agentlog.console(guest_abi.TEMPLATE_READY)  # off a guest: to stderr
    assert capsys.readouterr().err == guest_abi.TEMPLATE_READY_LINE + "\n"
