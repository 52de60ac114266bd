"""The real-time path: each API connection's live loop, its store and its supervisor."""
