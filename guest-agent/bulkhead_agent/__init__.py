"""bulkhead-agent: the in-guest supervisor that runs a pod's containers with crun."""

__version__ = "0.1.0"
