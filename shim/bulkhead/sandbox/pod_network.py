"""A pod's network as its VM gets it: CNI's interface, and the tap that carries it to the NIC.

Read in the netns containerd made for the pod (the sandbox spec's network namespace path)
before the VM starts, because the tap is the NIC's backend on QEMU's command line; the guest
takes the interface's identity (MAC, MTU, addresses, routes) once its agent answers.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from bulkhead_wire.netlink.model import Interface, NetworkError

from bulkhead.network.pod_netns import read_pod_interfaces
from bulkhead.network.tap import TapHandle, create_tap_redirect, join_tap

log = logging.getLogger(__name__)


@dataclass
class PodNetwork:
    """The interface the VM mirrors and its tap (one: the VM has one NIC, like its template)."""

    netns_path: str
    interfaces: list[Interface]
    tap: TapHandle
    dies_with_vm: bool = False  # the VM's own namespace: tap, redirect and all go with QEMU

    @classmethod
    async def attach(cls, netns_path: str, sandbox_id: str) -> PodNetwork | None:
        """Read CNI's interfaces and make the tap of the first; NetworkError names the step.

        None for a namespace with no interface up (only lo, as runc would give the container).
        """
        interfaces = await read_pod_interfaces(netns_path)
        if not interfaces:
            log.info("sandbox %s: network namespace %s has no interface up: the VM gets only "
                     "lo", sandbox_id, netns_path)
            return None
        _warn_if_several(interfaces, sandbox_id, netns_path)
        tap = await create_tap_redirect(netns_path, interfaces[0])
        return cls(netns_path, interfaces[:1], tap)

    @classmethod
    async def join(cls, netns_path: str, sandbox_id: str, tap: str) -> PodNetwork | None:
        """A lone container's: what was set up in its VM's namespace after Create (ctr --cni,
        nerdctl's hook) is joined to the tap QEMU made there; None if nothing was."""
        interfaces = await read_pod_interfaces(netns_path)
        if not interfaces:
            return None
        _warn_if_several(interfaces, sandbox_id, netns_path)
        handle = await join_tap(netns_path, interfaces[0], tap)
        return cls(netns_path, interfaces[:1], handle, dies_with_vm=True)

    def release_fd(self) -> None:
        """QEMU holds its own copy of the tap now (or failed): drop ours."""
        self.tap.close()

    async def detach(self) -> None:
        """Remove the tap and its redirect; fine if the namespace is already gone."""
        if self.dies_with_vm:  # its /proc/<pid> path may name another process by now
            return
        try:
            await self.tap.teardown()
        except NetworkError as exc:
            log.warning("pod network in %s: %s", self.netns_path, exc)


def _warn_if_several(interfaces: list[Interface], sandbox_id: str, netns_path: str) -> None:
    if len(interfaces) > 1:
        log.warning("sandbox %s: %d interfaces in %s; the VM has one NIC, so only %s is "
                    "carried into it", sandbox_id, len(interfaces), netns_path,
                    interfaces[0].name)
