"""Training objectives: what the step minimises, given the batch, the embeddings and the classifier output.

The step (engine/step.py) owns precision, gradients and the optimizer; an objective owns only the loss.
`PlainObjective` is ArcFace/CosFace (the combined-margin head inside Partial FC): L = mean(CE) over the
global batch.
"""

from __future__ import annotations

from typing import Any

import torch


class PlainObjective(torch.nn.Module):
    """mean over the global batch of the per-sample margin cross-entropy (REFERENCE §1.3, without SDE)."""

    term_names: tuple[str, ...] = ()

    def perturb(self, x: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """(backbone input, the topology loss's input space): both the clean batch here."""
        return x, x

    def forward(self, *, x_topology: torch.Tensor, embeddings: torch.Tensor, output: Any,
                step: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        return output.ce.float().mean(), {}


def build_objective(recipe: Any, ctx: Any) -> torch.nn.Module:
    """The objective the recipe asks for (plain margin loss until TopoFR is enabled)."""
    if recipe.topofr.enabled:
        from topofr_cli.engine.topofr_objective import TopoFRObjective

        return TopoFRObjective(recipe.topofr, world_size=ctx.world_size)
    return PlainObjective()
