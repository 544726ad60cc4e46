"""Pod networking: CNI's interfaces read on the host, mirrored onto taps, rebuilt in the guest.

`model` (the shared dataclasses) imports nothing heavy; `pod_netns` and `tap` (host) load pyroute2.
"""
