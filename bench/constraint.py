"""Forward+backward time and peak memory of `MaxConstraint` against `dense_max_constraint`.

Random GO-shaped DAGs (seeded; depth over 10, some nodes with two or three parents) with K in
{500, 4000} nodes, batches B in {4, 32, 128}, one process, printed as a markdown table with the
ratios dense / ours. Inputs are tie-free per row, so the two gradients must agree. Time: median
wall time of `out = f(p); out.backward(g)` on a machine that may be shared. Peak memory: the
torch CPU allocator's allocation and free events recorded by `torch.profiler(profile_memory=True)`,
summed in time order; the peak is what forward+backward allocates on top of the inputs. A dense
case whose estimated peak (2 B K^2 bytes-per-element: the max's gradient and the where's gradient,
both (B, K, K), are alive together in backward) exceeds `--max-gb` is not run.

    OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 .venv/bin/python bench/constraint.py \
        [--out bench/results/constraint.md] [--dtype float32] [--max-gb 6]
"""

from __future__ import annotations

import argparse
import os
import shlex
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch.profiler import ProfilerActivity, profile

from hml_finetune.hml.constraint import MaxConstraint, dense_max_constraint
from hml_finetune.hml.hierarchy import Hierarchy

SIZES = (500, 4000)
BATCHES = (4, 32, 128)


def go_like_dag(K: int, levels: int = 14, seed: int = 0) -> Hierarchy:
    """A single-rooted DAG of K nodes on `levels` levels below the root, level sizes bell-shaped.

    Each node has one parent on the level just above (so depth = level, the max depth is
    `levels`), plus with probability 0.3 a second and 0.05 a third parent on any higher level.
    """
    rng = np.random.default_rng(seed)
    shape = np.exp(-0.5 * ((np.arange(1, levels + 1) - levels / 2.5) / (levels / 4)) ** 2)
    sizes = np.maximum(1, np.floor(shape / shape.sum() * (K - 1))).astype(int)
    sizes[np.argmax(sizes)] += (K - 1) - sizes.sum()
    by_level: list[list[int]] = [[0]]
    next_id = 1
    for size in sizes:
        by_level.append(list(range(next_id, next_id + size)))
        next_id += size
    edges: list[tuple[int, int]] = []
    for lvl in range(1, levels + 1):
        above = [n for level in by_level[:lvl] for n in level]
        for node in by_level[lvl]:
            parents = {int(rng.choice(by_level[lvl - 1]))}
            extra = int(rng.random() < 0.3) + int(rng.random() < 0.05)
            while len(parents) < 1 + extra and len(above) > len(parents):
                parents.add(int(rng.choice(above)))
            edges += [(p, node) for p in sorted(parents)]
    names = [f"n{i}" for i in range(K)]
    return Hierarchy(names, [(names[p], names[c]) for p, c in edges])


