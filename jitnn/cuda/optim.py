"""Optimizer steps on the device: the host optimizer keeps its settings, schedule and step counter,
the moment buffers live on the GPU, and each parameter array gets one update kernel per step.

The scalars (learning rate from the schedule, Adam's bias corrections folded into two numbers) are
computed on the host exactly as jitnn.kernels.optim computes them, so the updates match the CPU's.
"""

from __future__ import annotations

import math

from jitnn import optimizers as opt_mod
from jitnn.cuda import kernels as K
from jitnn.cuda.runtime import cuda


class DeviceOptimizer:
    """Drives ``optimizer`` (a host jitnn optimizer) over device parameter arrays."""

    def __init__(self, optimizer, host_params):
        if not isinstance(optimizer, (opt_mod.SGD, opt_mod.Adagrad, opt_mod.RMSprop, opt_mod.Adam)):
            raise ValueError(f"{type(optimizer).__name__} has no CUDA update kernel; use device='cpu'")
        self.opt = optimizer
        if not optimizer.built:
            optimizer.build(host_params)
        # the kernel's buffers per array, flat; a slot the settings leave unused is an empty array
        self.bufs = [tuple(cuda.to_device(optimizer._state[s][i].reshape(-1)) if s in optimizer._state
                           else cuda.device_array(0, p.dtype) for s in optimizer._kernel_slots())
                     for i, p in enumerate(host_params)]

    def download(self):
        """Device moment buffers -> the host optimizer's state (for save and for a move to the CPU)."""
        opt = self.opt
        for i, bufs in enumerate(self.bufs):
            for s, b in zip(opt._kernel_slots(), bufs):
                if s in opt._state:
                    host = opt._state[s][i]
                    b.copy_to_host(host.reshape(-1))

    def upload(self):
        opt = self.opt
        for i, bufs in enumerate(self.bufs):
            for s, b in zip(opt._kernel_slots(), bufs):
                if s in opt._state:
                    cuda.to_device(opt._state[s][i].reshape(-1), to=b)

    def step(self, params, grads, regs, on_param=None):
        """One step over flat device arrays ``params``/``grads``; ``iterations`` goes up by one."""
        opt = self.opt
        lr = opt.current_learning_rate()
        opt.iterations += 1
        for i, (w, g) in enumerate(zip(params, grads)):
            if on_param is not None:
                on_param(i)
            l1, l2 = regs[i]
            self._update(w, g, self.bufs[i], lr, l1, l2)
        if on_param is not None:
            on_param(len(params))

    def _update(self, w, g, bufs, lr, l1, l2):
        opt = self.opt
        dt = w.dtype.type
        reg = l1 != 0.0 or l2 != 0.0
        l1_, l2x2 = dt(l1), dt(2.0 * l2)
        n = w.size
        if isinstance(opt, opt_mod.Adam):
            t = opt.iterations
            m, v, vmax = bufs
            K.launch(K.adam_update, n, w, g, m, v, vmax, dt(lr / (1.0 - opt.beta_1**t)),
                     dt(1.0 / math.sqrt(1.0 - opt.beta_2**t)), dt(opt.beta_1), dt(1.0 - opt.beta_1),
                     dt(opt.beta_2), dt(1.0 - opt.beta_2), dt(opt.epsilon), dt(lr * opt.weight_decay),
                     opt.amsgrad, l1_, l2x2, reg)
        elif isinstance(opt, opt_mod.RMSprop):
            K.launch(K.rmsprop_update, n, w, g, bufs[0], dt(lr), dt(opt.rho), dt(1.0 - opt.rho), dt(opt.epsilon),
                     l1_, l2x2, reg)
        elif isinstance(opt, opt_mod.Adagrad):
            K.launch(K.adagrad_update, n, w, g, bufs[0], dt(lr), dt(opt.epsilon), l1_, l2x2, reg)
        else:
            K.launch(K.sgd_update, n, w, g, bufs[0], dt(lr), dt(opt.momentum), opt.nesterov, l1_, l2x2, reg)


def flat(a):
    """A 1-D view of a C-contiguous device array (what the update kernels take)."""
    return a.reshape(a.size) if a.ndim != 1 else a


__all__ = ["DeviceOptimizer", "flat"]
