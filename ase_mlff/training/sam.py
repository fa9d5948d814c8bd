"""Sharpness-aware minimisation (SAM, Foret et al., ICLR 2021) around any base optimizer.

Paper 004 (Zheng & Fung, "Improving reliability of MLIPs with physics-informed
pretraining", § 3.2 and Tables 1-2, "MLIP + SAM") uses SAM as the robustness baseline,
following Allegro-Legato (Ibayashi et al. 2023, their ref. [43]). SAM minimises the loss in
a neighbourhood of the weights, min_w max_{‖ε‖≤ρ} L(w + ε), with the first-order solution

    ε(w) = ρ · g / ‖g‖,      g = ∇L(w)      (global 2-norm over every trained parameter)

and the update

    w ← base_step(w, ∇L(w + ε(w)))          (two forward/backward passes per step).

Adaptive SAM (ASAM, Kwon et al., ICML 2021), off by default, scales the neighbourhood with
the weights, T_w = |w| element-wise:

    ε(w) = ρ · T_w² g / ‖T_w g‖.

:class:`SAM` does not own the parameters: it perturbs and restores the parameters of the
base optimizer's groups (only those that have a gradient), so the base optimizer, its state
and any LR scheduler on it stay as they are. :meth:`SAM.step` takes a closure (as
``torch.optim.LBFGS``); the trainer instead calls :meth:`perturb` / :meth:`restore` itself so
that it can all-reduce both gradients (data parallel) and clip the second one.
"""

from __future__ import annotations

from collections.abc import Callable

import torch


class SAM:
    """Wrap ``base`` (e.g. ``torch.optim.AdamW``) into a sharpness-aware optimizer.

    Args:
        base: the optimizer that makes the actual step with the gradients at w + ε.
        rho: neighbourhood radius ρ (> 0); in weight units, or relative with ``adaptive``.
        adaptive: ASAM's scale-invariant neighbourhood (see module doc).
        eps: added to ‖g‖ so that a zero gradient gives ε = 0.
    """

    def __init__(
        self,
        base: torch.optim.Optimizer,
        rho: float = 0.05,
        *,
        adaptive: bool = False,
        eps: float = 1e-12,
    ) -> None:
        if not rho > 0:
            raise ValueError(f"SAM needs rho > 0, got {rho}")
        self.base = base
        self.rho = float(rho)
        self.adaptive = bool(adaptive)
        self.eps = float(eps)
        self._saved: list[tuple[torch.Tensor, torch.Tensor]] = []

    @property
    def param_groups(self) -> list[dict]:
        return self.base.param_groups

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.base.zero_grad(set_to_none=set_to_none)

    def _params(self) -> list[torch.nn.Parameter]:
        return [p for g in self.base.param_groups for p in g["params"] if p.grad is not None]

    @torch.no_grad()
    def grad_norm(self) -> torch.Tensor:
        """‖g‖ (‖T_w g‖ with ``adaptive``) over every parameter holding a gradient."""
        params = self._params()
        if not params:
            return torch.zeros(())
        norms = [((p.abs() if self.adaptive else 1.0) * p.grad).norm(2) for p in params]
        return torch.stack([n.to(torch.float64) for n in norms]).norm(2)

    @torch.no_grad()
    def perturb(self) -> float:
        """w ← w + ε(w) from the current gradients (step 1); returns ‖ε‖.

        The gradients must be those at w (in data-parallel training, already summed over
        the ranks, so that every rank makes the same perturbation).
        """
        if self._saved:
            raise RuntimeError("SAM.perturb() called twice without restore()")
        params = self._params()
        scale = self.rho / (float(self.grad_norm()) + self.eps)
        sq = 0.0
        for p in params:
            e = p.grad * scale
            if self.adaptive:
                e = e * p.pow(2)
            self._saved.append((p, p.detach().clone()))
            p.add_(e)
            sq += float((e.double() ** 2).sum())
        return sq**0.5

    @torch.no_grad()
    def restore(self) -> None:
        """Back to the weights w saved by :meth:`perturb` (the gradients stay)."""
        for p, w in self._saved:
            p.copy_(w)
        self._saved = []

    def step(self, closure: Callable[[], torch.Tensor]) -> torch.Tensor:
        """One SAM step; ``closure`` clears the gradients, computes the loss, calls
        ``backward()`` and returns the loss. Returns the loss at w (before the step)."""
        loss = closure()
        self.perturb()
        try:
            closure()
        finally:
            self.restore()
        self.base.step()
        return loss

    def state_dict(self) -> dict:
        """The base optimizer's state (SAM itself keeps nothing between steps)."""
        return self.base.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.base.load_state_dict(state)
