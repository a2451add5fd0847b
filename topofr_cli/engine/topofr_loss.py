"""`TopoFRLoss`: the TopoFR objective as one module for somebody else's training loop.

The engine trains with `TopoFRObjective` behind Partial FC; this wraps the same objective for a loop
that has its own margin head (arcface_torch style): it takes the logits that head produced, derives
the per-sample terms the objective reads (cross-entropy, p_gt, entropy), and returns the loss.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from topofr_cli.config import PTSAConfig, RSPConfig, SDEConfig, TopoFRConfig
from topofr_cli.engine.topofr_objective import TopoFRObjective
from topofr_cli.errors import TopofrError
from topofr_cli.models.partial_fc import ClassifierOutput
from topofr_cli.topology.ptsa import FORMS

# docs/method.md §1.3: H = −Σ_c p log(p + ε), the same ε as the Partial FC classifier's entropy
ENTROPY_EPS = 1e-5


def classifier_terms(logits: torch.Tensor, labels: torch.Tensor) -> ClassifierOutput:
    """Per-sample (cross-entropy, p_gt, entropy) of margin logits [B, C] that hold every class.

    The same terms `PartialFC` returns; cross-entropy carries the gradient, p_gt and entropy do not.
    """
    if logits.dim() != 2 or labels.shape != (logits.shape[0],):
        raise TopofrError(
            f"TopoFRLoss: expected logits [B, C] and labels [B], got {tuple(logits.shape)} "
            f"and {tuple(labels.shape)}"
        )
    logits = logits.float()
    labels = labels.long()
    ce = F.cross_entropy(logits, labels, reduction="none")
    with torch.no_grad():
        probs = logits.softmax(dim=1)
        p_true = probs.gather(1, labels[:, None]).squeeze(1)
        entropy = -(probs * torch.log(probs + ENTROPY_EPS)).sum(dim=1)
    return ClassifierOutput(ce=ce, p_true=p_true, entropy=entropy, labels=labels)


class TopoFRLoss(nn.Module):
    """The TopoFR loss (docs/method.md §1): L = mean(w1 · w2 · CE) + α · PTSA(x, z), inputs perturbed by RSP.

    For a training loop that already has a backbone and a margin head (ArcFace, CosFace, …):

    1. `x_backbone = loss_fn.perturb(images)`: Random Structure Perturbation of the clean batch
       (float [B, 3, H, W] in [-1, 1]); feed the result to the backbone.
    2. `loss = loss_fn(images, embeddings, logits, labels)`: `images` is the *clean* batch (PTSA's
       input space), `embeddings` the backbone's [B, E] output, `logits` the margin head's [B, C]
       output over every class, `labels` [B]. Returns a scalar; `loss_fn.last_terms` holds the
       detached parts (`loss_cls`, `loss_topo`, `latent_scale`, `gum_pi`, `gamma_mean`, `sds_mean`).

    The loss has one parameter of its own, the latent scale λ of PTSA: give `loss_fn.parameters()` to
    an optimizer (the recipes use the backbone's learning rate × `scale_lr_multiplier`, 0.01).

    Under DistributedDataParallel use one per process: each rank's loss covers its own batch (the
    SDE mixture is fitted on it, PTSA compares its samples) and DDP averages the gradients.

    Example (runs as written; a test executes it):

    >>> import torch
    >>> import torch.nn.functional as F
    >>> from topofr_cli import CombinedMarginHead, TopoFRLoss, create_backbone
    >>> _ = torch.manual_seed(0)
    >>> backbone = create_backbone("mbf", embedding_size=64)
    >>> weight = torch.nn.Parameter(torch.randn(10, 64) * 0.01)     # 10 classes
    >>> head = CombinedMarginHead(scale=64.0, m2=0.5)               # ArcFace
    >>> loss_fn = TopoFRLoss(alpha=0.1)
    >>> optimizer = torch.optim.SGD([
    ...     {"params": [*backbone.parameters(), weight], "lr": 0.1},
    ...     {"params": loss_fn.parameters(), "lr": 0.001}], momentum=0.9)
    >>> images = torch.rand(8, 3, 112, 112) * 2 - 1                 # a clean batch in [-1, 1]
    >>> labels = torch.randint(0, 10, (8,))
    >>> embeddings = backbone(loss_fn.perturb(images))
    >>> logits = head(F.linear(F.normalize(embeddings), F.normalize(weight)), labels)
    >>> loss = loss_fn(images, embeddings, logits, labels)
    >>> loss.backward()
    >>> optimizer.step()
    >>> sorted(loss_fn.last_terms)
    ['gamma_mean', 'gum_pi', 'latent_scale', 'loss_cls', 'loss_topo', 'sds_mean']
    >>> bool(torch.isfinite(loss))
    True
    """

    def __init__(
        self,
        *,
        alpha: float = 0.1,
        form: str = "official",
        ptsa: bool = True,
        sde: bool = True,
        temperature: float = 1.0,
        rsp: bool = True,
        rsp_prob: float = 0.2,
    ) -> None:
        super().__init__()
        if form not in FORMS:
            raise TopofrError(f"TopoFRLoss: form must be one of {', '.join(FORMS)}, got {form!r}")
        if alpha < 0 or temperature <= 0:
            raise TopofrError(
                f"TopoFRLoss: need alpha >= 0 and temperature > 0, got {alpha} and {temperature}"
            )
        config = TopoFRConfig(
            enabled=True,
            compat="fixed",
            ptsa=PTSAConfig(enabled=ptsa, form=form, alpha=alpha),  # type: ignore[arg-type]
            rsp=RSPConfig(enabled=rsp, prob=rsp_prob),
            sde=SDEConfig(enabled=sde, temperature=temperature),
        )
        self.objective = TopoFRObjective(config)
        self.last_terms: dict[str, torch.Tensor] = {}
        self._calls = 0

    def perturb(self, images: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """The backbone's input: RSP applied to the clean batch (the batch itself when `rsp=False`)."""
        return self.objective.perturb(images, generator)[0]  # type: ignore[arg-type]

    def forward(
        self, images: torch.Tensor, embeddings: torch.Tensor, logits: torch.Tensor, labels: torch.Tensor
    ) -> torch.Tensor:
        output = classifier_terms(logits, labels)
        loss, terms = self.objective(
            x_topology=images, embeddings=embeddings.float(), output=output, step=self._calls
        )
        self._calls += 1
        self.last_terms = terms
        return loss
