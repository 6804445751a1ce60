"""Load tests, the benchmark harness and the soak script for Vigil (run from the repo root)."""
