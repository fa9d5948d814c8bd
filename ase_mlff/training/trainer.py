"""The trainer: AdamW on an energy + force loss, plateau LR decay, early stopping, gradient
clipping, best/last checkpoints and resume after interruption.

Loss (per batch, w_s the per-frame weights, N_s atoms of frame s):

    L = λ_E · Σ_s w_s ((E_s - Ê_s)/N_s)² / Σ_s w_s
      + λ_F · Σ_n w_s(n) |F_n - F̂_n|² / (3 Σ_n w_s(n))

The trainer knows nothing of MLflow: it reports through ``log_fn(metrics, step)``.

Data parallel: when ``torch.distributed`` is initialised (e.g. by Ray Train's
``TorchTrainer``, see :mod:`ase_mlff.agents.training`), every rank draws the same global
batch, evaluates its share ``frames[rank::world]``, normalises its loss by the *global*
batch's weights and the gradients are summed over ranks, so each step equals the
single-process step on the same global batch (up to float summation order). Every rank
validates on the whole validation set (identical decisions everywhere); only rank 0 writes
checkpoints.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from ase_mlff.graph.batch import Batch
from ase_mlff.metrics.errors import evaluate
from ase_mlff.models.base import compute_properties
from ase_mlff.models.io import CheckpointError, load_model, save_model
from ase_mlff.training.config import TrainConfig
from ase_mlff.utils import DTYPES, show_progress

log = logging.getLogger(__name__)

STATE_FILE = "trainer_state.pt"


def loss_fn(
    out: dict[str, torch.Tensor],
    batch: Batch,
    energy_weight: float = 1.0,
    force_weight: float = 20.0,
    norms: tuple[float, float] | None = None,
) -> torch.Tensor:
    """The weighted energy-per-atom + force loss above.

    ``norms = (Σ_s w_s, Σ_n w_s(n))`` replaces the batch's own denominators, so that the
    shards of one global batch (data parallel) add up to the loss of the whole batch.
    """
    w_s = batch.weight_s if batch.weight_s is not None else torch.ones_like(batch.energy_s)
    w_s = w_s.double()
    de = (out["energy"] - batch.energy_s) / batch.n_atoms_s
    w_n = w_s[batch.system_n].to(out["forces"].dtype)
    norm_s, norm_n = (w_s.sum(), w_n.sum()) if norms is None else norms
    e_loss = (w_s * de**2).sum() / norm_s
    df2 = ((out["forces"] - batch.forces_nc) ** 2).sum(dim=1)
    f_loss = (w_n * df2).sum() / (3.0 * norm_n)
    return energy_weight * e_loss.to(f_loss.dtype) + force_weight * f_loss


def distributed_context() -> tuple[int, int]:
    """``(rank, world size)`` of an initialised ``torch.distributed`` group, else (0, 1)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


@dataclass
class TrainResult:
    best_dir: Path
    last_dir: Path
    best_epoch: int
    best_val: dict[str, float]
    epochs_run: int
    stopped_because: str
    history: list[dict[str, float]] = field(default_factory=list)


