"""Layers: Dense, Dropout, Activation."""

from jitnn.layers.activation import Activation
from jitnn.layers.base import Layer
from jitnn.layers.dense import Dense
from jitnn.layers.dropout import Dropout

__all__ = ["Activation", "Dense", "Dropout", "Layer"]
