"""The network interface model both sides exchange and the rtnetlink helpers both use.

`model` imports nothing heavy; `netns` loads the rtnetlink part of pyroute2 on demand.
"""
