"""Sailthru: signed requests (`signing`), how its answers read (`answers`), what Handoff
sends (`payloads`) and the client that sends it (`client`)."""
