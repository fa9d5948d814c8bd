"""The active comparison agent (issue 15): between a potential that fails sooner and one
that does not it must find the right winner within its budget; two identical ones it must
declare equivalent; an interrupted comparison resumes from its last round; the rounds are
recorded in MLflow."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from ase import Atoms

from ase_mlff.agents.active import ActiveComparison, ActiveSpec
from ase_mlff.graph.batch import replica_vectors
from ase_mlff.metrics.stability import pairwise_verdicts, rmst_difference


class Morse(torch.nn.Module):
    """A Morse bond of depth ``depth`` eV between the two atoms of H2: a shallow one
    dissociates at 1,000 K (the bond detector stops the replica), a deep one never."""

    def __init__(self, depth: float, a: float = 1.9, r_e: float = 0.74) -> None:
        super().__init__()
        self.depth, self.a, self.r_e, self.cutoff, self.species = depth, a, r_e, 6.0, [1]

    def forward(self, batch):
        r = torch.linalg.vector_norm(replica_vectors(batch, 0, 1), dim=1)
        return (self.depth * ((1 - torch.exp(-self.a * (r - self.r_e))) ** 2 - 1)).double()


STARTS = [Atoms("H2", positions=[[0, 0, 0], [0.74, 0, 0]])]
MD = {"steps": 400, "dt": 0.5, "temperature_K": 1000.0, "check_every": 10, "record_every": 20}


def test_the_sooner_failing_potential_loses_within_the_budget(tmp_path):
    """Fragile (0.3 eV) against robust (4.7 eV): the robust one wins with Holm p below
    α/max_rounds, in fewer rounds than allowed; the MLflow run has a step per round."""
    from ase_mlff.tracking import Tracker

    spec = ActiveSpec(replicas_per_round=8, max_rounds=6, md=MD, max_replica_ps=10.0)
    tracker = Tracker("active", uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    agent = ActiveComparison(
        {"fragile": Morse(0.3), "robust": Morse(4.7)},
        STARTS,
        spec,
        tmp_path / "a",
        tracker=tracker,
    )
    verdict = agent.run()
    assert verdict.winner == "robust" and verdict.ranking == ["robust", "fragile"]
    assert verdict.stopped_because == "every pair resolved"
    assert len(verdict.rounds) < spec.max_rounds
    (pair,) = verdict.pairs
    assert pair["verdict"] == "different" and pair["p_holm"] < spec.alpha / spec.max_rounds
    assert verdict.summaries["robust"]["n_unstable"] == 0
    assert "**robust** is the most stable" in (tmp_path / "a" / "verdict.md").read_text()
    runs = tracker.client.search_runs([tracker.experiment_id])
    (run,) = runs
    history = tracker.client.get_metric_history(run.info.run_id, "replicas_fragile")
    assert [m.step for m in history] == list(range(len(verdict.rounds)))
    assert run.data.tags["verdict_winner"] == "robust"
    assert float(run.data.params["alpha"]) == 0.05


def test_identical_potentials_are_declared_equivalent(tmp_path):
    """Two copies of the fragile potential: never different, and equivalent (their RMST
    difference inside ±15 % of the run) once enough replicas ran, before the last round."""
    spec = ActiveSpec(replicas_per_round=16, max_rounds=6, margin=0.15, md=MD)
    verdict = ActiveComparison({"a": Morse(0.3), "b": Morse(0.3)}, STARTS, spec, tmp_path).run()
    (pair,) = verdict.pairs
    assert pair["verdict"] == "equivalent" and verdict.winner is None
    assert verdict.stopped_because == "every pair resolved"
    assert 1 < len(verdict.rounds) < spec.max_rounds  # it needed more than one round
    assert all(p["verdict"] != "different" for rd in verdict.rounds for p in rd["pairs"])


def test_budget_stops_an_open_comparison(tmp_path):
    """A budget of one round's replica-ps (2 variants × 4 replicas × 200 fs): the agent
    stops after it, saying why, with the pair still open (two potentials too alike for 4
    replicas); a budget below one round is refused before any MD."""
    with pytest.raises(ValueError, match="below one round"):
        small = ActiveSpec(replicas_per_round=4, md=MD, max_replica_ps=1.0)
        ActiveComparison({"a": Morse(0.3), "b": Morse(0.35)}, STARTS, small, tmp_path).run()
    spec = ActiveSpec(replicas_per_round=4, max_rounds=6, md=MD, max_replica_ps=1.6)
    verdict = ActiveComparison({"a": Morse(0.3), "b": Morse(0.35)}, STARTS, spec, tmp_path).run()
    assert len(verdict.rounds) == 1 and "max_replica_ps" in verdict.stopped_because
    assert verdict.pairs[0]["verdict"] == "unresolved"


def test_an_interrupted_comparison_resumes_from_its_last_round(tmp_path):
    """A comparison killed in its third round, started again, runs only the missing rounds
    and reaches the verdict of one that was never interrupted."""
    spec = ActiveSpec(replicas_per_round=16, max_rounds=6, margin=0.15, md=MD)
    models = {"a": Morse(0.3), "b": Morse(0.3)}
    whole = ActiveComparison(models, STARTS, spec, tmp_path / "whole").run()
    calls = []

    def recording(agent, dies_at=None):
        def run_round(variant, ids):
            calls.append(ids[0])
            if ids[0] == dies_at:
                raise RuntimeError("killed")
            return agent._md_round(variant, ids)

        return run_round

    first = ActiveComparison(models, STARTS, spec, tmp_path / "cut")
    first.run_round = recording(first, dies_at=2 * spec.replicas_per_round)
    with pytest.raises(RuntimeError, match="killed"):
        first.run()
    calls.clear()
    again = ActiveComparison(models, STARTS, spec, tmp_path / "cut")
    again.run_round = recording(again)
    resumed = again.run()
    assert min(calls) == 2 * spec.replicas_per_round  # rounds 0 and 1 were not run again
    assert resumed.pairs == whole.pairs and len(resumed.rounds) == len(whole.rounds)
    other = ActiveSpec(replicas_per_round=8, max_rounds=6, md=MD)
    with pytest.raises(ValueError, match="another spec"):
        ActiveComparison(models, STARTS, other, tmp_path / "cut").run()


def test_verdict_statistics_against_their_definitions():
    """The RMST difference is the difference of the two Kaplan–Meier areas (exact for
    uncensored data: the difference of the means); Bonferroni over looks tightens the
    test; bad settings are refused."""
    rng = np.random.default_rng(0)
    a = rng.uniform(0, 100, 30)
    b = rng.uniform(0, 50, 30)
    d = rmst_difference((a, np.zeros(30, bool)), (b, np.zeros(30, bool)), 100.0)
    assert d["diff_fs"] == pytest.approx(a.mean() - b.mean())
    assert d["lo_fs"] < d["diff_fs"] < d["hi_fs"]
    groups = {"a": (a, np.zeros(30, bool)), "b": (b, np.zeros(30, bool))}
    one = pairwise_verdicts(groups, 100.0, looks=1)[0]
    many = pairwise_verdicts(groups, 100.0, looks=10**9)[0]
    assert one["verdict"] == "different" and one["winner"] == "a"
    assert many["verdict"] == "unresolved"
    # no failures at all: the KM variance is 0, so only the exact bound on the failure
    # fraction can show equivalence; 8 replicas each cannot (a model failing 30 % of the
    # time shows no failure in 8 with probability 6 %), 60 each can (bound 8.7 %)
    for n, verdict in ((8, "unresolved"), (60, "equivalent")):
        stable = (np.full(n, np.nan), np.ones(n, bool))
        row = pairwise_verdicts({"a": stable, "b": stable}, 100.0, looks=6)[0]
        assert row["verdict"] == verdict, (n, row)
    # crossing curves with equal RMST (30 % fail at once and the rest survive, against
    # all failing at 70.3 fs of 100): log-rank rejects, but no winner is named
    early = np.r_[np.full(30, 1.0), np.full(70, np.nan)]
    crossing = {
        "a": (early, np.r_[np.zeros(30, bool), np.ones(70, bool)]),
        "b": (np.full(100, 70.3), np.zeros(100, bool)),
    }
    row = pairwise_verdicts(crossing, 100.0)[0]
    assert row["p_holm"] < 1e-6 and row["winner"] is None and row["verdict"] != "different"
    for bad in ({"alpha": 0.7}, {"margin": 0.0}, {"replicas_per_round": 0}, {"md": {"dt": -1}}):
        with pytest.raises(ValueError):
            ActiveSpec(**bad)


def test_a_heating_ramp_verdict_reports_failure_temperatures(tmp_path):
    """Under a heating ramp (200 → 2,000 K over the run) the verdict gives each variant's
    median failure temperature: the ramp's value at its median t_inst, with the same CI;
    the never-failing variant's is beyond the run."""
    md = {**MD, "temperature_K": 200.0, "temperature_end_K": 2000.0}
    spec = ActiveSpec(replicas_per_round=8, max_rounds=3, md=md)
    verdict = ActiveComparison(
        {"fragile": Morse(0.3), "robust": Morse(4.7)}, STARTS, spec, tmp_path
    ).run()
    frag = verdict.summaries["fragile"]
    t_med = frag["t_inst_median_fs"]
    assert frag["failure_temperature_median_K"] == pytest.approx(200.0 + 1800.0 * t_med / 200.0)
    assert 200.0 <= frag["failure_temperature_median_K"] <= 2000.0
    assert np.isnan(verdict.summaries["robust"]["failure_temperature_median_K"])
    header = verdict.markdown().splitlines()[2]
    assert header.endswith("| median failure temperature (K) [95 % CI] |")
    assert all(
        line.count("|") == header.count("|") for line in verdict.markdown().splitlines()[3:6]
    )


def test_verdict_figures_pool_every_round():
    """The survival figure has one curve per variant over all its replicas (n in the
    label), the allocation figure a bar per round and variant of the replicas it got."""
    from ase_mlff.agents.active import verdict_figures
    from ase_mlff.md.protocol import make_protocol

    rounds = [
        {
            "round": 0,
            "allocation": {"a": 2, "b": 2},
            "results": {
                "a": {"t_inst_fs": [10.0, None], "stable": [False, True]},
                "b": {"t_inst_fs": [None, None], "stable": [True, True]},
            },
        },
        {
            "round": 1,
            "allocation": {"a": 2},
            "results": {"a": {"t_inst_fs": [30.0, 40.0], "stable": [False, False]}},
        },
    ]
    ramp = make_protocol(None, steps=100, dt=0.5, temperature_K=300.0, temperature_end_K=600.0)
    figs = verdict_figures(rounds, 50.0, ramp)
    labels = [t.get_text() for t in figs["active_survival.png"].axes[0].get_legend().get_texts()]
    assert labels == ["a (n = 4)", "b (n = 2)"]
    bars = figs["active_allocation.png"].axes[0].patches
    assert sorted(b.get_height() for b in bars) == [0, 2, 2, 2]
