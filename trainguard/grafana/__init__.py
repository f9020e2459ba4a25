"""Grafana: trainguard's dashboards as code, their provisioning and push, and verification."""
