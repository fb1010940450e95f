"""Env-to-module connector pieces: transform raw env observations before the module sees them."""

from marl.connectors.flatten_observations import FlattenObservations
from marl.connectors.mean_std_filter import MeanStdFilter

__all__ = ["FlattenObservations", "MeanStdFilter"]
