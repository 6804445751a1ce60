"""The I/O log: every request's inputs and outputs, spooled durably, then stored for readers."""
