"""`python -m services.run`: the local database, the four services as processes, the demo."""
