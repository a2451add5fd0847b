"""0-dimensional persistence of a full distance matrix, computed on the tensor's own device.

The 0-dim persistence pairs of a Vietoris–Rips filtration are the n − 1 edges of a minimum spanning
tree, each edge's length being a death time (all births are 0) — docs/method.md §1.2.  We find the tree
with Borůvka's algorithm in a *fixed* number of rounds so that the CUDA path never waits on the
host:

* Edges are totally ordered by (length, edge index) where the index of {i, j}, i < j, is i·n + j.
  With a strict total order the minimum spanning tree is unique and Borůvka can never close a cycle,
  whatever ties the lengths have.
* Each round every component picks its cheapest outgoing edge; every component with a neighbour
  merges with at least one other, so the component count at least halves and ceil(log2 n) rounds
  always finish the tree.  Rounds after completion find no outgoing edge and change nothing (on the
  CPU, where a host check is free, the loop stops as soon as one component is left).
* Components are relabelled by pointer jumping over the "hook" forest, again with a fixed
  ceil(log2 n) number of jumps (enough for any tree depth below n).
* Each round's new edges go to a fixed-size buffer (rounds · n slots, unused ones at +inf), which
  is sorted by (length, index); the first n − 1 slots are the tree (no `nonzero`, whose output size
  would need a sync).
"""

from __future__ import annotations

import math

import torch

from topofr_cli.errors import TopofrError

__all__ = ["h0_pairs", "validate_distance_matrix", "death_times"]


def validate_distance_matrix(dist: torch.Tensor, name: str = "distance matrix") -> None:
    """Raise TopofrError unless `dist` is a finite, symmetric [n, n] or [b, n, n] float matrix.

    This costs host–device syncs, so the training loop calls `h0_pairs(..., validate=False)` on
    matrices it built itself (symmetric by construction).
    """
    if not isinstance(dist, torch.Tensor):
        raise TopofrError(f"{name}: expected a torch.Tensor, got {type(dist).__name__}")
    if dist.dim() not in (2, 3) or dist.shape[-1] != dist.shape[-2]:
        raise TopofrError(
            f"{name}: expected a square [n, n] or [b, n, n] matrix, got shape {tuple(dist.shape)}"
        )
    if not dist.is_floating_point():
        raise TopofrError(f"{name}: expected a floating-point matrix, got dtype {dist.dtype}")
    if dist.numel() == 0:
        return
    # One pass for the common case (a valid matrix): exact symmetry, then min and max together. NaN
    # fails both; only a failing matrix pays for the checks below, which say what is wrong where.
    if torch.equal(dist, dist.transpose(-1, -2)):
        low, high = torch.aminmax(dist)
        if bool((low >= 0) & (high < torch.finfo(dist.dtype).max)):
            return
    _explain_invalid(dist, name)


def _explain_invalid(dist: torch.Tensor, name: str) -> None:
    """The first problem of a matrix that failed the fast check, as a TopofrError."""
    finite = torch.isfinite(dist)
    if not bool(finite.all()):
        bad = torch.nonzero(~finite)[0].tolist()
        raise TopofrError(f"{name}: entry {tuple(bad)} is {dist[tuple(bad)].item()} (NaN/inf not allowed)")
    # Exact symmetry: Borůvka reads both halves, and the death times must be the matrix's entries.
    asym = dist != dist.transpose(-1, -2)
    if bool(asym.any()):
        bad = torch.nonzero(asym)[0].tolist()
        mirror = (*bad[:-2], bad[-1], bad[-2])
        raise TopofrError(
            f"{name}: not symmetric at {tuple(bad)}: {dist[tuple(bad)].item()} != {dist[mirror].item()}"
        )
    if bool((dist >= torch.finfo(dist.dtype).max).any()):
        raise TopofrError(
            f"{name}: entries must be below {torch.finfo(dist.dtype).max:g} (the dtype's maximum)"
        )
    if bool((dist < 0).any()):
        raise TopofrError(f"{name}: has negative entries (a distance matrix is non-negative)")
    raise TopofrError(f"{name}: not a valid distance matrix")  # the fast check's verdict stands


def _cheapest_outgoing_edge(
    dist: torch.Tensor, label: torch.Tensor, vertex: torch.Tensor, n: int, no_edge: int
) -> torch.Tensor:
    """Per component slot c (a vertex id), the index of its cheapest outgoing edge, or `no_edge`.

    dist [b, n, n], label [b, n] (component representative of each vertex). Returns [b, n] int64;
    slots that are not representatives hold `no_edge`.
    """
    # Hide same-component entries without a boolean [n, n] mask (comparison kernels are several
    # times slower than float arithmetic): with labels as floats, BIG − BIG·(l_v − l_u)² is BIG for
    # equal labels and ≤ 0 (or −inf) otherwise, so the maximum with it keeps every other entry exact.
    big = torch.finfo(dist.dtype).max
    label_f = label.to(dist.dtype)
    diff = label_f.unsqueeze(-1) - label_f.unsqueeze(-2)
    masked = torch.maximum(dist, torch.addcmul(dist.new_tensor(big), diff, diff, value=-big))
    # torch.min returns the first minimum of a row; along row v the edge index min(v,u)·n + max(v,u)
    # increases with u, so the first minimum is the (length, index)-smallest edge of v.
    length, other = masked.min(dim=-1)
    edge = torch.minimum(vertex, other) * n + torch.maximum(vertex, other)
    has_edge = length < big
    best_length = torch.full_like(length, big).scatter_reduce(
        1, label, length, reduce="amin", include_self=True
    )
    is_best = has_edge & (length == best_length.gather(1, label))
    candidate = torch.where(is_best, edge, torch.full_like(edge, no_edge))
    return torch.full_like(edge, no_edge).scatter_reduce(
        1, label, candidate, reduce="amin", include_self=True
    )


