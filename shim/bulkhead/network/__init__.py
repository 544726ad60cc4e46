"""Pod networking on the host: CNI's interfaces read in the pod netns, mirrored onto taps.

The interface model and the rtnetlink helpers shared with the guest are in bulkhead_wire.netlink.
"""
