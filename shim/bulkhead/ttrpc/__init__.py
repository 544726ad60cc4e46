"""ttrpc: containerd's lightweight RPC protocol, one implementation for the shim and the agent."""

from bulkhead.ttrpc.client import Client
from bulkhead.ttrpc.errors import Code, TtrpcError
from bulkhead.ttrpc.server import Server

__all__ = ["Client", "Code", "Server", "TtrpcError"]
