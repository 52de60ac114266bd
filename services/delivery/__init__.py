"""The delivery service: renders and sends delivery jobs (python -m services.delivery)."""
