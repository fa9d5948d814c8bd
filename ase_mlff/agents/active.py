"""The active comparison agent: which model is the more stable in MD, with stated
confidence, spending MD only where the answer is still open (issue 15).

    from ase_mlff.agents.active import ActiveComparison, ActiveSpec
    spec = ActiveSpec(alpha=0.05, margin=0.10, replicas_per_round=8, max_rounds=6,
                      md={"steps": 4000, "temperature_K": 500.0})
    verdict = ActiveComparison({"scratch": [m0, m1], "ffpt": [m2, m3]}, starts, spec,
                               out_dir="runs/active").run()
    print(verdict.markdown())

**Rounds.** Each round runs ``replicas_per_round`` new MD replicas of every variant that is
still in an unresolved pair (:func:`~ase_mlff.md.runner.run_md`, the default detectors,
the spec's protocol), then updates every variant's Kaplan–Meier estimate and the pairwise
verdicts (:func:`~ase_mlff.metrics.stability.pairwise_verdicts`, with level =
α / ``max_rounds`` and P pairs):

* **different**: Holm-corrected log-rank p < level, and the 1 − 2·level/P interval of the
  difference in restricted mean survival time (RMST) excludes 0; the winner lives longer.
  Dividing α by the number of looks (Bonferroni) keeps the family-wise error at α however
  many rounds look at the growing data, so stopping as soon as a pair is decided does not
  inflate it.
* **equivalent**: that interval lies inside ± ``margin`` × the run length (two one-sided
  tests, Bonferroni over the pairs). A variant without a failure gets the exact bound on
  its failure fraction instead of a zero variance.
* **unresolved** otherwise: its two variants get the next round's replicas.

It stops when no pair is unresolved, after ``max_rounds``, when the next round would pass
``max_replica_ps`` of MD, or once ``max_minutes`` of wall time have passed (checked
between rounds; the clock restarts on resume). The stopping rule, α, the margin and the
budget are in the spec, in ``verdict.json`` and in MLflow (one step per round, with its
allocation).

**Seeds are a factor.** A variant may hold several models (its training seeds): replica k
of a round runs model k mod n. Replica ids run on across rounds, and replica i of every
variant starts from the same structure with the same random stream (its id), so the
variants are compared on common random numbers; the MD seed is the spec's ``seed``.

**Resume.** Every finished round is written to ``out_dir/round_XX.json`` (atomically); a
comparison started again with the same spec reads them and goes on from the last one.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from ase import Atoms

from ase_mlff.md.detectors import default_detectors
from ase_mlff.md.protocol import make_protocol
from ase_mlff.md.runner import run_md
from ase_mlff.metrics.stability import format_ci, pairwise_verdicts, survival_summary
from ase_mlff.utils import jsonable, write_json

log = logging.getLogger(__name__)

STOPPING_RULE = (
    "stop when every pair is different (Holm log-rank p < alpha/max_rounds and the "
    "1 - 2 alpha/(max_rounds P) RMST-difference interval excludes 0) or equivalent (that "
    "interval inside +-margin x run length), or after max_rounds, or when the next round "
    "would pass max_replica_ps, or once max_minutes have passed"
)


@dataclass
class ActiveSpec:
    """How the agent decides (see the module docstring). ``md``: :func:`run_md` protocol
    fields (``steps``, ``dt``, ``temperature_K``, ``integrator``, ...)."""

    alpha: float = 0.05
    margin: float = 0.10
    replicas_per_round: int = 8
    max_rounds: int = 6
    max_replica_ps: float | None = None
    max_minutes: float | None = None
    seed: int = 0
    #: the first replica id (its start structure and random stream): a comparison after a
    #: stability study starts past that study's replicas, so it does not repeat them
    first_replica: int = 0
    md: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not 0 < self.alpha < 0.5:
            raise ValueError(f"alpha must be in (0, 0.5), got {self.alpha}")
        if not self.margin > 0:
            raise ValueError(f"margin (a fraction of the run length) must be > 0: {self.margin}")
        if not (isinstance(self.first_replica, int) and self.first_replica >= 0):
            raise ValueError(f"first_replica must be an integer >= 0, got {self.first_replica!r}")
        for name in ("replicas_per_round", "max_rounds"):
            v = getattr(self, name)
            if not (isinstance(v, int) and not isinstance(v, bool) and v >= 1):
                raise ValueError(f"{name} must be an integer >= 1, got {v!r}")
        for name in ("max_replica_ps", "max_minutes"):
            v = getattr(self, name)
            if v is not None and not v > 0:
                raise ValueError(f"{name} must be > 0 or None, got {v!r}")
        self.protocol = make_protocol(None, **self.md)  # a bad MD field fails here

    @property
    def run_fs(self) -> float:
        """Each replica's run length, fs."""
        return self.protocol.steps * self.protocol.dt

    def to_dict(self) -> dict[str, Any]:
        return {**{k: v for k, v in asdict(self).items()}, "stopping_rule": STOPPING_RULE}


