"""Layers: Dense, Dropout, Activation, LeakyReLU."""

from jitnn.layers.activation import Activation
from jitnn.layers.base import Layer
from jitnn.layers.dense import Dense
from jitnn.layers.dropout import Dropout
from jitnn.layers.leaky_relu import LeakyReLU

__all__ = ["Activation", "Dense", "Dropout", "Layer", "LeakyReLU"]
