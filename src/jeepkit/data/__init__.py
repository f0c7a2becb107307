"""Datasets: one canonical edit-case schema, readers for the public formats, the bundled benchmark."""

from .schema import EditCase, LocalityPrompt, load_cases, save_cases

__all__ = ["EditCase", "LocalityPrompt", "load_cases", "save_cases"]
