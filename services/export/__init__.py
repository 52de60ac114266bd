"""The export service: the HTTP face of Handoff (python -m services.export)."""