def forward_backward(
    fn: Callable[[torch.Tensor], torch.Tensor], p: torch.Tensor, g: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """One forward+backward pass; returns the detached output and p's gradient (no graph kept)."""
    out = fn(p)
    out.backward(g)
    grad, p.grad = p.grad, None
    return out.detach(), grad


def median_seconds(fn, p: torch.Tensor, g: torch.Tensor, budget_s: float = 1.0) -> float:
    """Median wall time after one warm-up: at least 3 runs, more while under `budget_s`, at most 50."""
    forward_backward(fn, p, g)
    times: list[float] = []
    while len(times) < 3 or (sum(times) < budget_s and len(times) < 50):
        start = time.perf_counter()
        forward_backward(fn, p, g)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def peak_bytes(fn, p: torch.Tensor, g: torch.Tensor) -> int:
    """Peak of the torch CPU allocator's running total (allocations minus frees) in one pass."""
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        forward_backward(fn, p, g)
    events = [e for e in prof.profiler.kineto_results.events() if e.name() == "[memory]"]
    current = peak = 0
    for _, nbytes in sorted((e.start_ns(), e.nbytes()) for e in events):
        current += nbytes
        peak = max(peak, current)
    return peak


def human(nbytes: float) -> str:
    for unit, size in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if nbytes >= size:
            return f"{nbytes / size:.1f} {unit}"
    return f"{nbytes:.0f} B"


def bench_case(h: Hierarchy, R: torch.Tensor, B: int, dtype: torch.dtype, max_bytes: float) -> str:
    """One table row: ours and dense time and peak, ratios, and whether the outputs agree."""
    K = len(h)
    gen = torch.Generator().manual_seed(B * 7919 + K)
    ranks = torch.rand(B, K, generator=gen).argsort(dim=1)  # tie-free rows: grads comparable
    p = ((ranks + 1) / (K + 1)).to(dtype).requires_grad_()
    g = torch.randn(B, K, dtype=dtype, generator=gen)
    mcm = MaxConstraint(h)
    t_ours, m_ours = median_seconds(mcm, p, g), peak_bytes(mcm, p, g)
    cells = [f"{K}", f"{B}", f"{t_ours * 1e3:.2f} ms", human(m_ours)]
    estimate = 2 * B * K * K * p.element_size()
    if estimate > max_bytes:
        return (
            "| " + " | ".join(cells + [f"would need ~{human(estimate)}, not run"] + [""] * 4) + " |"
        )
    dense = lambda x: dense_max_constraint(x, R)  # noqa: E731
    t_dense, m_dense = median_seconds(dense, p, g), peak_bytes(dense, p, g)
    (out_o, grad_o), (out_d, grad_d) = forward_backward(mcm, p, g), forward_backward(dense, p, g)
    equal = torch.equal(out_o, out_d) and torch.allclose(
        grad_o, grad_d, atol=1e-5 * grad_d.abs().max()
    )
    cells += [
        f"{t_dense * 1e3:.1f} ms",
        human(m_dense),
        f"{t_dense / t_ours:.0f}x",
        f"{m_dense / max(m_ours, 1):.0f}x",
        "yes" if equal else "NO",
    ]
    return "| " + " | ".join(cells) + " |"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="bench/results/constraint.md")
    parser.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    parser.add_argument("--max-gb", type=float, default=6.0, help="skip dense cases above this")
    args = parser.parse_args(argv)
    dtype = getattr(torch, args.dtype)
    torch.manual_seed(0)
    threads = torch.get_num_threads()
    env = " ".join(
        f"{v}={os.environ.get(v, 'unset')}" for v in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")
    )
    given = sys.argv[1:] if argv is None else argv
    lines = [
        f"Command: `{env} .venv/bin/python {shlex.join(['bench/constraint.py', *given])}`",
        "",
        f"torch {torch.__version__}, CPU, {threads} thread(s), dtype {args.dtype}. Time: median "
        "wall time of forward+backward. Peak: torch CPU allocator bytes allocated on top of the "
        "inputs during one forward+backward (torch.profiler memory events, summed in time "
        "order). Dense cases whose estimated peak 2·B·K²·bytes exceeds "
        f"{args.max_gb:g} GB are not run. The published `get_constr_out` casts to float64, "
        "which doubles the dense peaks in float32 terms.",
        "",
    ]
    for K in SIZES:
        h = go_like_dag(K, seed=K)
        multi = sum(len(h.parents[n]) > 1 for n in h.nodes)
        lines.append(
            f"- K={K}: {h.num_edges} edges, max depth {int(h.depth_array.max())}, "
            f"{multi} nodes with 2+ parents, {MaxConstraint(h).num_levels} height levels"
        )
    lines += [
        "",
        "| K | B | ours time | ours peak | dense time | dense peak | time ratio | peak ratio "
        "| same output and gradient |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    print("\n".join(lines), flush=True)
    for K in SIZES:
        h = go_like_dag(K, seed=K)
        R = torch.from_numpy(h.descendant_matrix())
        for B in BATCHES:
            lines.append(bench_case(h, R, B, dtype, args.max_gb * 1e9))
            print(lines[-1], flush=True)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