@dataclass
class Verdict:
    """The agent's answer: per-variant survival statistics, the pairwise verdicts, the
    ranking by restricted mean survival time, the winner (better than every other variant
    with the stated confidence; None when there is none) and the round history."""

    spec: dict[str, Any]
    summaries: dict[str, dict[str, Any]]
    pairs: list[dict[str, Any]]
    ranking: list[str]
    winner: str | None
    stopped_because: str
    rounds: list[dict[str, Any]]

    def markdown(self) -> str:
        """The verdict as markdown: a sentence, the ranked table and the pairs."""
        alpha = self.spec["alpha"]
        lines = [
            f"**Verdict** (family-wise α = {alpha}, equivalence margin ±"
            f"{self.spec['margin']:.0%} of the run; {len(self.rounds)} round(s); stopped: "
            f"{self.stopped_because}): "
            + (f"**{self.winner}** is the most stable." if self.winner else "no single winner."),
            "",
            "| rank | variant | replicas | unstable | RMST (fs) [95 % CI] | median t_inst (fs) "
            "[95 % CI] | fraction stable [95 % CI] |",
            "| ---: | --- | ---: | ---: | --- | --- | --- |",
        ]
        ramp = "failure_temperature_median_K" in next(iter(self.summaries.values()))
        if ramp:  # a heating ramp: the median t_inst as the temperature at which it falls
            lines[2] += " median failure temperature (K) [95 % CI] |"
            lines[3] += " --- |"
        for k, name in enumerate(self.ranking, 1):
            s = self.summaries[name]
            med = format_ci(
                s["t_inst_median_fs"], s["t_inst_median_fs_lo"], s["t_inst_median_fs_hi"]
            )
            frac = format_ci(
                s["fraction_stable"], s["fraction_stable_lo"], s["fraction_stable_hi"], ".2f"
            )
            row = (
                f"| {k} | {name} | {s['n_replicas']} | {s['n_unstable']} | "
                f"{format_ci(s['rmst_fs'], s['rmst_fs_lo'], s['rmst_fs_hi'])} | {med} | "
                f"{frac} |"
            )
            if ramp:
                t_k = [s[f"failure_temperature_median_K{x}"] for x in ("", "_lo", "_hi")]
                row += f" {format_ci(*t_k)} |"
            lines.append(row)
        lines += [
            "",
            "| pair | verdict | log-rank p (Holm) | RMST difference (fs) [95 % CI] |",
            "| --- | --- | ---: | --- |",
        ]
        for p in self.pairs:
            what = p["verdict"] + (f": {p['winner']} longer" if p["winner"] else "")
            lines.append(
                f"| {p['a']} vs {p['b']} | {what} | {p['p_holm']:.3g} | "
                f"{p['rmst_diff_fs']:+.0f} [{p['rmst_diff_lo_fs']:+.0f}, "
                f"{p['rmst_diff_hi_fs']:+.0f}] |"
            )
        return "\n".join(lines) + "\n"


