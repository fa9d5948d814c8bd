"""The trainer: AdamW on an energy + force loss, plateau LR decay, early stopping, gradient
clipping, best/last checkpoints and resume after interruption.

Loss (per batch, w_s the per-frame weights, N_s atoms of frame s):

    L = λ_E · Σ_s w_s ((E_s - Ê_s)/N_s)² / Σ_s w_s
      + λ_F · Σ_n w_s(n) |F_n - F̂_n|² / (3 Σ_n w_s(n))

The trainer knows nothing of MLflow: it reports through ``log_fn(metrics, step)``.

Variants (:class:`~ase_mlff.training.config.TrainConfig`, every default the plain trainer):

- ``optimizer="sam"``: sharpness-aware minimisation around AdamW (paper 004's baseline,
  :mod:`ase_mlff.training.sam`): per step a second forward/backward pass at the perturbed
  weights w + ρ g/‖g‖; ``sam_rho`` is logged in every history row.
- ``loss``, ``loss_error``, ``mass_normalised``, ``max_err_weight``: paper 002's
  metric-guided losses (Table III; :mod:`ase_mlff.training.losses`). The validation loss
  (plateau decay, early stopping, ``best``) stays λ_E·RMSE_E/atom² + λ_F·RMSE_F².
- ``freeze`` / ``head_lr_factor``: parameters whose names start with one of the prefixes
  are not trained (``requires_grad=False``, not in the optimizer); the readout
  (``readout.*``) gets its own parameter group with lr × factor (its plateau floor is
  ``min_lr`` × factor, so the ratio stays).
- ``probe_every``: every K epochs a short MD stability probe (paper 000 Fig. 2b;
  :mod:`ase_mlff.training.probe`) from ``probe_images`` (default: evenly spaced validation
  frames); its ``probe_*`` values join that epoch's history row, the model is saved as
  ``out_dir/epoch_XXXX`` and ``out_dir/most_stable`` keeps the probed epoch of the longest
  mean t_inst (ties: lower validation loss). ``select_by="stability"`` returns (and loads)
  ``most_stable`` instead of ``best``.
- ``stress_weight`` λ_S > 0: the stress term λ_S Σ_s v_s |σ_s − σ̂_s|² / (9 Σ_s v_s)
  (eV/Å³, :mod:`ase_mlff.training.losses`) with stress from
  ``compute_properties(..., stress=True)``; the training set needs stress labels and
  periodic frames (ValueError otherwise). Validation then reports ``stress_mae`` /
  ``stress_rmse`` (eV/Å³) and ``stress_mae_GPa`` -- whenever the validation set has stress,
  whatever λ_S -- and the validation loss gains λ_S·RMSE_σ².

Any :class:`~ase_mlff.models.Potential` trains, also one without an ``atomref``
(:class:`~ase_mlff.models.EAM` learns its own per-element energies,
:class:`~ase_mlff.models.hybrid.HybridPotential`): ``refit_atomref`` is then ignored and
``atomref_stats`` is empty.

Data parallel: when ``torch.distributed`` is initialised (e.g. by Ray Train's
``TorchTrainer``, see :mod:`ase_mlff.agents.training`), every rank draws the same global
batch, evaluates its share ``frames[rank::world]``, normalises its loss by the *global*
batch's weights and the gradients are summed over ranks, so each step equals the
single-process step on the same global batch (up to float summation order). Every rank
validates on the whole validation set (identical decisions everywhere); only rank 0 writes
checkpoints. SAM's two gradients are both summed over the ranks before use (so every rank
makes the same perturbation); the stability probe runs on rank 0 and its numbers are
broadcast, so the history is the same on every rank.
"""

from __future__ import annotations

import logging
import math
import pickle
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from ase import Atoms
from tqdm import tqdm

