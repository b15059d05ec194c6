"""Synchronous data-parallel training on MPI (mpi4py), Horovod-style: docs/distributed.md.

    # mpiexec -n 2 python train.py
    from jitnn.distributed import DataParallel
    strategy = DataParallel()                      # MPI.COMM_WORLD; threads per rank from the cores per rank
    model.fit(x, y, batch_size=1024, epochs=5, strategy=strategy)   # batch_size is the GLOBAL batch

Every rank holds the whole data set and draws the same shuffle; each takes its contiguous share of every
global batch, computes the gradients of its rows, and one ``Allreduce`` on a flat buffer averages them
(weighted by rows, so an uneven last batch gives the same step as one process). Weights and optimizer
state are broadcast from rank 0 before the first step; the loss, metrics and every stop decision are
reduced across ranks; the progress bar and callbacks' side effects run on rank 0 only.

``import jitnn`` never imports this package, and this package imports mpi4py only when a strategy is
made: ``pip install 'jitnn[distributed]'`` brings mpi4py and an MPI (the ``mpich`` wheel).
"""

from jitnn.distributed.costmodel import AllreduceModel, StepModel, expected_max, predict_scaling
from jitnn.distributed.strategy import DataParallel

__all__ = ["AllreduceModel", "DataParallel", "StepModel", "expected_max", "predict_scaling"]
