"""Benchmark: 0-dim persistence (h0_pairs) against Python Kruskal, scipy's MST and gudhi; GUM and RSP times.

    python benchmarks/persistence.py [--sizes 128 512 1024] [--threads 1] [--check-syncs]

Every method's death times are checked against gudhi's before timing. CUDA timings (when a GPU is
present) synchronise around each measured call. `--check-syncs` runs the hot paths once under
torch.cuda.set_sync_debug_mode("error") to prove they never wait on the host.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable

import gudhi
import numpy as np
import torch
from rich.console import Console
from rich.table import Table
from scipy.sparse.csgraph import minimum_spanning_tree

from topofr_cli.augment import RandomStructurePerturbation
from topofr_cli.bench.timing import median_ms, random_distances
from topofr_cli.hardness import gum_posterior, sde_statistic
from topofr_cli.topology import death_times, h0_pairs, ptsa_loss

console = Console()


def kruskal_deaths(dist: np.ndarray) -> np.ndarray:
    """The reference's algorithm: sort all n(n+1)/2 edges (diagonal included), then a Python union-find."""
    n = len(dist)
    rows, cols = np.triu_indices(n)
    order = np.argsort(dist[rows, cols], kind="stable")
    parent = list(range(n))

    def find(a: int) -> int:
        while parent[a] != a:
            parent[a] = parent[parent[a]]
            a = parent[a]
        return a

    deaths = []
    for k in order.tolist():
        i, j = int(rows[k]), int(cols[k])
        ri, rj = find(i), find(j)
        if ri != rj:
            parent[ri] = rj
            deaths.append(dist[i, j])
    return np.asarray(deaths)


def scipy_deaths(dist: np.ndarray) -> np.ndarray:
    # minimum_spanning_tree treats 0 as "no edge": lift zero off-diagonal lengths to the smallest
    # positive float so duplicate points stay connected, then read lengths from the real matrix.
    work = np.where(dist == 0, np.finfo(dist.dtype).tiny, dist)
    np.fill_diagonal(work, 0)
    tree = minimum_spanning_tree(work).tocoo()
    return np.sort(dist[tree.row, tree.col])


def gudhi_deaths(dist: np.ndarray) -> np.ndarray:
    tree = gudhi.RipsComplex(distance_matrix=dist, max_edge_length=float("inf")).create_simplex_tree(
        max_dimension=1
    )
    pairs = tree.persistence(min_persistence=-1)
    return np.sort([death for dim, (_, death) in pairs if dim == 0 and np.isfinite(death)])


def timed(fn: Callable[[], object], repeats: int, cuda: bool = False) -> float:
    """Median wall time of fn in milliseconds (after one warm-up call): topofr bench's timer."""
    return median_ms(fn, repeats, torch.device("cuda" if cuda else "cpu"))


distance_matrix = random_distances


