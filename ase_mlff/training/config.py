"""Typed, frozen configuration: one dataclass per section, loadable from YAML.

data:  {name: aspirin, n_train: 950, n_val: 50, split: random, split_seed: 0}
model: {name: painn, hidden: 64, n_interactions: 3, cutoff: 5.0}
train: {epochs: 200, batch_size: 32, lr: 1.0e-3, energy_weight: 1, force_weight: 20}
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import yaml


@dataclass(frozen=True)
class DataConfig:
    """Which data and how it is split.

    ``split="random"``: random train/val/test frames. ``split="trajectory"``: the frames of
    ``test_groups`` (values of the per-frame ``traj_id``) form the test set, so test frames
    are never time-correlated with training frames; train/val are drawn from the rest.
    ``n_test=None`` takes every remaining frame.
    """

    name: str = "aspirin"
    n_train: int = 950
    n_val: int = 50
    n_test: int | None = None
    split: str = "random"
    test_groups: tuple[int, ...] = ()
    split_seed: int = 0


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation. Loss = λ_E·mean_s w_s((E_s-Ê_s)/N_s)² + λ_F·mean_n,c w_s(F-F̂)²."""

    epochs: int = 100
    batch_size: int = 32
    lr: float = 1e-3
    weight_decay: float = 0.0
    energy_weight: float = 1.0
    force_weight: float = 20.0
    lr_patience: int = 5
    lr_factor: float = 0.5
    min_lr: float = 1e-6
    early_stopping_patience: int = 30
    grad_clip: float | None = 10.0
    eval_batch_size: int = 64
    max_minutes: float | None = None
    seed: int = 0
    device: str = "cpu"
    dtype: str = "float32"
    threads: int | None = None


@dataclass(frozen=True)
class ExperimentConfig:
    data: DataConfig = field(default_factory=DataConfig)
    model: dict[str, Any] = field(default_factory=lambda: {"name": "painn"})
    train: TrainConfig = field(default_factory=TrainConfig)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ExperimentConfig:
        unknown = set(d) - {"data", "model", "train"}
        if unknown:
            raise ValueError(f"unknown config sections {sorted(unknown)}")
        return cls(
            data=_section(DataConfig, d.get("data", {})),
            model=dict(d.get("model", {"name": "painn"})),
            train=_section(TrainConfig, d.get("train", {})),
        )

    @classmethod
    def from_yaml(cls, path: str | Path) -> ExperimentConfig:
        return cls.from_dict(yaml.safe_load(Path(path).read_text()) or {})

    def to_yaml(self, path: str | Path) -> None:
        Path(path).write_text(yaml.safe_dump(self.to_dict(), sort_keys=False))

    def override(self, **sections: dict[str, Any]) -> ExperimentConfig:
        """Copy with some fields replaced, e.g. ``override(train={"epochs": 5})``."""
        d = self.to_dict()
        for sec, values in sections.items():
            if values:
                d[sec] = {**d[sec], **values}
        return ExperimentConfig.from_dict(d)


def _section(cls, values: dict[str, Any]):
    names = {f.name for f in fields(cls)}
    unknown = set(values) - names
    if unknown:
        raise ValueError(
            f"unknown {cls.__name__} fields {sorted(unknown)}; allowed: {sorted(names)}"
        )
    values = dict(values)
    if "test_groups" in values and values["test_groups"] is not None:
        values["test_groups"] = tuple(values["test_groups"])
    return replace(cls(), **values)
