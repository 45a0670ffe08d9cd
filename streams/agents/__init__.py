"""Faust agents, one module per domain; each exposes ``register(app, ...)``."""
