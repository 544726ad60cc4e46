"""What the shim and the guest agent both speak: the names and numbers of their contract
(guest_abi), ttrpc and its protobuf messages, the data channel with its C copy engine, the ids
and OCI JSON checked on the wire, and the network interface model with its rtnetlink helpers.
The guest image ships this package and the agent, nothing of the host's `bulkhead` package."""

__version__ = "0.1.0"
