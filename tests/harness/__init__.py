"""The test harness (also used by bench/): private containerd instances for tests with their CNI
networks and CRI cleanup, crash and reap helpers, and `bulkhead monitor` as a child process.
Built on the product's bulkhead.demo (the private containerd itself) and
bulkhead.install.containerd_config (every config it renders)."""
