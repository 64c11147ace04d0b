"""Time of one collective over `n` devices: the alpha-beta model of ring and tree algorithms.

With a link of bandwidth beta [bytes/s, per device, one direction] and a latency alpha [s] per
step (Thakur, Rabenseifner and Gropp, "Optimization of Collective Communication Operations in
MPICH", IJHPCA 2005; Patarasuk and Yuan 2009 for the bandwidth-optimal ring):

    all-reduce, ring         2 (n-1) alpha + 2 (n-1)/n * S / beta      S = the buffer on each device
    all-reduce, double tree  2 ceil(log2 n) alpha + 2 S / beta          (NCCL's trees, Sanders et al. 2009)
    all-gather, ring         (n-1) alpha + (n-1)/n * S / beta          S = the gathered output
    reduce-scatter, ring     (n-1) alpha + (n-1)/n * S / beta          S = the input before scattering
    all-to-all, pairwise     (n-1) alpha + (n-1)/n * S / beta          S = what each device sends (its own share included)
    send/recv                alpha + S / beta

Every function is jnp and differentiable in S, beta and alpha; n is a static int and n = 1
costs nothing. `bus_bandwidth` converts a time back to the NCCL-tests "bus bandwidth"
(algorithm bandwidth S/t times 2(n-1)/n for all-reduce, (n-1)/n for the others), the
number NCCL reports and which for a ring equals the link bandwidth when latency vanishes.
"""

from __future__ import annotations

import math

import jax.numpy as jnp
from jaxtyping import Array

from nets import fail

ALGORITHMS = ("ring", "tree")
COLLECTIVES = ("all_reduce", "all_gather", "reduce_scatter", "all_to_all")


def _check_size(n: int) -> None:
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        fail("n", n, "must be a positive integer (devices in the group)")


def all_reduce_s(nbytes, n: int, bandwidth, latency, algorithm: str = "ring") -> Array:
    """Seconds to all-reduce `nbytes` on each of `n` devices (module docstring)."""
    _check_size(n)
    if algorithm not in ALGORITHMS:
        fail("algorithm", algorithm, f"must be one of {', '.join(ALGORITHMS)}")
    if n == 1:
        return jnp.zeros_like(jnp.asarray(nbytes / bandwidth))
    if algorithm == "tree":
        return 2 * math.ceil(math.log2(n)) * latency + 2 * nbytes / bandwidth
    return 2 * (n - 1) * latency + 2 * (n - 1) / n * nbytes / bandwidth


def _one_pass(nbytes, n: int, bandwidth, latency) -> Array:
    _check_size(n)
    if n == 1:
        return jnp.zeros_like(jnp.asarray(nbytes / bandwidth))
    return (n - 1) * latency + (n - 1) / n * nbytes / bandwidth


def all_gather_s(nbytes, n: int, bandwidth, latency) -> Array:
    """Seconds to all-gather an output of `nbytes` (each device holds nbytes / n before)."""
    return _one_pass(nbytes, n, bandwidth, latency)


def reduce_scatter_s(nbytes, n: int, bandwidth, latency) -> Array:
    """Seconds to reduce-scatter an input of `nbytes` (each device keeps nbytes / n)."""
    return _one_pass(nbytes, n, bandwidth, latency)


def all_to_all_s(nbytes, n: int, bandwidth, latency) -> Array:
    """Seconds for an all-to-all in which each device sends `nbytes` in all (1/n of it to itself)."""
    return _one_pass(nbytes, n, bandwidth, latency)


def send_recv_s(nbytes, bandwidth, latency) -> Array:
    """Seconds to send `nbytes` to one peer."""
    return latency + nbytes / bandwidth


def collective_s(kind: str, nbytes, n: int, bandwidth, latency) -> Array:
    """The ring time of collective `kind` (one of COLLECTIVES)."""
    times = {"all_reduce": all_reduce_s, "all_gather": all_gather_s, "reduce_scatter": reduce_scatter_s,
             "all_to_all": all_to_all_s}
    if kind not in times:
        fail("collective", kind, f"must be one of {', '.join(COLLECTIVES)}")
    return times[kind](nbytes, n, bandwidth, latency)


def bus_bandwidth(kind: str, nbytes, n: int, seconds) -> Array:
    """NCCL-tests bus bandwidth [bytes/s] of collective `kind` moving `nbytes` in `seconds`."""
    if kind not in COLLECTIVES:
        fail("collective", kind, f"must be one of {', '.join(COLLECTIVES)}")
    _check_size(n)
    factor = 2 * (n - 1) / n if kind == "all_reduce" else (n - 1) / n
    return nbytes / seconds * factor
