"""Reusable conformance checks for models, source layouts and encoders."""