class ActiveComparison:
    """Runs the rounds of :class:`ActiveSpec` on ``models`` ({variant: model or list of
    models, one per training seed}) from the start structures ``images``; everything is
    kept under ``out_dir``. ``tracker`` (an :class:`ase_mlff.tracking.Tracker`) records
    one MLflow run with a step per round (a child of ``parent`` when given).
    ``run_round`` replaces the MD of one variant's round (tests); by default
    :func:`run_md`."""

    def __init__(
        self,
        models: Mapping[str, torch.nn.Module | Sequence[torch.nn.Module]],
        images: Sequence[Atoms],
        spec: ActiveSpec,
        out_dir: str | Path,
        *,
        dtype: torch.dtype = torch.float64,
        device: str | torch.device = "cpu",
        detector_factory: Callable = default_detectors,
        tracker=None,
        parent=None,
        run_round: Callable | None = None,
    ) -> None:
        if len(models) < 2:
            raise ValueError(f"a comparison needs at least two variants, got {list(models)}")
        if not images:
            raise ValueError("a comparison needs at least one start structure")
        self.models = {
            str(k): list(v) if isinstance(v, (list, tuple)) else [v] for k, v in models.items()
        }
        empty = [k for k, v in self.models.items() if not v]
        if empty:
            raise ValueError(f"variants without a model: {empty}")
        self.images, self.spec, self.out = list(images), spec, Path(out_dir)
        self.dtype, self.device, self.detector_factory = dtype, device, detector_factory
        self.tracker, self.parent = tracker, parent
        self.run_round = run_round or self._md_round

    def _md_round(self, variant: str, ids: list[int]) -> dict[str, list]:
        """t_inst and stability of replicas ``ids`` of ``variant`` (model id mod n)."""
        models = self.models[variant]
        t_inst = [float("nan")] * len(ids)
        stable = [True] * len(ids)
        for m, model in enumerate(models):
            mine = [k for k, r in enumerate(ids) if r % len(models) == m]
            if not mine:
                continue
            run = run_md(
                model,
                [self.images[ids[k] % len(self.images)] for k in mine],
                replica_ids=[ids[k] for k in mine],
                seed=self.spec.seed,
                detector_factory=self.detector_factory,
                dtype=self.dtype,
                device=self.device,
                **self.spec.md,
            )
            for k, res in zip(mine, run.replicas):
                t_inst[k], stable[k] = float(res.t_inst_fs), bool(res.stable)
        return {"t_inst_fs": t_inst, "stable": stable}

    def _load_rounds(self) -> list[dict[str, Any]]:
        import json

        rounds = []
        while (path := self.out / f"round_{len(rounds):02d}.json").exists():
            data = json.loads(path.read_text())
            if data["spec"] != jsonable(self.spec.to_dict()):
                raise ValueError(
                    f"{path} belongs to a comparison with another spec; use another out_dir"
                )
            rounds.append(data)
        return rounds

    def _verdicts(self, data: dict[str, tuple[list, list]]) -> list[dict[str, Any]]:
        groups = {k: (np.array(t, float), np.array(s, bool)) for k, (t, s) in data.items()}
        s = self.spec
        return pairwise_verdicts(groups, s.run_fs, s.alpha, s.margin, looks=s.max_rounds)

    def first_round_replica_ps(self) -> float:
        """The MD of the first round (every variant), replica-ps."""
        return len(self.models) * self.spec.replicas_per_round * self.spec.run_fs / 1000.0

    def run(self) -> Verdict:
        s, k = self.spec, self.spec.replicas_per_round
        self.out.mkdir(parents=True, exist_ok=True)
        rounds = self._load_rounds()
        data = {v: ([], []) for v in self.models}
        for rd in rounds:
            for v, res in rd["results"].items():
                data[v][0].extend(res["t_inst_fs"])
                data[v][1].extend(res["stable"])
        pairs = self._verdicts(data) if rounds else []
        first = self.first_round_replica_ps()
        if s.max_replica_ps is not None and first > s.max_replica_ps:
            raise ValueError(
                f"max_replica_ps ({s.max_replica_ps}) is below one round of every variant "
                f"({first:g} replica-ps): raise it or run fewer replicas per round"
            )
        t0 = time.perf_counter()
        used_ps = sum(rd["replica_ps"] for rd in rounds)
        while True:
            open_pairs = [p for p in pairs if p["verdict"] == "unresolved"]
            alloc = (
                sorted({v for p in open_pairs for v in (p["a"], p["b"])})
                if rounds
                else list(self.models)
            )
            cost = len(alloc) * k * s.run_fs / 1000.0
            if rounds and not open_pairs:
                why = "every pair resolved"
            elif len(rounds) >= s.max_rounds:
                why = f"max_rounds ({s.max_rounds}) reached"
            elif s.max_replica_ps is not None and used_ps + cost > s.max_replica_ps:
                why = f"the next round would pass max_replica_ps ({s.max_replica_ps})"
            elif s.max_minutes is not None and (time.perf_counter() - t0) / 60 > s.max_minutes:
                why = f"max_minutes ({s.max_minutes}) spent"
            else:
                why = None
            if why:
                break
            r = len(rounds)
            ids = list(range(s.first_replica + r * k, s.first_replica + (r + 1) * k))
            results = {v: self.run_round(v, ids) for v in alloc}
            for v, res in results.items():
                data[v][0].extend(res["t_inst_fs"])
                data[v][1].extend(res["stable"])
            pairs = self._verdicts(data)
            used_ps += cost
            rd = {
                "round": r,
                "spec": jsonable(s.to_dict()),
                "allocation": {v: k for v in alloc},
                "replica_ids": ids,
                "results": results,
                "replica_ps": cost,
                "pairs": [
                    {x: p[x] for x in ("a", "b", "verdict", "winner", "p_holm")} for p in pairs
                ],
            }
            write_json(self.out / f"round_{r:02d}.json", rd)
            rounds.append(rd)
            log.info("round %d: %s", r, {f"{p['a']}/{p['b']}": p["verdict"] for p in pairs})
        verdict = self._verdict(data, pairs, why, rounds)
        write_json(self.out / "verdict.json", asdict(verdict))
        (self.out / "verdict.md").write_text(verdict.markdown())
        self.figures = verdict_figures(rounds, s.run_fs, s.protocol)
        for name, fig in self.figures.items():
            fig.savefig(self.out / name, dpi=120, bbox_inches="tight")
        if self.tracker is not None:
            self._track(verdict)
        return verdict

    def _verdict(self, data, pairs, why, rounds) -> Verdict:
        s = self.spec
        summaries = {
            v: survival_summary(np.array(t, float), np.array(st, bool), s.run_fs)
            for v, (t, st) in data.items()
        }
        if s.protocol.temperature_end_K is not None:  # a ramp: t_inst read as a temperature
            for summary in summaries.values():
                for key in ("", "_lo", "_hi"):
                    t = summary[f"t_inst_median_fs{key}"]
                    summary[f"failure_temperature_median_K{key}"] = (
                        s.protocol.temperature_at(t / s.protocol.dt) if np.isfinite(t) else np.nan
                    )
        ranking = sorted(summaries, key=lambda v: -summaries[v]["rmst_fs"])
        winner = None
        for v in ranking[:1]:
            mine = [p for p in pairs if v in (p["a"], p["b"])]
            if mine and all(p["verdict"] == "different" and p["winner"] == v for p in mine):
                winner = v
        return Verdict(
            spec=jsonable(s.to_dict()),
            summaries=summaries,
            pairs=pairs,
            ranking=ranking,
            winner=winner,
            stopped_because=why,
            rounds=[
                {x: rd[x] for x in ("round", "allocation", "replica_ps", "pairs")} for rd in rounds
            ],
        )

    def _track(self, verdict: Verdict) -> None:
        """One MLflow run: the spec and stopping rule as params, a step per round (its
        allocation and the pairs' Holm p-values), the verdict as tags and artifacts."""
        params = {k: v for k, v in verdict.spec.items() if k != "md"}
        params.update({f"md.{k}": v for k, v in self.spec.md.items()})
        with self.tracker.run("active_comparison", params=params, parent=self.parent) as run:
            for rd in verdict.rounds:
                metrics = {f"replicas_{v}": float(n) for v, n in rd["allocation"].items()}
                metrics.update(
                    {f"p_holm_{p['a']}_vs_{p['b']}": float(p["p_holm"]) for p in rd["pairs"]}
                )
                metrics["replica_ps"] = float(rd["replica_ps"])
                run.log_metrics(metrics, step=rd["round"])
            run.set_tags(
                {
                    "verdict_winner": verdict.winner or "none",
                    "stopped_because": verdict.stopped_because,
                }
            )
            run.log_dict(asdict(verdict), "verdict.json")
            run.log_artifact(self.out / "verdict.md")
            for name, fig in getattr(self, "figures", {}).items():
                run.log_figure(fig, name)


