"""The layout engine: field catalog, custom-field steps, layouts, formats, streaming render.

Pure code (no gRPC, asyncpg or aiohttp) shared by delivery, export and the scheduler.
"""
