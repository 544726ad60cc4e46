"""Development and test environment helpers: private containerd instances, the demo run and
the leak checks the integration tests rely on. Not imported by the shim at run time."""
