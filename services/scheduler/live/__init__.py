"""The live-delivery API of API connections (state, dead letters, replay, enable)."""
