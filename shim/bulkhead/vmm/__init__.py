"""VMM drivers: one small interface (base), QEMU microvm first (import bulkhead.vmm.qemu).

Importing this package stays cheap (no asyncio): `delete` only needs kill_stale().
"""

from __future__ import annotations

from bulkhead.vmm.base import AgentLink, VirtualMachine, VMConfig, VMError, kill_stale

__all__ = ["AgentLink", "VMConfig", "VMError", "VirtualMachine", "kill_stale"]
