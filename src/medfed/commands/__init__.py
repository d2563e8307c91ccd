"""CLI commands, one module per resource; each exposes ``register(app)``."""

from __future__ import annotations

import importlib

import typer

MODULES = (
    "data",
    "train",
    "federated",
    "runs",
    "users",
    "platform",
    "hospitals",
    "report",
    "privacy",
    "predict",
)


def register_all(app: typer.Typer) -> None:
    """Import every command module present and let it add its commands to ``app``."""
    for name in MODULES:
        try:
            module = importlib.import_module(f"medfed.commands.{name}")
        except ModuleNotFoundError as exc:
            if exc.name == f"medfed.commands.{name}":
                continue
            raise
        module.register(app)
