"""The host ends of process stdio: containerd's FIFOs, file:// logs and binary:// loggers
(the channel itself is in bulkhead_wire.stdio)."""
