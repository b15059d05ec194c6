"""What the NaN guard puts back when it rejects a training step: the weights, the optimizer's moment
buffers and its step counter, as they were before the step (issue 14).

Putting back the weights alone left a rejected step's moments behind: an SGD velocity of inf after one
step at a huge learning rate made every later fit fail, even at a sane rate, and the saved model could
not be loaded. On a device whose update kernels keep the snapshot in their own pass
(``ops.guard_in_update``: the CPU, jitnn/kernels/optim.py) each parameter array has one flat array of
``(1 + k) * n`` elements, ``k`` the optimizer's moment buffers (``optimizer.slots``, in the kernel's
order): the kernel copies w and then each buffer into it chunk by chunk, right before updating that
chunk, while the chunk is in L1. On other devices ``take`` copies the weights and buffers at each
good read of the loss.
"""

from __future__ import annotations


class StepSnapshot:
    """The state a rejected step returns to, for ``params`` trained by ``optimizer`` on ``ops``."""

    def __init__(self, ops, params, optimizer):
        self.ops, self.params, self.optimizer = ops, params, optimizer
        k = len(optimizer.slots)
        if ops.guard_in_update:
            self.flat = [ops.alloc((1 + k) * p.size, p.dtype) for p in params]  # what the kernels fill
            self.weights = [f[:p.size].reshape(p.shape) for f, p in zip(self.flat, params)]
            self.moments = [[f[(1 + j) * p.size:(2 + j) * p.size].reshape(p.shape) for j in range(k)]
                            for f, p in zip(self.flat, params)]
        else:
            self.flat = None
            self.weights = [ops.alloc(p.shape, p.dtype) for p in params]
            self.moments = [[ops.alloc(p.shape, p.dtype) for _ in range(k)] for p in params]
        self.iterations = optimizer.iterations
        self.has_moments = False  # False until the moments exist (an optimizer builds on its first step)
        self.take()

    def take(self):
        """Copy the weights, the moments (once built) and the step counter now."""
        for p, w in zip(self.params, self.weights):
            self.ops.copy(p, w)
        opt = self.optimizer
        if opt.built:
            for i, kept in enumerate(self.moments):
                for s, m in zip(opt.slots, kept):
                    self.ops.copy(opt.state[s][i], m)
            self.has_moments = True
        self.iterations = opt.iterations

    def updated(self, iterations):
        """The update kernels just filled the flat snapshots with the state of a step that began at
        ``iterations`` (``ops.guard_in_update``)."""
        self.iterations = iterations
        self.has_moments = True

    def restore(self):
        """Put back the weights, moments and step counter kept (the caller holds the model's write lock
        and tells the model its weights changed)."""
        for p, w in zip(self.params, self.weights):
            self.ops.copy(w, p)
        opt = self.optimizer
        if self.has_moments and opt.built:
            for i, kept in enumerate(self.moments):
                for s, m in zip(opt.slots, kept):
                    self.ops.copy(m, opt.state[s][i])
        opt.iterations = self.iterations


__all__ = ["StepSnapshot"]