def persistence_table(sizes: list[int], repeats: int) -> None:
    cuda = torch.cuda.is_available()
    table = Table(title="0-dim persistence of one n×n matrix (ms, median)")
    columns = [
        "n", "Python Kruskal", "scipy MST", "gudhi", "h0_pairs CPU", "speedup CPU", "CPU fixed rounds",
        "+ validation (default)",
    ]  # fmt: skip
    for column in columns:
        table.add_column(column, justify="right")
    if cuda:
        table.add_column("h0_pairs CUDA", justify="right")
        table.add_column("speedup CUDA", justify="right")
    for n in sizes:
        dist = distance_matrix(n, seed=n)
        dist_np = dist.double().numpy()
        reference = gudhi_deaths(dist_np)
        ours = death_times(dist, h0_pairs(dist)).double().numpy()
        for name, deaths in [
            ("h0_pairs", ours),
            ("kruskal", kruskal_deaths(dist_np)),
            ("scipy", scipy_deaths(dist_np)),
        ]:
            if not np.array_equal(np.sort(deaths), reference):
                raise SystemExit(f"n={n}: {name} death times differ from gudhi's")
        kruskal = timed(lambda d=dist_np: kruskal_deaths(d), max(1, repeats // 3))
        scipy_ms = timed(lambda d=dist_np: scipy_deaths(d), repeats)
        gudhi_ms = timed(lambda d=dist_np: gudhi_deaths(d), max(1, repeats // 3))
        cpu = timed(lambda d=dist: h0_pairs(d, validate=False), repeats)
        # The accelerator algorithm (all ceil(log2 n) rounds, no early stop) timed on the CPU too.
        fixed = timed(lambda d=dist: h0_pairs(d, validate=False, fixed_rounds=True), repeats)
        checked = timed(lambda d=dist: h0_pairs(d), repeats)  # the default: input checks, one pass
        row = [
            str(n),
            f"{kruskal:.1f}",
            f"{scipy_ms:.1f}",
            f"{gudhi_ms:.1f}",
            f"{cpu:.1f}",
            f"{kruskal / cpu:.1f}×",
            f"{fixed:.1f} ({kruskal / fixed:.1f}×)",
            f"{checked:.1f} (+{checked - cpu:.1f})",
        ]
        if cuda:
            on_gpu = dist.cuda()
            gpu = timed(lambda d=on_gpu: h0_pairs(d, validate=False), repeats, cuda=True)
            row += [f"{gpu:.2f}", f"{kruskal / gpu:.0f}×"]
        table.add_row(*row)
    console.print(table)


def other_timings(repeats: int) -> None:
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    table = Table(title="GUM posterior, RSP and the PTSA loss (ms, median)")
    for column in ["what", *devices]:
        table.add_column(column, justify="right")
    rows: dict[str, list[str]] = {}
    for device in devices:
        cuda = device == "cuda"
        for b in (128, 512):
            entropy = (
                torch.rand(b, generator=torch.Generator().manual_seed(b), dtype=torch.float64).to(device) * 5
            )
            h = sde_statistic(entropy)
            gum = gum_posterior(h)
            label = f"GUM B={b} ({gum.iterations} iterations)"
            rows.setdefault(label, []).append(
                f"{timed(lambda h=h: gum_posterior(h, validate=False), repeats, cuda):.2f}"
            )
        x = (torch.rand(128, 3, 112, 112, generator=torch.Generator().manual_seed(1)) * 2 - 1).to(device)
        rsp = RandomStructurePerturbation(0.2)
        gen = torch.Generator(device=device)
        perturb = lambda x=x, rsp=rsp, gen=gen: rsp(x, gen.manual_seed(0))  # noqa: E731
        rows.setdefault("RSP B=128 (ξ=0.2)", []).append(f"{timed(perturb, repeats, cuda):.2f}")
        z = torch.randn(128, 512, device=device, requires_grad=True)
        rows.setdefault("PTSA loss fwd+bwd B=128", []).append(
            f"{timed(lambda x=x, z=z: ptsa_loss(x, z).backward(), repeats, cuda):.2f}"
        )
    for label, values in rows.items():
        table.add_row(label, *values)
    console.print(table)


def check_syncs() -> None:
    """Run the hot paths with CUDA sync detection on: any host–device synchronisation raises."""
    if not torch.cuda.is_available():
        console.print("[yellow]--check-syncs needs CUDA; skipped[/]")
        return
    x = torch.rand(128, 3, 112, 112, device="cuda") * 2 - 1
    z = torch.randn(128, 512, device="cuda", requires_grad=True)
    dist = distance_matrix(512, seed=0).cuda()
    gen = torch.Generator(device="cuda").manual_seed(0)
    rsp = RandomStructurePerturbation(0.2)
    h = sde_statistic(torch.rand(128, device="cuda", dtype=torch.float64))
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        h0_pairs(dist, validate=False)
        h0_pairs(dist.reshape(1, 512, 512).expand(3, 512, 512).contiguous(), validate=False)
        ptsa_loss(x, z, "official").backward()
        ptsa_loss(x, z, "symmetric").backward()
        rsp(x, gen)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    # The GUM synchronises once per `check_every` iterations (and once for the iteration count).
    torch.cuda.set_sync_debug_mode("warn")
    import warnings

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = gum_posterior(h, validate=False, check_every=16)
    torch.cuda.set_sync_debug_mode("default")
    console.print(
        f"[green]no host–device syncs[/] in h0_pairs, ptsa_loss (fwd+bwd) and RSP; GUM: "
        f"{len(caught)} syncs for {result.iterations} iterations"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[128, 512, 1024], help="matrix sizes n")
    parser.add_argument("--repeats", type=int, default=9, help="timed calls per measurement (median)")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--check-syncs", action="store_true", help="verify the CUDA hot paths never sync")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else "no GPU"
    console.print(f"torch {torch.__version__}, {args.threads} CPU thread(s), {device}")
    if args.check_syncs:
        check_syncs()
    persistence_table(args.sizes, args.repeats)
    other_timings(args.repeats)


if __name__ == "__main__":
    main()
