"""Transport: the HTTP-over-Unix-socket server (aiohttp); never imports the engine."""
