"""Presentation layer: FastAPI routes, the WebSocket endpoint and their schemas."""
