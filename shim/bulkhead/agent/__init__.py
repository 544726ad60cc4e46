"""The host's side of bulkhead-agent's control API: typed calls and their timing.

Importing the package stays cheap: `bulkhead monitor` readers load rpc_stats alone.
"""
