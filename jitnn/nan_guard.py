"""What the NaN guard puts back when it rejects a training step: the weights, the optimizer's moment
buffers and its step counter, as they were before the step (issue 14).

Putting back the weights alone left a rejected step's moments behind: an SGD velocity of inf after one
step at a huge learning rate made every later fit fail, even at a sane rate, and the saved model could
not be loaded. On a device whose update kernels keep the snapshot in their own pass
(``ops.guard_in_update``: the CPU, jitnn/kernels/optim.py) each parameter array has one flat array of
its length: the kernel copies w into it chunk by chunk, right before updating that chunk, while the
chunk is in L1. The moments need no copy there: the kernels write the new ones into the optimizer's
second set of buffers, and the optimizer swaps them in only when the step is accepted
(``Optimizer.swap_moments``), so after a rejected step its state is the pre-step one already. On other
devices ``take`` copies the weights and the moment buffers at each good read of the loss.
"""

from __future__ import annotations


class StepSnapshot:
    """The state a rejected step returns to, for ``params`` trained by ``optimizer`` on ``ops``."""

    def __init__(self, ops, params, optimizer):
        self.ops, self.params, self.optimizer = ops, params, optimizer
        if ops.guard_in_update:
            self.flat = [ops.alloc(p.size, p.dtype) for p in params]  # what the kernels fill
            self.weights = [f.reshape(p.shape) for f, p in zip(self.flat, params)]
            self.moments = None  # kept by the optimizer's double buffers
        else:
            k = len(optimizer.slots)
            self.flat = None
            self.weights = [ops.alloc(p.shape, p.dtype) for p in params]
            self.moments = [[ops.alloc(p.shape, p.dtype) for _ in range(k)] for p in params]
        self.iterations = optimizer.iterations
        self.has_moments = False  # False until the moments exist (an optimizer builds on its first step)
        self.swapped = False  # an accepted update has swapped the moments since the weights were kept
        self.take()

    def take(self):
        """Copy the weights, the moments (once built) and the step counter now."""
        for p, w in zip(self.params, self.weights):
            self.ops.copy(p, w)
        self.swapped = False
        opt = self.optimizer
        if opt.built and self.moments is not None:
            for i, kept in enumerate(self.moments):
                for s, m in zip(opt.slots, kept):
                    self.ops.copy(opt.state[s][i], m)
            self.has_moments = True
        self.iterations = opt.iterations

    def updated(self, iterations, accepted):
        """The update kernels just filled the flat snapshots with the weights of a step that began at
        ``iterations`` (``ops.guard_in_update``). The optimizer keeps that step's starting moments itself:
        as its state when the step was rejected, and in its second set of buffers when it was
        ``accepted`` and swapped in, until the next update writes there."""
        self.iterations = iterations
        self.swapped = accepted

    def restore(self):
        """Put back the weights, moments and step counter kept (the caller holds the model's write lock
        and tells the model its weights changed)."""
        for p, w in zip(self.params, self.weights):
            self.ops.copy(w, p)
        opt = self.optimizer
        if self.has_moments and opt.built and self.moments is not None:
            for i, kept in enumerate(self.moments):
                for s, m in zip(opt.slots, kept):
                    self.ops.copy(m, opt.state[s][i])
        if self.swapped:  # the kept weights are from before the last accepted step: so are the moments
            opt.swap_moments()
            self.swapped = False
        opt.iterations = self.iterations


__all__ = ["StepSnapshot"]
