"""Subcommands of the ``trainguard`` CLI, one module each, every one exposing ``register()``."""
