"""Layers: Dense, Dropout, Activation, LeakyReLU; Conv2D, pooling, BatchNormalization, Flatten, Reshape."""

from jitnn.layers.activation import Activation
from jitnn.layers.base import Layer
from jitnn.layers.conv import Conv2D
from jitnn.layers.dense import Dense
from jitnn.layers.dropout import Dropout
from jitnn.layers.leaky_relu import LeakyReLU
from jitnn.layers.normalization import BatchNormalization
from jitnn.layers.pooling import AveragePooling2D, GlobalAveragePooling2D, MaxPooling2D
from jitnn.layers.reshaping import Flatten, Reshape

__all__ = ["Activation", "AveragePooling2D", "BatchNormalization", "Conv2D", "Dense", "Dropout", "Flatten",
           "GlobalAveragePooling2D", "Layer", "LeakyReLU", "MaxPooling2D", "Reshape"]
