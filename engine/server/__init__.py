"""The HTTP and websocket service: ``atelier serve``."""
