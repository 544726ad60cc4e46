"""ttrpc: containerd's lightweight RPC protocol, one implementation for the shim and the agent."""

from bulkhead_wire.ttrpc.client import Client
from bulkhead_wire.ttrpc.errors import Code, TtrpcError
from bulkhead_wire.ttrpc.server import Server

__all__ = ["Client", "Code", "Server", "TtrpcError"]
