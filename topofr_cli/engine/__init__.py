"""Training engine: `trainer.train(recipe)` and the pieces it is built from.

preflight (checks before writing) → trainer (setup) → loop (batches, one step each) with hooks
(metrics, bad-step guard, checkpoints, verification) → step (one update, sync-free) with an objective
(plain or topofr_objective) → state (training parts ⇄ `artifacts.Checkpoint`, resume), rng;
schedule (lr), distributed (process group, DDP hook), launch (torchrun), metrics/progress/validation.
"""
