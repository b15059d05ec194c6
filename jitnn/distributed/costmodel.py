"""A cost model of one data-parallel step: compute from measured step times, communication from the
ring-allreduce alpha-beta model (Thakur, Rabenseifner & Gropp 2005, https://doi.org/10.1177/1094342005051521).

A ring allreduce of n bytes over p ranks is a reduce-scatter and an allgather, each p-1 rounds of n/p
bytes, so

    T_allreduce(n, p) = 2 (p - 1) alpha + 2 (p - 1) / p * n * beta

with alpha the per-message latency and beta the seconds per byte (1 / bandwidth; the reduction's own
arithmetic, (p-1)/p * n * gamma, is folded into beta when beta is measured). Synchronous data
parallelism with a fixed per-rank batch b (weak scaling) then takes

    T_step(p) = T_compute(b) + T_allreduce(grad_bytes, p) - overlap

and its scaling efficiency is T_compute(b) / T_step(p). ``overlap`` is the part of the allreduce hidden
behind the backward pass; jitnn reduces once per step after the backward pass, so it is 0 here.

Stragglers: the allreduce starts when the *last* rank arrives, so a step costs the slowest of p
compute times, not their mean. Given per-step compute times measured as a rank would run them (beside
other ranks' work), ``StepModel`` takes E[max of p independent draws] from their empirical distribution:
with the m samples sorted, E[max] = sum_i x_(i) ((i/m)^p - ((i-1)/m)^p), exact for that distribution.
It grows with p (slowly: toward the largest sample), which is how jitter on one node becomes lost time
on 512.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class AllreduceModel:
    """Ring-allreduce time for ``nbytes`` over ``p`` ranks: alpha seconds a message, beta seconds a byte."""

    alpha: float
    beta: float

    def time(self, nbytes: float, p: int) -> float:
        if p <= 1:
            return 0.0
        return 2 * (p - 1) * self.alpha + 2 * (p - 1) / p * nbytes * self.beta

    @classmethod
    def fit(cls, nbytes, seconds, p: int) -> AllreduceModel:
        """Least-squares alpha and beta from allreduce timings of several sizes over ``p`` ranks."""
        n = np.asarray(nbytes, np.float64)
        t = np.asarray(seconds, np.float64)
        if n.shape != t.shape or n.size < 2 or p < 2:
            raise ValueError("fit needs >= 2 (bytes, seconds) pairs of equal length and p >= 2")
        design = np.stack([np.full_like(n, 2 * (p - 1)), 2 * (p - 1) / p * n], axis=1)
        # Relative errors: the latency term matters at small sizes, where absolute errors are tiny.
        w = 1.0 / t
        (alpha, beta), *_ = np.linalg.lstsq(design * w[:, None], t * w, rcond=None)
        return cls(max(float(alpha), 0.0), max(float(beta), 0.0))

    @classmethod
    def network(cls, gbit_per_s: float, latency_us: float) -> AllreduceModel:
        """A network link: bandwidth in Gbit/s, one-way message latency in microseconds."""
        return cls(latency_us * 1e-6, 8.0 / (gbit_per_s * 1e9))


def expected_max(samples, p: int) -> float:
    """E[max of p independent draws] from the empirical distribution of ``samples`` (exact, no sampling)."""
    x = np.sort(np.asarray(samples, np.float64).ravel())
    if x.size == 0 or p < 1:
        raise ValueError(f"expected_max needs samples and p >= 1, received: {x.size} samples, p={p}")
    cdf = np.arange(x.size + 1, dtype=np.float64) / x.size
    return float(np.dot(x, cdf[1:] ** p - cdf[:-1] ** p))


@dataclass(frozen=True)
class StepModel:
    """One rank's step: ``compute_s`` seconds of forward, backward and update; ``grad_bytes`` to reduce.

    ``compute_samples`` (optional): per-step compute times, measured under the conditions a rank runs in.
    With them a step over p ranks waits for the slowest rank (``expected_max``) and ``compute_s`` is
    their mean; without them every rank takes exactly ``compute_s``.
    """

    compute_s: float
    grad_bytes: int
    compute_samples: tuple = ()

    @classmethod
    def from_samples(cls, samples, grad_bytes: int) -> StepModel:
        x = tuple(float(t) for t in np.asarray(samples, np.float64).ravel())
        if not x:
            raise ValueError("from_samples needs at least one step time")
        return cls(float(np.mean(x)), grad_bytes, x)

    def slowest_compute(self, p: int) -> float:
        """The compute the allreduce waits for: the expected slowest of p ranks."""
        return expected_max(self.compute_samples, p) if self.compute_samples else self.compute_s

    def time(self, comm: AllreduceModel, p: int, overlap_s: float = 0.0) -> float:
        return self.slowest_compute(p) + max(0.0, comm.time(self.grad_bytes, p) - overlap_s)

    def efficiency(self, comm: AllreduceModel, p: int, overlap_s: float = 0.0) -> float:
        return self.compute_s / self.time(comm, p, overlap_s)


def predict_scaling(step: StepModel, comm: AllreduceModel, nodes=(8, 64, 512)) -> list[dict]:
    """Per node count: step time, the slowest rank's compute, allreduce time and weak-scaling efficiency."""
    return [{"nodes": p, "step_s": step.time(comm, p), "compute_s": step.slowest_compute(p),
             "allreduce_s": comm.time(step.grad_bytes, p), "efficiency": step.efficiency(comm, p)}
            for p in nodes]


__all__ = ["AllreduceModel", "StepModel", "expected_max", "predict_scaling"]
