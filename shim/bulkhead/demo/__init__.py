"""`bulkhead demo` and the doctor's smoke test: one container through a private containerd started
from a given containerd binary (the node's own, found on PATH, or the development installs)."""
