"""Transports: HTTP, WebSocket and WebRTC endpoints. Each module's ``setup(app)`` adds its routes."""
