"""Device twins of the CPU layers: the same forward/backward contract over CUDA device arrays.

A twin wraps the host layer (its settings, and its weights as the copy to start from and to write back
to): ``Dense`` -> ``DeviceDense`` and so on. Forward and backward mirror the CPU layers line for line,
with the GPU kernels in their place; buffers are sized once per batch size, so a step allocates
nothing on the device either.
"""

from __future__ import annotations

import numpy as np

from jitnn.activations import SOFTMAX
from jitnn.cuda import kernels as K
from jitnn.cuda.gemm import gemm_into
from jitnn.cuda.runtime import cuda
from jitnn.kernels.elementwise import LINEAR


def _zeros(shape, dtype):
    a = cuda.device_array(shape, dtype)
    if a.size:
        cuda.to_device(np.zeros(shape, dtype), to=a)
    return a


class DeviceLayer:
    """Base twin: no parameters, identity shape; buffers grown with ``allocate``."""

    def __init__(self, layer):
        self.layer = layer
        self.params, self.grads = [], []
        self.capacity = 0

    def allocate(self, batch):
        self.capacity = max(self.capacity, batch)

    def _buffer(self, attr, cols, dtype=None):
        buf = getattr(self, attr, None)
        if buf is None or buf.shape[0] < self.capacity or buf.shape[1] != cols:
            buf = cuda.device_array((self.capacity, cols), dtype or self.layer.dtype)
            setattr(self, attr, buf)
        return buf

    def upload(self):
        """Host weights -> device (after set_weights/load_weights on the host layer)."""
        for d, h in zip(self.params, self.layer.params):
            cuda.to_device(h, to=d)

    def download(self):
        """Device weights -> the host layer's arrays, in place."""
        for d, h in zip(self.params, self.layer.params):
            d.copy_to_host(h)


class DeviceDense(DeviceLayer):
    """Dense on the GPU: forward = one tiled GEMM with bias and activation in its epilogue."""

    def __init__(self, layer):
        super().__init__(layer)
        self.W = cuda.to_device(layer.W)
        self.b = cuda.to_device(layer.b)
        self.dW = _zeros(layer.W.shape, layer.dtype)
        self.db = _zeros(layer.b.shape, layer.dtype)
        self.params, self.grads = [self.W], [self.dW]
        if layer.use_bias:
            self.params.append(self.b)
            self.grads.append(self.db)

    def allocate(self, batch):
        super().allocate(batch)
        lay = self.layer
        self.out = self._buffer("out", lay.units)
        self.dz = self._buffer("dz", lay.units)
        self.dx = self._buffer("dx", lay.input_dim)
        if lay.activation.needs_preactivation:
            self.z = self._buffer("z", lay.units)

    def forward(self, x, training):
        lay = self.layer
        n = x.shape[0]
        out = self.out[:n]
        act = lay.activation
        bias = self.b if lay.use_bias else None
        self._x = x
        if lay.emit_logits or act.code == LINEAR:
            gemm_into(x, self.W, out, bias=bias)
        elif act.code == SOFTMAX:
            gemm_into(x, self.W, out, bias=bias)
            K.launch(K.softmax_rows, n, out, out)
        elif act.needs_preactivation:
            z = self.z[:n]
            gemm_into(x, self.W, z, bias=bias)
            K.launch(K.activate, z.size, z, out, act.code, out.dtype.type(act.param))
        else:
            gemm_into(x, self.W, out, bias=bias, act=act.code, act_param=act.param)
        return out

    def backward(self, grad, need_input_grad, grad_is_dz=False):
        lay = self.layer
        n = grad.shape[0]
        act = lay.activation
        out = self.out[:n]
        if grad_is_dz or lay.emit_logits or act.code == LINEAR:
            dz = grad
        elif act.code == SOFTMAX:
            dz = self.dz[:n]
            K.launch(K.backprop_softmax_rows, n, out, grad, dz)
        else:
            dz = self.dz[:n]
            z = self.z[:n] if act.needs_preactivation else out
            K.launch(K.backprop_activation, dz.size, grad, z, out, act.code, out.dtype.type(act.param), dz)
        gemm_into(self._x, dz, self.dW, trans_a=True)
        if lay.use_bias:
            K.launch_column_sums(dz, self.db)
        if not need_input_grad:
            return None
        dx = self.dx[:n]
        gemm_into(dz, self.W, dx, trans_b=True)
        return dx


class DeviceDropout(DeviceLayer):
    """Inverted dropout with the CPU layer's counter hash: the same seed drops the same units."""

    def allocate(self, batch):
        super().allocate(batch)
        d = self.layer.input_dim
        self.out = self._buffer("out", d)
        self.dx = self._buffer("dx", d)
        self.mask = self._buffer("mask", d, np.bool_)

    def forward(self, x, training):
        lay = self.layer
        self._active = training and lay.rate > 0
        if not self._active:
            return x
        n = x.shape[0]
        seed = lay.next_seed()  # the host layer's counter: CPU and GPU runs stay in step
        out, mask = self.out[:n], self.mask[:n]
        K.launch(K.dropout_forward, out.size, x, lay.rate, seed, mask, out)
        return out

    def backward(self, grad, need_input_grad):
        if not self._active:
            return grad
        n = grad.shape[0]
        dx = self.dx[:n]
        K.launch(K.backprop_dropout, dx.size, grad, self.mask[:n], self.layer.rate, dx)
        return dx


class DeviceActivation(DeviceLayer):
    """An activation as a layer of its own (elementwise, or row-wise softmax)."""

    def allocate(self, batch):
        super().allocate(batch)
        self.out = self._buffer("out", self.layer.input_dim)
        self.dx = self._buffer("dx", self.layer.input_dim)

    def forward(self, x, training):
        act = self.layer.activation
        if act.code == LINEAR:
            return x
        self._x = x
        n = x.shape[0]
        out = self.out[:n]
        if act.code == SOFTMAX:
            K.launch(K.softmax_rows, n, x, out)
        else:
            K.launch(K.activate, out.size, x, out, act.code, out.dtype.type(act.param))
        return out

    def backward(self, grad, need_input_grad):
        act = self.layer.activation
        if act.code == LINEAR:
            return grad
        n = grad.shape[0]
        out, dx = self.out[:n], self.dx[:n]
        if act.code == SOFTMAX:
            K.launch(K.backprop_softmax_rows, n, out, grad, dx)
        else:
            K.launch(K.backprop_activation, dx.size, grad, self._x, out, act.code, out.dtype.type(act.param), dx)
        return dx


def twin(layer):
    """The device twin of a host layer; ValueError for what the GPU backend does not run."""
    from jitnn.layers import Activation, Dense, Dropout

    if isinstance(layer, Dense):
        if layer.mask is not None:
            raise ValueError(f"{layer.describe()} is pruned (jitnn.prune): pruned layers run on the CPU only")
        return DeviceDense(layer)
    if isinstance(layer, Dropout):
        return DeviceDropout(layer)
    if isinstance(layer, Activation):
        return DeviceActivation(layer)
    raise ValueError(f"{type(layer).__name__} has no CUDA implementation; use device='cpu'")