class Trainer:
    """Train ``model`` on ``train`` with validation on ``val``; checkpoints in ``out_dir``.

    ``out_dir/last`` and ``out_dir/best`` are model checkpoints (see
    :mod:`ase_mlff.models.io`); ``out_dir/trainer_state.pt`` holds the optimizer,
    scheduler, RNG and history so that :meth:`fit` resumes after an interruption.
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
    ) -> None:
        if len(train) == 0 or len(val) == 0:
            raise ValueError("training and validation sets must not be empty")
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
        if refit_atomref:
            self.atomref_stats = model.atomref.fit(train)
        self.optimizer = torch.optim.AdamW(
            model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay
        )
        self.scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
            self.optimizer, factor=cfg.lr_factor, patience=cfg.lr_patience, min_lr=cfg.min_lr
        )
        self.rng = np.random.default_rng(cfg.seed)
        torch.manual_seed(cfg.seed)
        self.epoch = 0
        self.best_val_loss = math.inf
        self.best_epoch = -1
        self.best_val: dict[str, float] = {}
        self.bad_epochs = 0
        self.history: list[dict[str, float]] = []

    # ----------------------------------------------------------- checkpoints
    def _save(self, which: str, val: dict[str, float]) -> None:
        if self.rank != 0:
            return
        meta = {
            **self.metadata,
            "epoch": self.epoch,
            "val_metrics": val,
            "train_config": self.cfg.__dict__,
        }
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
            "numpy_rng": self.rng.bit_generator.state,
            "torch_rng": torch.get_rng_state(),
        }
        tmp = self.out_dir / (STATE_FILE + ".tmp")
        torch.save(state, tmp)
        tmp.replace(self.out_dir / STATE_FILE)

    def try_resume(self) -> bool:
        """Load ``out_dir/last`` and the trainer state if both exist; True when resumed."""
        state_file = self.out_dir / STATE_FILE
        if not (state_file.exists() and (self.out_dir / "last").exists()):
            return False
        try:
            model, _ = load_model(self.out_dir / "last", device=self.device, dtype=self.dtype)
            state = torch.load(state_file, weights_only=True, map_location=self.device)
        except (CheckpointError, RuntimeError, EOFError) as err:
            raise CheckpointError(
                f"cannot resume from {self.out_dir}: {err}; delete it or choose another --out"
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
        total, n = 0.0, 0
        bar = tqdm(
            range(n_batches),
            desc=f"epoch {self.epoch + 1}",
            leave=False,
            disable=not show_progress(),
        )
        w_all = self.train.weight_s if self.train.weight_s is not None else None
        for k in bar:
            frames = perm[k * cfg.batch_size : (k + 1) * cfg.batch_size]
            w = np.ones(len(frames)) if w_all is None else w_all[frames]
            norms = (float(w.sum()), float((w * self.train.n_atoms_s[frames]).sum()))
            mine = frames[self.rank :: self.world]
            self.optimizer.zero_grad(set_to_none=True)
            if len(mine):
                batch = Batch.from_dataset(
                    self.train, mine, cutoff=self.model.cutoff, dtype=self.dtype, device=self.device
                )
                out = compute_properties(self.model, batch, forces=True, training=True)
                loss = loss_fn(out, batch, cfg.energy_weight, cfg.force_weight, norms)
                loss.backward()
            else:  # more ranks than frames in this batch: contribute nothing
                loss = torch.zeros((), dtype=torch.float64, device=self.device)
            loss = self._all_reduce_grads(loss.detach())
            if not torch.isfinite(loss):
                raise FloatingPointError(
                    f"non-finite loss at epoch {self.epoch + 1}, batch {k}; "
                    "lower the learning rate or check the data"
                )
            if cfg.grad_clip:
                torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.grad_clip)
            self.optimizer.step()
            total += float(loss) * len(frames)
            n += len(frames)
            bar.set_postfix(loss=f"{float(loss):.4g}")
        return {"train_loss": total / max(n, 1)}

    def _all_reduce_grads(self, loss: torch.Tensor) -> torch.Tensor:
        """Sum gradients and loss shards over ranks (no-op in one process)."""
        if self.world == 1:
            return loss
        import torch.distributed as dist

        for p in self.model.parameters():
            if p.grad is None:
                p.grad = torch.zeros_like(p)
            dist.all_reduce(p.grad)
        loss = loss.to(torch.float64).clone()
        dist.all_reduce(loss)
        return loss

    def validate(self) -> dict[str, float]:
        self.model.eval()
        m = evaluate(
            self.model,
            self.val,
            batch_size=self.cfg.eval_batch_size,
            device=self.device,
            dtype=self.dtype,
        )
        cfg = self.cfg
        m["loss"] = (
            cfg.energy_weight * m["energy_rmse_per_atom"] ** 2
            + cfg.force_weight * m["forces_rmse"] ** 2
        )
        return m

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
            t_epoch = time.perf_counter()
            train_m = self.train_epoch()
            val = self.validate()
            self.epoch += 1
            self.scheduler.step(val["loss"])
            lr = self.optimizer.param_groups[0]["lr"]
            row = {
                "epoch": self.epoch,
                "lr": lr,
                **train_m,
                **{f"val_{k}": v for k, v in val.items()},
                "epoch_seconds": time.perf_counter() - t_epoch,
            }
            self.history.append(row)
            if self.log_fn:
                self.log_fn({k: v for k, v in row.items() if k != "epoch"}, self.epoch)
            improved = val["loss"] < self.best_val_loss
            if improved:
                self.best_val_loss, self.best_epoch, self.best_val = val["loss"], self.epoch, val
                self.bad_epochs = 0
                self._save("best", val)
            else:
                self.bad_epochs += 1
            self._save("last", val)
            self._save_state()
            bar.update(1)
            bar.set_postfix(f_mae=f"{val['forces_mae'] * 1000:.1f} meV/Å", lr=f"{lr:.1e}")
            log.info(
                "epoch %d  train_loss %.4g  val F-MAE %.1f meV/Å  E-MAE %.2f meV/atom  lr %.1e",
                self.epoch,
                train_m["train_loss"],
                val["forces_mae"] * 1e3,
                val["energy_mae_per_atom"] * 1e3,
                lr,
            )
            if self.bad_epochs >= cfg.early_stopping_patience:
                stopped = "early_stopping"
                break
            if lr <= cfg.min_lr * (1 + 1e-9) and self.bad_epochs > cfg.lr_patience:
                stopped = "min_lr"
                break
            if cfg.max_minutes and (time.perf_counter() - t0) / 60 > cfg.max_minutes:
                stopped = "time_budget"
                break
        bar.close()
        if self.world > 1:  # rank 0 has written the checkpoints the others read next
            import torch.distributed as dist

            dist.barrier()
        # train on with the best weights in memory, as users expect after fit()
        best, _ = load_model(self.out_dir / "best", device=self.device, dtype=self.dtype)
        self.model.load_state_dict(best.state_dict())
        return TrainResult(
            best_dir=self.out_dir / "best",
            last_dir=self.out_dir / "last",
            best_epoch=self.best_epoch,
            best_val=self.best_val,
            epochs_run=self.epoch,
            stopped_because=stopped,
            history=self.history,
        )
