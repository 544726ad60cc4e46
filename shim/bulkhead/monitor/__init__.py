"""Metrics of live sandboxes: each shim writes a snapshot file, `bulkhead monitor` serves them."""
