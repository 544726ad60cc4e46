"""Bulkhead: a containerd shim v2 runtime that runs every pod in its own microVM."""

__version__ = "0.1.0"
