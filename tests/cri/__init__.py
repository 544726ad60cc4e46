"""CRI test infrastructure: a runtime.v1 subset, its client and a streaming client."""
