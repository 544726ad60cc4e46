"""Process stdio between shim and agent: one multiplexed, credit-controlled data channel."""
