"""Vigil monitoring: drift job, Grafana dashboards and Prometheus rules."""
