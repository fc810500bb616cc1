"""The `digest` command (see base for the conventions every command follows)."""

from . import content, people, sending  # noqa: F401 - importing them registers the commands
from .base import cli, main

__all__ = ["cli", "main"]