from ase_mlff.graph.batch import Batch
from ase_mlff.metrics.errors import error_metrics, stress_errors
from ase_mlff.models.base import compute_properties
from ase_mlff.models.io import CheckpointError, load_model, save_model
from ase_mlff.models.prediction import predict
from ase_mlff.training.config import TrainConfig
from ase_mlff.training.losses import (
    atom_factors,
    frame_weights,
    global_norms,
    stress_mask,
    stress_norm,
    training_loss,
)
from ase_mlff.training.probe import is_more_stable, select_starts, stability_probe
from ase_mlff.training.sam import SAM
from ase_mlff.utils import DTYPES, jsonable, show_progress

log = logging.getLogger(__name__)

STATE_FILE = "trainer_state.pt"
MOST_STABLE = "most_stable"
#: the readout's parameter-name prefix (its own LR group with ``head_lr_factor``)
HEAD_PREFIX = "readout"


def distributed_context() -> tuple[int, int]:
    """``(rank, world size)`` of an initialised ``torch.distributed`` group, else (0, 1)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _matches(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def apply_freeze(model: torch.nn.Module, prefixes: tuple[str, ...] | list[str]) -> list[str]:
    """Set ``requires_grad=False`` on every parameter whose name starts with one of
    ``prefixes`` (whole name components: ``"interactions.0"`` is not
    ``"interactions.01"``); returns the frozen names. An unknown prefix raises ValueError."""
    names = [n for n, _ in model.named_parameters()]
    frozen: list[str] = []
    for raw in prefixes:
        prefix = str(raw).strip().rstrip(".")
        hit = [n for n in names if _matches(n, prefix)]
        if not prefix or not hit:
            top = sorted({n.split(".")[0] for n in names})
            raise ValueError(
                f"freeze prefix {raw!r} matches no parameter of {type(model).__name__}; "
                f"its parameter names start with {top} (e.g. {names[:3]})"
            )
        frozen += [n for n in hit if n not in frozen]
    params = dict(model.named_parameters())
    for n in frozen:
        params[n].requires_grad_(False)
    return frozen


def param_groups(
    model: torch.nn.Module, lr: float, head_lr_factor: float = 1.0
) -> list[dict[str, Any]]:
    """Optimizer groups of the trainable parameters: one group, or with ``head_lr_factor``
    ≠ 1 the body (lr) and the readout ``readout.*`` (lr × factor)."""
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    if not named:
        raise ValueError("no trainable parameters left (everything frozen?)")
    if head_lr_factor == 1.0:
        return [{"params": [p for _, p in named], "lr": lr, "name": "all"}]
    head = [p for n, p in named if _matches(n, HEAD_PREFIX)]
    body = [p for n, p in named if not _matches(n, HEAD_PREFIX)]
    if not head:
        raise ValueError(
            f"head_lr_factor={head_lr_factor} needs trainable readout parameters "
            f"({HEAD_PREFIX}.*); {type(model).__name__} has none (or they are frozen)"
        )
    groups = [{"params": head, "lr": lr * head_lr_factor, "name": "head"}]
    if body:
        groups.insert(0, {"params": body, "lr": lr, "name": "body"})
    return groups


#: TrainConfig fields a resumed run may change: the budget and where it runs
RESUMABLE_CHANGES = frozenset(
    {
        "epochs",
        "max_minutes",
        "early_stopping_patience",
        "stop_early",
        "device",
        "threads",
        "eval_batch_size",
    }
)


def data_fingerprint(*datasets) -> str:
    """SHA-256 over the atomic numbers, positions, cells and labels of ``datasets``."""
    import hashlib

    h = hashlib.sha256()
    for ds in datasets:
        for a in (ds.numbers_n, ds.positions_nc, ds.n_atoms_s, ds.cell_s33, ds.energy_s):
            h.update(np.ascontiguousarray(a).tobytes())
        h.update(np.ascontiguousarray(ds.forces_nc).tobytes())
        if ds.weight_s is not None:
            h.update(np.ascontiguousarray(ds.weight_s).tobytes())
    return h.hexdigest()


def run_identity(model: torch.nn.Module, train, val, cfg: TrainConfig) -> dict[str, Any]:
    """What a resumed run must share with the run that saved its state: the model's
    config, the data (:func:`data_fingerprint` of the training and validation sets) and the
    training settings other than the budget (:data:`RESUMABLE_CHANGES`)."""
    settings = {k: v for k, v in jsonable(cfg).items() if k not in RESUMABLE_CHANGES}
    return {
        "model": jsonable(getattr(model, "config", {})),
        "data": data_fingerprint(train, val),
        "train_config": settings,
    }


def identity_conflicts(out_dir: str | Path, identity: dict[str, Any]) -> list[str]:
    """What differs between ``identity`` (:meth:`Trainer.identity`) and the one stored in
    ``out_dir``'s trainer state: "the model config (hidden: 48 -> 64)", "the data", "the
    training settings (lr: ...)". Empty when they agree, when there is no state, or for a
    state written before identities were stored."""
    state_file = Path(out_dir) / STATE_FILE
    if not state_file.exists():
        return []
    try:
        stored = torch.load(state_file, weights_only=True, map_location="cpu").get("identity")
    except Exception:  # noqa: BLE001 - an unreadable state is reported by try_resume
        return []
    if not stored:
        return []
    out = []
    for key, what in (("model", "the model config"), ("train_config", "the training settings")):
        old, new = stored.get(key, {}), identity.get(key, {})
        diff = [
            f"{k}: {old.get(k)!r} -> {new.get(k)!r}"
            for k in sorted(set(old) | set(new))
            if old.get(k) != new.get(k)
        ]
        if diff:
            out.append(f"{what} ({', '.join(diff)})")
    if stored.get("data") != identity.get("data"):
        out.append("the data (other frames or labels)")
    return out


def check_labels(dataset, what: str = "training") -> None:
    """ValueError naming the frames of ``dataset`` whose energy or forces are not finite
    (a NaN label would make the loss NaN at the first batch, or the validation error NaN
    and no checkpoint ever best)."""
    bad_e = np.flatnonzero(~np.isfinite(np.asarray(dataset.energy_s, dtype=float)))
    f_ok = np.isfinite(np.asarray(dataset.forces_nc, dtype=float)).all(axis=1)
    frame_n = np.repeat(np.arange(len(dataset)), dataset.n_atoms_s)
    bad_f = np.unique(frame_n[~f_ok])
    problems = []
    for kind, bad in (("energy", bad_e), ("forces", bad_f)):
        if len(bad):
            shown = ", ".join(map(str, bad[:10])) + (", ..." if len(bad) > 10 else "")
            problems.append(f"{kind} in {len(bad)} frame(s) ({shown})")
    if problems:
        raise ValueError(
            f"the {what} set has non-finite labels: {'; '.join(problems)} "
            "(frame indices within that set); remove or relabel those frames"
        )


def check_stress_data(dataset, what: str = "training") -> None:
    """ValueError unless ``dataset`` has stress labels (some finite) on periodic frames."""
    if not dataset.has_stress or not stress_mask(dataset.stress_s33).any():
        raise ValueError(
            f"stress_weight > 0 but the {what} set has no stress labels (Dataset.stress_s33); "
            "label periodic structures with stress or set stress_weight=0"
        )
    if not np.all(dataset.pbc_s3):
        raise ValueError(
            f"stress_weight > 0 needs every {what} frame periodic in 3-D (stress = (1/V) ∂E/∂ε)"
        )


@dataclass
class TrainResult:
    best_dir: Path
    last_dir: Path
    best_epoch: int
    best_val: dict[str, float]
    epochs_run: int
    stopped_because: str
    history: list[dict[str, float]] = field(default_factory=list)
    #: "val" (``best``) or "stability" (``most_stable``): what best_dir/best_epoch are
    selected_by: str = "val"


class Trainer:
    """Train ``model`` on ``train`` with validation on ``val``; checkpoints in ``out_dir``.

    ``out_dir/last`` and ``out_dir/best`` are model checkpoints (see
    :mod:`ase_mlff.models.io`); ``out_dir/trainer_state.pt`` holds the optimizer,
    scheduler, RNG and history so that :meth:`fit` resumes after an interruption.

    With ``cfg.probe_every`` also ``out_dir/epoch_XXXX`` (each probed epoch) and
    ``out_dir/most_stable``; ``probe_images`` are the probe's start structures (the first
    ``cfg.probe_starts``, evenly spaced; default: validation frames). The probe results are
    part of the history and of the saved state, so resuming keeps them. ``cfg.freeze``
    sets ``requires_grad=False`` on the given model's parameters (it stays so after fit).
    """

    def __init__(
        self,
        model: torch.nn.Module,
        train,
        val,
        cfg: TrainConfig,
        out_dir: str | Path,
        *,
        metadata: dict[str, Any] | None = None,
        log_fn: Callable[[dict[str, float], int], None] | None = None,
        refit_atomref: bool = True,
        probe_images: Sequence[Atoms] | None = None,
    ) -> None:
        if len(train) == 0 or len(val) == 0:
            raise ValueError("training and validation sets must not be empty")
        check_labels(train, "training")
        check_labels(val, "validation")
        if cfg.dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {sorted(DTYPES)}, got {cfg.dtype!r}")
        self.cfg = cfg
        self.device = torch.device(cfg.device)
        self.dtype = DTYPES[cfg.dtype]
        self.train, self.val = train, val
        self.out_dir = Path(out_dir)
        self.metadata = dict(metadata or {})
        self.log_fn = log_fn
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        self.model = model.to(device=self.device, dtype=self.dtype)
        self.rank, self.world = distributed_context()
        if self.world > 1:  # every rank starts from rank 0's weights
            import torch.distributed as dist

            for t in [*self.model.parameters(), *self.model.buffers()]:
                dist.broadcast(t.data, 0)
        self.use_stress = cfg.stress_weight > 0
        if self.use_stress:
            check_stress_data(train, "training")
        self.val_stress = bool(val.has_stress and np.all(val.pbc_s3))
        self.atomref_stats: dict[str, float] = {}
        atomref = getattr(model, "atomref", None)
        if refit_atomref and atomref is not None:  # potentials without one (EAM) skip it
            self.atomref_stats = atomref.fit(train)
        self.frozen = apply_freeze(self.model, cfg.freeze)
        self.params = [p for p in self.model.parameters() if p.requires_grad]
        groups = param_groups(self.model, cfg.lr, cfg.head_lr_factor)
        self.optimizer = torch.optim.AdamW(groups, lr=cfg.lr, weight_decay=cfg.weight_decay)
        self.sam = (
            SAM(self.optimizer, rho=cfg.sam_rho, adaptive=cfg.sam_adaptive)
            if cfg.optimizer == "sam"
            else None
        )
        min_lr = [cfg.min_lr * (cfg.head_lr_factor if g["name"] == "head" else 1.0) for g in groups]
        self.scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
            self.optimizer,
            factor=cfg.lr_factor,
            patience=cfg.lr_patience,
            min_lr=min_lr if len(min_lr) > 1 else cfg.min_lr,
        )
        frame_weights(train, cfg.loss)  # fails now, not at the first batch, without clusters
        self.probe_images: list[Atoms] = []
        if cfg.probe_every:
            src = val if probe_images is None else list(probe_images)
            self.probe_images = select_starts(src, cfg.probe_starts)
        self.most_stable: dict[str, Any] = {}
        self.rng = np.random.default_rng(cfg.seed)
        torch.manual_seed(cfg.seed)
        self.epoch = 0
        self.best_val_loss = math.inf
        self.best_epoch = -1
        self.best_val: dict[str, float] = {}
        self.bad_epochs = 0
        self.history: list[dict[str, float]] = []

    # ----------------------------------------------------------- checkpoints
    def _save(
        self, which: str, val: dict[str, float], probe: dict[str, float] | None = None
    ) -> None:
        if self.rank != 0:
            return
        meta = {
            **self.metadata,
            "epoch": self.epoch,
            "val_metrics": val,
            "train_config": self.cfg.__dict__,
        }
        if probe:
            meta["probe"] = probe
        save_model(self.model, self.out_dir / which, meta)

    def _save_state(self) -> None:
        if self.rank != 0:
            return
        state = {
            "epoch": self.epoch,
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "best_val_loss": self.best_val_loss,
            "best_epoch": self.best_epoch,
            "best_val": self.best_val,
            "bad_epochs": self.bad_epochs,
            "history": self.history,
            "most_stable": self.most_stable,
            "numpy_rng": self.rng.bit_generator.state,
            "torch_rng": torch.get_rng_state(),
            "identity": self.identity(),
        }
        tmp = self.out_dir / (STATE_FILE + ".tmp")
        torch.save(state, tmp)
        tmp.replace(self.out_dir / STATE_FILE)

    def identity(self) -> dict[str, Any]:
        """:func:`run_identity` of this trainer's model, data and settings."""
        return run_identity(self.model, self.train, self.val, self.cfg)

    def resume_conflicts(self) -> list[str]:
        """How this trainer differs from the state saved in ``out_dir`` (empty: it may
        resume, or there is nothing to resume)."""
        return identity_conflicts(self.out_dir, self.identity())

    def try_resume(self) -> bool:
        """Load ``out_dir/last`` and the trainer state if both exist; True when resumed.
        A state saved by another model, other data or other training settings (not only a
        longer budget) is refused with a :class:`CheckpointError` that names what differs."""
        state_file = self.out_dir / STATE_FILE
        if not (state_file.exists() and (self.out_dir / "last").exists()):
            return False
        conflicts = self.resume_conflicts()
        if conflicts:
            raise CheckpointError(
                f"{self.out_dir} holds a run that differs from this one: "
                f"{'; '.join(conflicts)}; choose another --out, or delete it to start over"
            )
        try:
            model, _ = load_model(self.out_dir / "last", device=self.device, dtype=self.dtype)
            state = torch.load(state_file, weights_only=True, map_location=self.device)
        except (CheckpointError, RuntimeError, EOFError, OSError, pickle.UnpicklingError) as err:
            # a truncated or overwritten state file: say so in one line, naming the directory
            first = (str(err).strip().splitlines() or [""])[0][:200]
            raise CheckpointError(
                f"cannot resume from {self.out_dir}: last/ or {STATE_FILE} cannot be read "
                f"({type(err).__name__}: {first}); delete it or choose another --out"
            ) from err
        self.model.load_state_dict(model.state_dict())
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.epoch = int(state["epoch"])
        self.best_val_loss = float(state["best_val_loss"])
        self.best_epoch = int(state["best_epoch"])
        self.best_val = dict(state["best_val"])
        self.bad_epochs = int(state["bad_epochs"])
        self.history = list(state["history"])
        self.most_stable = dict(state.get("most_stable") or {})
        self.rng.bit_generator.state = state["numpy_rng"]
        torch.set_rng_state(state["torch_rng"].cpu())
        log.info("resumed from %s at epoch %d", self.out_dir, self.epoch)
        return True

    # --------------------------------------------------------------- training
    def train_epoch(self) -> dict[str, float]:
        self.model.train()
        cfg = self.cfg
        perm = self.rng.permutation(len(self.train))
        n_batches = math.ceil(len(perm) / cfg.batch_size)
        total, total_sharp, n = 0.0, 0.0, 0
        bar = tqdm(
            range(n_batches),
            desc=f"epoch {self.epoch + 1}",
            leave=False,
            disable=not show_progress(),
        )
        v_all = frame_weights(self.train, cfg.loss)  # w_s, or cluster-balanced w_s·c_s
        b_all = atom_factors(self.train, cfg.loss)  # element balance, or None
        for k in bar:
            frames = perm[k * cfg.batch_size : (k + 1) * cfg.batch_size]
            norms = global_norms(self.train, frames, v_all)
            s_norm = stress_norm(self.train, frames, v_all) if self.use_stress else None
            mine = frames[self.rank :: self.world]
            batch, b_n = None, None
            if len(mine):
                batch = Batch.from_dataset(
                    self.train, mine, cutoff=self.model.cutoff, dtype=self.dtype, device=self.device
                )
                batch.weight_s = torch.as_tensor(v_all[mine], dtype=self.dtype, device=self.device)
                if b_all is not None:
                    b_n = torch.as_tensor(
                        b_all[self.train.atom_index(mine)], dtype=self.dtype, device=self.device
                    )
            loss = self._loss_and_grads(batch, b_n, norms, s_norm)
            self._check_finite(loss, k)
            if self.sam is not None:  # step 2 of SAM at w + ρ g/‖g‖, then back to w
                self.sam.perturb()
                try:
                    loss_pert = self._loss_and_grads(batch, b_n, norms, s_norm)
                finally:
                    self.sam.restore()
                self._check_finite(
                    loss_pert,
                    k,
                    "at the SAM-perturbed weights ",
                    "lower sam_rho or the learning rate",
                )
                total_sharp += float(loss_pert) * len(frames)
            if cfg.grad_clip:
                torch.nn.utils.clip_grad_norm_(self.params, cfg.grad_clip)
            self.optimizer.step()
            total += float(loss) * len(frames)
            n += len(frames)
            bar.set_postfix(loss=f"{float(loss):.4g}")
        out = {"train_loss": total / max(n, 1), "batches": n_batches}
        if self.sam is not None:
            out["train_loss_perturbed"] = total_sharp / max(n, 1)
        return out

    def _loss_and_grads(
        self,
        batch: Batch | None,
        b_n: torch.Tensor | None,
        norms: tuple[float, float],
        s_norm: float | None = None,
    ) -> torch.Tensor:
        """Zero the gradients, loss and backward on this rank's shard (None: no frames),
        then sum gradients and loss over the ranks; returns the global batch loss."""
        cfg = self.cfg
        self.optimizer.zero_grad(set_to_none=True)
        if batch is not None:
            out = compute_properties(
                self.model, batch, forces=True, stress=self.use_stress, training=True
            )
            loss = training_loss(
                out,
                batch,
                energy_weight=cfg.energy_weight,
                force_weight=cfg.force_weight,
                atom_factor_n=b_n,
                loss_error=cfg.loss_error,
                mass_normalised=cfg.mass_normalised,
                max_err_weight=cfg.max_err_weight,
                norms=norms,
                stress_weight=cfg.stress_weight,
                stress_norm=s_norm,
            )
            loss.backward()
        else:  # more ranks than frames in this batch: contribute nothing
            loss = torch.zeros((), dtype=torch.float64, device=self.device)
        return self._all_reduce_grads(loss.detach())

    def _check_finite(
        self, loss: torch.Tensor, k: int, where: str = "", hint: str = "lower the learning rate"
    ) -> None:
        if not torch.isfinite(loss):
            raise FloatingPointError(
                f"non-finite loss {where}at epoch {self.epoch + 1}, batch {k}; "
                f"{hint} or check the data"
            )

    def _from_rank0(self, values: dict[str, float]) -> dict[str, float]:
        """Rank 0's numbers on every rank, so that decisions taken from them (best
        checkpoint, LR plateau, early stopping, time budget) are the same everywhere even
        when the ranks' own values differ in the last bits (GPUs) or their clocks differ."""
        if self.world == 1:
            return values
        import torch.distributed as dist

        keys = sorted(values)
        t = torch.tensor([float(values[k]) for k in keys], dtype=torch.float64)
        t = t.to(self.device)
        dist.broadcast(t, 0)
        return dict(zip(keys, t.tolist()))

    def _all_reduce_grads(self, loss: torch.Tensor) -> torch.Tensor:
        """Sum gradients (of the trained parameters) and loss shards over ranks (no-op in
        one process)."""
        if self.world == 1:
            return loss
        import torch.distributed as dist

        for p in self.params:
            if p.grad is None:
                p.grad = torch.zeros_like(p)
            dist.all_reduce(p.grad)
        loss = loss.to(torch.float64).clone()
        dist.all_reduce(loss)
        return loss

    def validate(self) -> dict[str, float]:
        self.model.eval()
        kw = {"batch_size": self.cfg.eval_batch_size, "device": self.device, "dtype": self.dtype}
        if self.val_stress:
            p = predict(self.model, self.val, stress=True, **kw)
        else:
            p = predict(self.model, self.val, **kw)
        m = error_metrics(p["energy"], p["forces"], self.val)
        cfg = self.cfg
        m["loss"] = (
            cfg.energy_weight * m["energy_rmse_per_atom"] ** 2
            + cfg.force_weight * m["forces_rmse"] ** 2
        )
        if self.val_stress:
            m.update(stress_errors(p["stress"], self.val.stress_s33))
            if cfg.stress_weight and np.isfinite(m["stress_rmse"]):
                m["loss"] += cfg.stress_weight * m["stress_rmse"] ** 2
        return m

    def probe(self) -> dict[str, float]:
        """The MD stability probe of the current weights (rank 0 runs it, every rank gets
        its numbers); see :mod:`ase_mlff.training.probe`."""
        cfg = self.cfg
        res: dict[str, float] = {}
        if self.rank == 0:
            was_training = self.model.training
            res = stability_probe(
                self.model,
                self.probe_images,
                steps=cfg.probe_steps,
                temperature_K=cfg.probe_temperature_K,
                dt_fs=cfg.probe_dt_fs,
                seed=cfg.seed,
                device=self.device,
            )
            self.model.train(was_training)
        if self.world > 1:
            import torch.distributed as dist

            box = [res]
            dist.broadcast_object_list(box, src=0)
            res = box[0]
        return res

    def _after_probe(self, probe: dict[str, float], val: dict[str, float]) -> None:
        """Save ``epoch_XXXX`` and, when this epoch is the most stable so far, ``most_stable``."""
        self._save(f"epoch_{self.epoch:04d}", val, probe)
        cand = (probe["probe_t_inst_mean_fs"], val["loss"])
        inc = self.most_stable
        if is_more_stable(cand, (inc["t_inst_mean_fs"], inc["val_loss"]) if inc else None):
            self.most_stable = {
                "epoch": self.epoch,
                "t_inst_mean_fs": cand[0],
                "val_loss": cand[1],
                "val": dict(val),
                "probe": dict(probe),
            }
            self._save(MOST_STABLE, val, probe)

    def fit(self, resume: bool = True) -> TrainResult:
        """Train until ``epochs``, early stopping, LR floor or the time budget."""
        cfg = self.cfg
        self.out_dir.mkdir(parents=True, exist_ok=True)
        if resume:
            self.try_resume()
        t0 = time.perf_counter()
        stopped = "epochs"
        bar = tqdm(
            total=cfg.epochs, initial=self.epoch, desc="training", disable=not show_progress()
        )
        while self.epoch < cfg.epochs:
            row, val, probe = self._run_epoch()
            self._keep(row, val, probe)
            bar.update(1)
            bar.set_postfix(f_mae=f"{val['forces_mae'] * 1000:.1f} meV/Å", lr=f"{row['lr']:.1e}")
            reason = self._stop_reason(row["lr"], t0)
            if reason:
                stopped = reason
                break
        bar.close()
        if self.world > 1:  # rank 0 has written the checkpoints the others read next
            import torch.distributed as dist

            dist.barrier()
        which, best_epoch, best_val, selected = self._selected()
        self._load_selected(which)
        return TrainResult(
            best_dir=self.out_dir / which,
            last_dir=self.out_dir / "last",
            best_epoch=best_epoch,
            best_val=best_val,
            epochs_run=self.epoch,
            stopped_because=stopped,
            history=self.history,
            selected_by=selected,
        )

    def _run_epoch(self) -> tuple[dict[str, float], dict[str, float], dict[str, float]]:
        """One epoch of training, validation, the LR scheduler and (when due) the stability
        probe; returns the history row, the validation metrics and the probe's."""
        cfg = self.cfg
        t_epoch = time.perf_counter()
        train_m = self.train_epoch()
        val = self._from_rank0(self.validate())
        self.epoch += 1
        self.scheduler.step(val["loss"])
        lr = self.optimizer.param_groups[0]["lr"]
        before = self.history[-1].get("optimizer_steps", 0) if self.history else 0
        row = {"epoch": self.epoch, "lr": lr, **train_m, **{f"val_{k}": v for k, v in val.items()}}
        row["optimizer_steps"] = before + row.pop("batches")
        if cfg.head_lr_factor != 1.0:
            row["lr_head"] = self.optimizer.param_groups[-1]["lr"]
        if self.sam is not None:
            row["sam_rho"] = cfg.sam_rho
        probe = {}
        if cfg.probe_every and self.epoch % cfg.probe_every == 0:
            probe = self.probe()
            row.update(probe)
        row["epoch_seconds"] = time.perf_counter() - t_epoch
        return row, val, probe

    def _keep(self, row: dict[str, float], val: dict[str, float], probe: dict) -> None:
        """History, logging, the best and last checkpoints and the trainer state."""
        self.history.append(row)
        if self.log_fn:
            self.log_fn({k: v for k, v in row.items() if k != "epoch"}, self.epoch)
        if val["loss"] < self.best_val_loss:
            self.best_val_loss, self.best_epoch, self.best_val = val["loss"], self.epoch, val
            self.bad_epochs = 0
            self._save("best", val)
        else:
            self.bad_epochs += 1
        if probe:
            self._after_probe(probe, val)
        self._save("last", val)
        self._save_state()
        log.info(
            "epoch %d  train_loss %.4g  val F-MAE %.1f meV/Å  E-MAE %.2f meV/atom  lr %.1e%s",
            self.epoch,
            row["train_loss"],
            val["forces_mae"] * 1e3,
            val["energy_mae_per_atom"] * 1e3,
            row["lr"],
            f"  probe t_inst {probe['probe_t_inst_mean_fs']:.0f} fs" if probe else "",
        )

    def _stop_reason(self, lr: float, t0: float) -> str | None:
        """Why training stops after this epoch (early stopping, the LR floor, the time
        budget), or None."""
        cfg = self.cfg
        if cfg.stop_early and self.bad_epochs >= cfg.early_stopping_patience:
            return "early_stopping"
        floor = self.scheduler.min_lrs[0]  # cfg.min_lr (× head factor for a head group)
        if cfg.stop_early and lr <= floor * (1 + 1e-9) and self.bad_epochs > cfg.lr_patience:
            return "min_lr"
        if self.epoch >= cfg.epochs:  # the budget ran in full: not cut short by the clock
            return None
        over = bool(cfg.max_minutes) and (time.perf_counter() - t0) / 60 > cfg.max_minutes
        if self._from_rank0({"over": float(over)})["over"]:  # one clock decides for all
            return "time_budget"
        return None

    def _selected(self) -> tuple[str, int, dict[str, float], str]:
        """The checkpoint ``fit`` returns: ``best`` by validation loss, or the most stable
        probed epoch with ``select_by="stability"``; (directory, epoch, val, selected_by)."""
        cfg = self.cfg
        if cfg.select_by == "stability":
            if self.most_stable and (self.out_dir / MOST_STABLE).exists():
                ms = self.most_stable
                return MOST_STABLE, int(ms["epoch"]), dict(ms["val"]), "stability"
            log.warning(
                "select_by='stability' but no epoch was probed (probe_every=%d, %d epochs "
                "run): returning the best validation checkpoint",
                cfg.probe_every,
                self.epoch,
            )
        return "best", self.best_epoch, self.best_val, "val"

    def _load_selected(self, which: str) -> None:
        """Train on with the selected weights in memory, as users expect after fit(); only
        rank 0 reads them (other nodes need not see out_dir) and sends them to the others."""
        if self.rank == 0:
            best, _ = load_model(self.out_dir / which, device=self.device, dtype=self.dtype)
            self.model.load_state_dict(best.state_dict())
        if self.world > 1:
            import torch.distributed as dist

            for t in [*self.model.parameters(), *self.model.buffers()]:
                dist.broadcast(t.data, 0)
