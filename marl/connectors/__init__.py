"""Env-to-module connector pieces: transform raw env observations before the module sees them."""

from marl.connectors.flatten_observations import FlattenObservations

__all__ = ["FlattenObservations"]
