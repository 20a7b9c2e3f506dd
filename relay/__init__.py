"""Ingest, fan-out and the HTTP service."""
