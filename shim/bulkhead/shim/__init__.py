"""containerd-shim-bulkhead-v2: the host-side shim (start/delete commands and the daemon)."""
