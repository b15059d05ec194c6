"""DataParallel: what one rank does around each training step (the loop calls these hooks).

All collectives use mpi4py's uppercase buffer API on contiguous numpy arrays: nothing is pickled.

Equivalence with one process (tests/test_distributed.py): each rank's loss gradient is the mean over
its own rows, so before the sum-allreduce each gradient is scaled by rows/global_rows; the result is the
gradient of the global batch's mean loss. It agrees with a one-process step at the same global batch
within float rounding, not bitwise: the split changes the order of the row sums inside X^T dZ.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
import traceback

import numpy as np

import jitnn
from jitnn.memory import aligned_zeros, padded_to_line
from jitnn.training import NonFiniteLossError

#: Seconds a failing rank waits after writing its message before MPI_Abort, so the launcher forwards it.
ABORT_DRAIN_SECONDS = 1.0


def _mpi():
    try:
        from mpi4py import MPI
    except ImportError as e:  # pragma: no cover - exercised by users without the extra
        raise ImportError("jitnn.distributed needs mpi4py and an MPI library: "
                          "pip install 'jitnn[distributed]' (mpi4py + mpich)") from e
    return MPI


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def balanced_slice(rows: int, rank: int, size: int) -> slice:
    """Rank ``rank``'s contiguous share of ``rows`` rows: sizes differ by at most one."""
    return slice(rows * rank // size, rows * (rank + 1) // size)


def same_arrays(a, b) -> bool:
    """True when the two sequences hold the very same arrays, in order."""
    return len(a) == len(b) and all(x is y for x, y in zip(a, b))


def gradient_arena(model, views=(), arena=None):
    """(gradient arrays, dtype -> flat buffer): every layer's gradient arrays made views of one flat
    buffer per dtype, in the model's order, so that the step's allreduce runs on them in place (no copy
    in and out of a separate buffer). The layers keep their values; ``views, arena`` from an earlier call
    are returned as they are when the layers still hold exactly those arrays."""
    grads = [g for layer in model.layers for g in layer.grads]
    if same_arrays(grads, views):
        return list(views), arena
    sizes: dict = {}
    for g in grads:  # each array starts on a cache line, as jitnn.memory allocates them
        sizes[g.dtype] = sizes.get(g.dtype, 0) + padded_to_line(g.size, g.dtype)
    arena = {dtype: aligned_zeros(n, dtype) for dtype, n in sizes.items()}
    offsets = dict.fromkeys(sizes, 0)
    for layer in model.layers:
        owned = {id(g) for g in layer.grads}
        for name in layer.arrays:
            g = getattr(layer, name, None)
            if g is None or id(g) not in owned:
                continue
            o = offsets[g.dtype]
            view = arena[g.dtype][o:o + g.size].reshape(g.shape)
            view[...] = g
            setattr(layer, name, view)
            offsets[g.dtype] = o + padded_to_line(g.size, g.dtype)
        layer.collect()
    views = [g for layer in model.layers for g in layer.grads]
    if any(offsets[d] != sizes[d] for d in sizes) or len(views) != len(grads):  # a layer keeps its gradients elsewhere
        return [], {}
    return views, arena


class DataParallel:
    """Synchronous data parallelism over an MPI communicator (default ``MPI.COMM_WORLD``).

    ``threads``: numba threads per rank; by default the cores this process may run on divided by the
    ranks sharing its node, so 2 ranks on 2 cores run 1 thread each instead of oversubscribing.
    """

    def __init__(self, comm=None, threads: int | None = None, root: int = 0):
        MPI = _mpi()
        self.MPI = MPI
        self.comm = comm if comm is not None else MPI.COMM_WORLD
        self.rank, self.size = self.comm.Get_rank(), self.comm.Get_size()
        if isinstance(root, bool) or not isinstance(root, int) or not 0 <= root < self.size:
            raise ValueError(f"root must be a rank in [0, {self.size}), received: root={root!r}")
        self.root = root
        node = self.comm.Split_type(MPI.COMM_TYPE_SHARED)
        self.local_size = node.Get_size()
        node.Free()
        if threads is None:
            threads = max(1, _cores() // self.local_size)
        if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
            raise ValueError(f"threads must be a positive int, received: threads={threads!r}")
        import numba

        self.threads = min(threads, numba.config.NUMBA_NUM_THREADS)
        jitnn.set_num_threads(self.threads)
        self._flat: dict = {}  # dtype -> the flat gradient buffer of one step (packing path)
        self._arena: tuple[list, dict] = ([], {})  # (the layers' gradient arrays, dtype -> the flat buffer they view)

    @property
    def is_root(self) -> bool:
        return self.rank == self.root

    def __repr__(self):
        return f"DataParallel(rank={self.rank}, size={self.size}, threads={self.threads})"

    # --- the hooks of jitnn.training.fit (jitnn.training.SingleProcess is the one-process twin) -------
    def agree_seed(self, seed):
        """The root's ``seed`` (one it draws when that is None), so every rank shuffles alike and a
        given seed means what it means in one process."""
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, (int, np.integer))
                                 or not 0 <= seed < 2**63):
            raise ValueError(f"seed must be None or an int in [0, 2**63), received: seed={seed!r}")
        buf = np.zeros(1, np.int64)
        if self.is_root:
            buf[0] = int(np.random.SeedSequence().entropy % 2**63) if seed is None else seed
        self.comm.Bcast(buf, root=self.root)
        return int(buf[0])

    def setup(self, model):
        """Before the first step: the root's weights, optimizer state and step counter on every rank."""
        if model.device != "cpu":
            raise ValueError(f"DataParallel trains on the CPU; the model is on device={model.device!r}")
        opt = model.optimizer
        params = [p for layer in model.layers for p in layer.params]
        if not opt.built:
            opt.build(params)
        self.broadcast(params)
        for arrays in opt.state.values():
            self.broadcast(arrays)
        opt.iterations = int(self.broadcast_scalar(opt.iterations))
        model.weights_changed()
        self._arena = gradient_arena(model, *self._arena)

    def shard(self, start, rows):
        """(first row, row count) of this rank's contiguous share of the batch order[start:start+rows]."""
        part = balanced_slice(rows, self.rank, self.size)
        return start + part.start, part.stop - part.start

    def reduce_gradients(self, grads, rows, global_rows, recorder):
        """grads[i] <- sum over ranks of grads[i] * rows / global_rows, in place: one Allreduce a dtype.

        One collective per step on one flat buffer, not one per array: the latency term counts once.
        The gradients of a model this strategy set up are views of that buffer (``gradient_arena``), so
        it is scaled and summed in place; other arrays are packed into one and unpacked (0.45 ms a step
        for the reference MLP's 1.8 MiB, against 0.11 ms for the in-place scaling). A rank with no rows
        in this batch (the last one, smaller than the rank count) contributes zeros."""
        t = recorder.host_start()
        scale = rows / global_rows
        views, arena = self._arena
        if same_arrays(grads, views):
            for flat in arena.values():
                if not rows:
                    flat.fill(0)
                elif scale != 1:
                    np.multiply(flat, flat.dtype.type(scale), out=flat)
                self.comm.Allreduce(self.MPI.IN_PLACE, flat, op=self.MPI.SUM)
            recorder.host_stop(t, None, "allreduce", global_rows)
            return
        by_dtype: dict = {}
        for g in grads:
            by_dtype.setdefault(g.dtype, []).append(g)
        for dtype, group in by_dtype.items():
            total = sum(g.size for g in group)
            flat = self._flat.get(dtype)
            if flat is None or flat.size != total:
                flat = self._flat[dtype] = np.empty(total, dtype)
            o = 0
            for g in group:
                if rows:
                    np.multiply(g.reshape(-1), dtype.type(scale), out=flat[o:o + g.size])
                else:
                    flat[o:o + g.size] = 0
                o += g.size
            self.comm.Allreduce(self.MPI.IN_PLACE, flat, op=self.MPI.SUM)
            o = 0
            for g in group:
                np.copyto(g.reshape(-1), flat[o:o + g.size])
                o += g.size
        recorder.host_stop(t, None, "allreduce", global_rows)

    def in_turn(self, fn):
        """``fn()`` on the root, then on the other ranks: the root compiles (a training step) what the
        others then load from the disk cache, which numba does not make safe for several processes
        writing the same entry at once."""
        if self.is_root:
            result = fn()
            self.comm.Barrier()
            return result
        self.comm.Barrier()
        return fn()

    def reduce_sums(self, sums) -> None:
        """The running loss and metric sums (float64, in place) summed over ranks."""
        self.comm.Allreduce(self.MPI.IN_PLACE, sums, op=self.MPI.SUM)

    def agree(self, flag: bool) -> bool:
        """True on every rank when ``flag`` is true on any (a stop decision taken once for all)."""
        buf = np.array([1 if flag else 0], np.int32)
        self.comm.Allreduce(self.MPI.IN_PLACE, buf, op=self.MPI.MAX)
        return bool(buf[0])

    def evaluate(self, model, x, y):
        """``model.evaluate`` over the whole validation set, each rank computing a contiguous share: the
        row-weighted means of loss and metrics, reduced (every loss and metric is a mean over rows)."""
        part = balanced_slice(x.shape[0], self.rank, self.size)
        rows = part.stop - part.start
        width = 1 + len(model.metrics)
        local = np.zeros(width + 1)
        if rows:
            values = model.evaluate(x[part], y[part])
            local[:width] = np.asarray(values if isinstance(values, list) else [values], np.float64) * rows
        local[width] = rows
        self.reduce_sums(local)
        means = [float(v / local[width]) for v in local[:width]]
        return means if width > 1 else means[0]

    def end_epoch(self, model):
        """The root's learning rate on every rank (a root-only callback such as ReduceLROnPlateau may
        have changed it), so the ranks keep taking the same step."""
        opt = model.optimizer
        if isinstance(opt.learning_rate, float):
            lr = self.broadcast_scalar(opt.learning_rate)
            if lr != opt.learning_rate:
                opt.learning_rate = lr

    def end_training(self, model):
        """The root's weights on every rank (a root-only EarlyStopping may have restored its best)."""
        self.broadcast([p for layer in model.layers for p in layer.params])
        model.weights_changed()

    # --- collectives on arrays --------------------------------------------------------------------
    def broadcast(self, arrays) -> None:
        """Every array (C-contiguous numpy) takes the root's values, in place."""
        for a in arrays:
            if not a.flags.c_contiguous:
                raise ValueError("broadcast needs C-contiguous arrays")
            if a.size:
                self.comm.Bcast(a, root=self.root)

    def broadcast_scalar(self, value: float) -> float:
        buf = np.array([value], np.float64)
        self.comm.Bcast(buf, root=self.root)
        return float(buf[0])

    # --- failure ------------------------------------------------------------------------------------
    @contextlib.contextmanager
    def guard(self):
        """Any exception on this rank ends the whole job with a message naming the rank, never a hang.

        The other ranks would otherwise wait forever in their next collective: MPI has no timeout of
        its own (see docs/distributed.md for ``MPIEXEC_TIMEOUT``)."""
        try:
            yield
        except NonFiniteLossError:
            raise  # every rank read the same reduced loss and raises the same error: nobody waits
        except BaseException as e:  # noqa: BLE001 - KeyboardInterrupt too: every rank must stop
            self.abort(e)

    def abort(self, exc: BaseException) -> None:
        msg = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
        sys.stderr.write(f"jitnn.distributed: rank {self.rank} of {self.size} failed, aborting every rank:\n"
                         f"{msg}")
        sys.stderr.flush()
        # MPI_Abort makes the launcher kill every rank at once, and hydra drops stdio it has not yet
        # forwarded: on a loaded machine the message above was lost (seen in CI). A pause lets the
        # launcher drain this rank's stderr first; an abort is rare, so the second costs nothing.
        time.sleep(ABORT_DRAIN_SECONDS)
        self.comm.Abort(1)
        os._exit(1)  # MPI_Abort may return before the launcher's kill arrives: this rank goes no further


__all__ = ["DataParallel", "balanced_slice", "gradient_arena", "same_arrays"]
