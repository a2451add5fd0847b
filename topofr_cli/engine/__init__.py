"""Training engine: `trainer.train(recipe)` and the pieces it is built from.

preflight (checks before writing) → trainer (setup and loop) → step (one update, sync-free) with an
objective (plain or topofr_objective) → state/checkpoint (resume) → metrics/progress/validation
(monitoring); schedule (lr), distributed (process group, DDP hook), launch (torchrun).
"""