def verdict_figures(rounds: Sequence[Mapping[str, Any]], run_fs: float, protocol=None) -> dict:
    """The verdict's evidence as figures, from the rounds (``round_XX.json`` contents):
    ``active_survival.png``, each variant's Kaplan–Meier curve over all its replicas with
    the 95 % log-log band (under a heating ramp a second axis gives the target
    temperature); ``active_allocation.png``, the replicas each variant got per round."""
    from ase_mlff.metrics.plots import _plt, survival_figure
    from ase_mlff.metrics.stability import kaplan_meier

    data: dict[str, tuple[list, list]] = {}
    for rd in rounds:
        for v, res in rd["results"].items():
            t, st = data.setdefault(v, ([], []))
            t.extend(float("nan") if x is None else x for x in res["t_inst_fs"])
            st.extend(res["stable"])
    curves = {
        f"{v} (n = {len(t)})": kaplan_meier(np.array(t, float), np.array(st, bool), run_fs)
        for v, (t, st) in data.items()
    }
    fig = survival_figure(curves)
    ax = fig.axes[0]
    if protocol is not None and protocol.temperature_end_K is not None:
        top = ax.secondary_xaxis(
            "top",
            functions=(
                lambda ps: (
                    protocol.temperature_K
                    + (protocol.temperature_end_K - protocol.temperature_K) * ps * 1000 / run_fs
                ),
                lambda k: (
                    (k - protocol.temperature_K)
                    / (protocol.temperature_end_K - protocol.temperature_K)
                    * run_fs
                    / 1000
                ),
            ),
        )
        top.set_xlabel("target temperature (K)")
    plt = _plt()
    fig2, ax2 = plt.subplots(figsize=(5, 3.2))
    variants = list(data)
    bottom = np.zeros(len(rounds))
    for v in variants:
        n = np.array([rd["allocation"].get(v, 0) for rd in rounds], float)
        ax2.bar([rd["round"] for rd in rounds], n, bottom=bottom, label=v)
        bottom += n
    ax2.set(xlabel="round", ylabel="replicas run")
    ax2.legend(fontsize=7)
    fig2.tight_layout()
    return {"active_survival.png": fig, "active_allocation.png": fig2}
