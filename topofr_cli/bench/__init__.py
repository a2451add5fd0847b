"""`topofr bench`: correctness of every device path against the CPU, training-step throughput (plain vs
TopoFR), its parts, the data loader, and multi-GPU equality and traffic, as one table and one JSON."""

from topofr_cli.bench.plan import SECTION_BUDGETS_S, BenchPlan, make_plan
from topofr_cli.bench.runner import SECTIONS, run_bench

__all__ = ["SECTIONS", "SECTION_BUDGETS_S", "BenchPlan", "make_plan", "run_bench"]
