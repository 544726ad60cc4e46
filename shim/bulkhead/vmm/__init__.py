"""VMM drivers: one small interface (base), QEMU microvm first.

Importing this package stays cheap (no asyncio): `delete` only needs kill_stale(). QemuVM is
loaded on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from bulkhead.vmm.base import AgentLink, VirtualMachine, VMConfig, VMError, kill_stale

if TYPE_CHECKING:
    from bulkhead.vmm.qemu import QemuVM

__all__ = ["AgentLink", "QemuVM", "VMConfig", "VMError", "VirtualMachine", "kill_stale"]


def __getattr__(name: str) -> Any:
    """Lazy QemuVM so that importing bulkhead.vmm does not pull in asyncio."""
    if name == "QemuVM":
        from bulkhead.vmm.qemu import QemuVM

        return QemuVM
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
