"""Subcommands of the `scaler` CLI, one module each, registered in :mod:`scaler.cli`."""
