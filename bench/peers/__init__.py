"""What the gateway is measured against: the peer a Python team would pick, and the ceiling."""