def _boruvka_edges(dist: torch.Tensor, stop_early: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Minimum-spanning-tree edges under the (length, index) order, in a fixed-size buffer.

    Returns (edge index, length), both [b, rounds · n]: every tree edge exactly once, the other
    slots hold index n·n and length +inf.
    """
    b, n, _ = dist.shape
    device = dist.device
    no_edge = n * n
    flat = dist.reshape(b, n * n)
    vertex = torch.arange(n, device=device).expand(b, n)
    label = vertex.clone()
    steps = max(1, math.ceil(math.log2(n)))
    found_edges, found_lengths = [], []
    for _ in range(steps):
        edge = _cheapest_outgoing_edge(dist, label, vertex, n, no_edge)
        valid = edge < no_edge
        safe_edge = torch.where(valid, edge, torch.zeros_like(edge))
        ends_label_i = label.gather(1, safe_edge // n)
        ends_label_j = label.gather(1, safe_edge % n)
        neighbour = torch.where(ends_label_i == vertex, ends_label_j, ends_label_i)
        parent = torch.where(valid, neighbour, vertex)
        # With a strict edge order the hook graph's only cycles are mutual pairs (both picked the
        # same edge): the smaller label of each pair becomes the root and drops its copy of the edge.
        mutual = valid & (parent.gather(1, parent) == vertex) & (vertex < parent)
        parent = torch.where(mutual, vertex, parent)
        keep = valid & ~mutual
        found_edges.append(torch.where(keep, edge, torch.full_like(edge, no_edge)))
        found_lengths.append(
            torch.where(keep, flat.gather(1, safe_edge), torch.full_like(flat[:, :n], math.inf))
        )
        for _ in range(steps):
            parent = parent.gather(1, parent)
        label = parent.gather(1, label)
        # On the CPU reading a flag costs nothing, and random data needs only ~log4(n) rounds of the
        # log2(n) budget; accelerators keep the fixed budget so they never wait on the host.
        if stop_early and bool((label == label[:, :1]).all()):
            break
    return torch.cat(found_edges, dim=1), torch.cat(found_lengths, dim=1)


def h0_pairs(
    dist: torch.Tensor,
    *,
    validate: bool = True,
    name: str = "distance matrix",
    fixed_rounds: bool | None = None,
) -> torch.Tensor:
    """The 0-dim persistence pairs (minimum-spanning-tree edges) of a full distance matrix.

    `dist` is [n, n] or [b, n, n], symmetric with a zero diagonal. Returns LongTensor [n − 1, 2]
    (or [b, n − 1, 2]) on `dist`'s device: rows (i, j) with i < j, ordered by non-decreasing length,
    ties by edge index i·n + j. The lengths `dist[i, j]` are the death times of docs/method.md §1.2 —
    equal to gudhi's 0-dim Vietoris–Rips deaths. `validate=False` skips the input checks, which are
    the only host–device synchronisations; `name` is how errors refer to the tensor.
    `fixed_rounds` (default: on everywhere but the CPU) always runs all ceil(log2 n) Borůvka rounds
    instead of stopping when the tree is complete; the result is the same.
    """
    if validate:
        validate_distance_matrix(dist, name)
    batched = dist.dim() == 3
    work = dist if batched else dist.unsqueeze(0)
    b, n, _ = work.shape
    if n < 2:
        empty = torch.zeros(b, 0, 2, dtype=torch.long, device=dist.device)
        return empty if batched else empty[0]
    # Half precision embeds exactly in float32, whose integers (the float labels) are exact to 2^24.
    work = work.detach()
    if work.dtype in (torch.float16, torch.bfloat16):
        work = work.float()
    if fixed_rounds is None:
        fixed_rounds = work.device.type != "cpu"
    edges, lengths = _boruvka_edges(work, stop_early=not fixed_rounds)
    # Sort by (length, index): by index first, then a stable sort by length; the n − 1 tree edges
    # come first because every unused slot has length +inf (inputs are finite).
    by_index = torch.sort(edges, dim=1).indices
    edges, lengths = edges.gather(1, by_index), lengths.gather(1, by_index)
    by_length = torch.sort(lengths, dim=1, stable=True).indices[:, : n - 1]
    edges = edges.gather(1, by_length)
    pairs = torch.stack([edges // n, edges % n], dim=-1)
    return pairs if batched else pairs[0]


def death_times(dist: torch.Tensor, pairs: torch.Tensor) -> torch.Tensor:
    """The lengths dist[i, j] of the pairs (i, j) from `h0_pairs`: [n − 1] or [b, n − 1]."""
    if dist.dim() == 2:
        return dist[pairs[:, 0], pairs[:, 1]]
    n = dist.shape[-1]
    flat = pairs[..., 0] * n + pairs[..., 1]
    return dist.reshape(dist.shape[0], n * n).gather(1, flat)
