"""Vigil service: HTTP layer, inference core, I/O logging and metrics."""
