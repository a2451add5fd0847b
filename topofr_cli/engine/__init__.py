"""Training engine: `trainer.train(recipe)` and the pieces it is built from.

preflight (checks before writing) → trainer (run folder, data, loop) → build (parts and step from the
recipe; also what `topofr bench` times) → loop (batches, one step each) with hooks
(metrics, bad-step guard, checkpoints, verification) → step (one update, sync-free) with an objective
(plain or topofr_objective) → state (training parts ⇄ `artifacts.Checkpoint`, resume), rng;
schedule (lr), distributed (process group, DDP hook), launch (torchrun), progress/train_log/validation.
The run folder's files (metrics.csv, train.log, tensorboard/, recipe.yaml) are written by
`artifacts.run_dir`.
"""
