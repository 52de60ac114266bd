"""The scheduler service: tasks, layouts and due times (python -m services.scheduler)."""
