"""The thin HTTP layer: translate requests to data-plane calls and results to responses."""
