"""VM templates: booted-once guests whose memory and device state every sandbox VM clones."""
