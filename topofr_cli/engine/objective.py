"""Training objectives: what the step minimises, given the batch, the embeddings and the classifier output.

The step (engine/step.py) owns precision, gradients and the optimizer; an objective owns only the loss
and, through its `state_dict`, its own learned state (TopoFR's latent scale λ), which the checkpoint
stores once. `PlainObjective` is ArcFace/CosFace (the combined-margin head inside Partial FC):
L = mean(CE) over the global batch.
"""

from __future__ import annotations

from typing import Any, Protocol

import torch


class Objective(Protocol):
    """What the engine needs from an objective (both objectives are `torch.nn.Module`s)."""

    term_names: tuple[str, ...]  # extra metrics.csv columns, one per entry of the returned terms

    def perturb(self, x: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """(backbone input, the topology loss's input space) for a normalised batch."""
        ...

    def __call__(
        self, *, x_topology: torch.Tensor, embeddings: torch.Tensor, output: Any, step: int
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """(loss to minimise, detached per-term tensors to log)."""
        ...

    def synchronize_gradients(self) -> None:
        """Reduce across ranks the gradients of parameters that live outside DDP (after backward)."""
        ...

    def parameters(self, recurse: bool = True) -> Any: ...

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state_dict: Any, strict: bool = True) -> Any: ...

    def to(self, *args: Any, **kwargs: Any) -> Any: ...


class PlainObjective(torch.nn.Module):
    """mean over the global batch of the per-sample margin cross-entropy (docs/method.md §1.3, without SDE)."""

    term_names: tuple[str, ...] = ()

    def perturb(self, x: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """(backbone input, the topology loss's input space): both the clean batch here."""
        return x, x

    def synchronize_gradients(self) -> None:
        """No parameters of its own."""

    def forward(
        self, *, x_topology: torch.Tensor, embeddings: torch.Tensor, output: Any, step: int
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        return output.ce.float().mean(), {}


def build_objective(recipe: Any, ctx: Any) -> Objective:
    """The objective the recipe asks for (plain margin loss until TopoFR is enabled)."""
    if recipe.topofr.enabled:
        from topofr_cli.engine.step import AUTOCAST_DTYPES, effective_precision
        from topofr_cli.engine.topofr_objective import TopoFRObjective

        autocast_dtype = AUTOCAST_DTYPES[effective_precision(recipe.train.precision, ctx.device)]
        return TopoFRObjective(recipe.topofr, world_size=ctx.world_size, autocast_dtype=autocast_dtype)
    return PlainObjective()
