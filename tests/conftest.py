"""Integration tests: every bundled plugin installed together, a real server, real clients."""
