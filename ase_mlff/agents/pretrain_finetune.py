"""Paper 000's study: a model pre-trained on a large, diverse set, fine-tuned on aspirin,
against the same architecture trained from scratch at the same fine-tuning budget
(recipe ``pretrain_finetune``).

    from ase_mlff.agents.pretrain_finetune import study_spec, pretrain_finetune
    out = pretrain_finetune(study_spec("organic-painn", **profile), Path("runs/ptft"))

Paper 000 (Maheshwari et al.) fine-tunes a GemNet-T pre-trained on OC20 on MD17 aspirin
and finds, at equal force MAE, t_inst of 274 ± 45 ps against 43 ± 26 ps from scratch
(Fig. 2), explained by latent structure (Figs. 4–5), smoother bond-force responses
(Fig. 6) and lower ΔF MAE between nearby configurations (Fig. 7). Here, offline:

* **the pre-trained model** is a checkpoint (default the shipped ``organic-painn``,
  PaiNN pre-trained on GFN2-xTB labels of 419 small CHNO molecules that exclude the eight
  MD17 molecules, as MD17 is absent from OC20);
* **the two variants** (:class:`~ase_mlff.agents.comparison.ComparisonAgent`): ``scratch``
  (the checkpoint's architecture, element table included, from fresh weights) and
  ``pretrained`` (every weight of the checkpoint fine-tuned, reference energies refitted);
  the same frames, epochs, batch size, optimiser and schedule, so the same optimiser
  steps; only the starting weights differ. Each trains with stability probes every
  ``probe_every`` epochs (paper 000 Fig. 2b), for every seed;
* **afterwards** (:func:`pretrain_finetune`): t_inst vs epoch with the spread over the
  seeds; h(r) of MD with the first and the last probed checkpoints against the reference
  (Fig. 3); the evaluation report of the seed-0 models
  (:func:`~ase_mlff.agents.evaluation.evaluation_report`): force metrics, latent t-SNE and
  UMAP with classes = the test molecule, the other seven MD17 molecules and the diverse
  set, a sample per frame by default (``latent_pool``), per-class silhouettes and their
  histograms (Figs. 4–5), bond-force scans of C11–O8,
  C6–O12 and C10=O7 against GFN2-xTB (Fig. 6) and the ΔF MAE over the 100 configurations
  nearest a reference frame (Fig. 7); ``summary.json`` sets the numbers beside the paper's.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from ase_mlff.utils import write_json

log = logging.getLogger(__name__)

#: paper 000's numbers (Results, Fig. 2b; epoch 300), for the summary
PAPER_000 = {
    "t_inst_pretrained_ps": (274.2, 44.6),
    "t_inst_scratch_ps": (42.6, 25.9),
    "force_mae_rms_difference_meV_A": 0.421,
    "model": "GemNet-T, OC20-S2EF-2M pre-training, MD17 aspirin 10k fine-tuning, 500 K",
}


def checkpoint_architecture(checkpoint: str) -> tuple[Path, dict[str, Any]]:
    """The checkpoint's folder and its model config (the scratch variant's architecture)."""
    from ase_mlff.calculators.mlff import resolve_model_path
    from ase_mlff.models.io import read_metadata

    path = resolve_model_path(checkpoint)
    return path, dict(read_metadata(path)["model"])


def study_spec(
    checkpoint: str,
    *,
    data: str = "aspirin",
    n_train: int = 950,
    n_val: int = 50,
    epochs: int,
    batch_size: int = 16,
    lr: float = 1e-3,
    probe_every: int,
    probe_starts: int = 4,
    probe_steps: int,
    seeds: list[int],
    md: dict[str, Any],
    name: str = "pretrain_finetune",
    threads: int = 1,
    probe_temperature_K: float | None = None,
) -> dict[str, Any]:
    """The comparison spec of the study (module doc): scratch and pretrained at the same
    budget and schedule, the checkpoint's architecture for both."""
    _, arch = checkpoint_architecture(checkpoint)
    probe = {
        "probe_every": probe_every,
        "probe_starts": probe_starts,
        "probe_steps": probe_steps,
        "probe_temperature_K": float(
            probe_temperature_K
            if probe_temperature_K is not None
            else md.get("temperature_K", 500.0)
        ),
    }
    return {
        "name": name,
        "data": data,
        "n_train": n_train,
        "n_val": n_val,
        "model": arch,
        "train": {
            "epochs": epochs,
            "batch_size": batch_size,
            "lr": lr,
            "lr_factor": 0.7,
            "lr_patience": max(2, epochs // 10),
            "stop_early": False,
            "threads": threads,
            **probe,
        },
        "variants": [
            {"name": "scratch", "kind": "scratch"},
            {"name": "pretrained", "kind": "pretrained", "checkpoint": str(checkpoint)},
        ],
        "seeds": list(seeds),
        "md": dict(md),
        "reference": {"name": "tblite"},
        "register_as": f"{name}-best",
    }


def variant_runs(out: Path) -> dict[str, list[dict[str, Any]]]:
    """``{variant: [variant_done.json of each seed, seed order]}`` of a finished study."""
    from ase_mlff.agents.comparison import read_variant_done

    runs: dict[str, list[dict[str, Any]]] = {}
    for done in sorted((Path(out) / "variants").glob("*/variant_done.json")):
        info = read_variant_done(done.parent)
        info["dir"] = str(done.parent)
        runs.setdefault(info["variant"], []).append(info)
    for v in runs.values():
        v.sort(key=lambda i: i["seed"])
    return runs


def probed_checkpoints(info: dict[str, Any]) -> list[tuple[int, Path]]:
    """``(epoch, folder)`` of every probed checkpoint of one trained variant."""
    stage = Path(info["checkpoint"]).parent
    found = []
    for d in sorted(stage.glob("epoch_*")):
        if (d / "model.json").exists():
            found.append((int(d.name.split("_")[1]), d))
    return found


def h_r_early_late(
    runs: dict[str, list[dict[str, Any]]],
    test,
    *,
    steps: int,
    md: dict[str, Any],
    replicas: int = 4,
    seed: int = 0,
    device: str = "cpu",
) -> tuple[dict[str, Any], Any]:
    """Paper 000 Fig. 3: h(r) of MD from ``replicas`` test frames, ``steps`` long, with the
    study's integration (``md``: integrator, dt, friction, temperature; a ramp's end
    temperature is not used: h(r) is compared at the reference's temperature), with the
    first and the last probed checkpoint of each variant's seed-0 run, over the stable
    part of each replica, against the test frames' h(r); t_inst (mean over the replicas,
    stable ones at the run length) in each panel. Returns numbers and figure."""
    import torch

    from ase_mlff.md.runner import run_md
    from ase_mlff.metrics.distance_distribution import h_of_r, h_of_r_mae
    from ase_mlff.metrics.plots import _plt
    from ase_mlff.models.io import load_model
    from ase_mlff.training.probe import select_starts

    n = int(test.n_atoms_s[0])
    r, h_ref = h_of_r(test.positions_nc.reshape(len(test), n, 3))
    starts = select_starts(test, replicas)
    res: dict[str, Any] = {}
    panels = []
    for variant, infos in runs.items():
        probed = probed_checkpoints(infos[0])
        if not probed:
            continue
        for tag, (epoch, path) in (("early", probed[0]), ("late", probed[-1])):
            model, _ = load_model(path, device=device, dtype=torch.float64)
            integration = {k: md[k] for k in ("integrator", "dt", "friction") if k in md}
            run = run_md(
                model,
                starts,
                steps=steps,
                temperature_K=float(md.get("temperature_K", 500.0)),
                seed=seed,
                device=device,
                **integration,
            )
            t = run.t_inst()  # a stable replica's is the run length
            pos = [x.positions_tn3 for x in run.replicas if len(x.positions_tn3)]
            h = h_of_r(np.concatenate(pos))[1] if pos else np.zeros_like(h_ref)
            res[f"{variant}_{tag}"] = {
                "epoch": epoch,
                "t_inst_mean_ps": float(t.mean() / 1000),
                "n_unstable": int(sum(not x.stable for x in run.replicas)),
                "h_r_mae": h_of_r_mae(h, h_ref),
            }
            panels.append((f"{variant}, epoch {epoch}", h, res[f"{variant}_{tag}"]))
    plt = _plt()
    cols = 2
    rows = max(1, (len(panels) + 1) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(8, 2.8 * rows), squeeze=False)
    for ax, (title, h, info) in zip(axes.ravel(), panels):
        ax.plot(r, h_ref, "--", color="tab:blue", lw=1.2, label="reference (test)")
        ax.plot(r, h, "--", color="tab:orange", lw=1.2, label="MLFF MD")
        ax.set_title(title, fontsize=9)
        ax.text(
            0.97,
            0.92,
            f"t_inst {info['t_inst_mean_ps']:.2f} ps\nMAE_h {info['h_r_mae']:.3f}",
            transform=ax.transAxes,
            ha="right",
            va="top",
            color="tab:red",
            fontsize=8,
        )
        ax.set(xlabel="r (Å)", ylabel="h(r)", xlim=(0, 8))
        ax.grid(alpha=0.3)
    axes.ravel()[0].legend(fontsize=7)
    for ax in axes.ravel()[len(panels) :]:
        ax.axis("off")
    fig.tight_layout()
    return res, fig


def seed_summary(rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per variant: test force MAE and RMST (mean, sd, n over the seeds) and pooled
    survival, from the comparison rows."""
    out: dict[str, dict[str, Any]] = {}
    for variant in sorted({r["variant"] for r in rows}):
        mine = [r for r in rows if r["variant"] == variant]
        f = np.array([r["forces_mae"] for r in mine]) * 1e3
        t = np.array([r["rmst_fs"] for r in mine]) / 1000
        out[variant] = {
            "n_seeds": len(mine),
            "forces_mae_meV_A": [float(f.mean()), float(f.std(ddof=1)) if len(f) > 1 else 0.0],
            "rmst_ps": [float(t.mean()), float(t.std(ddof=1)) if len(t) > 1 else 0.0],
            "n_unstable": int(sum(r["n_unstable"] for r in mine)),
            "n_replicas": int(sum(r["n_replicas"] for r in mine)),
            "energy_mae_meV_atom": float(np.mean([r["energy_mae_per_atom"] for r in mine]) * 1e3),
        }
    return out


def named_models(folder: Path, infos: dict[str, dict]) -> list[str]:
    """Links ``folder/<variant>-s<seed>`` to each run's checkpoint, so that the evaluation
    report labels its models by variant and seed (it names a model by its folder)."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for variant, info in infos.items():
        link = folder / f"{variant}-s{info['seed']}"
        target = Path(info["checkpoint"]).resolve()
        if link.is_symlink() and link.resolve() != target:
            link.unlink()
        if not link.is_symlink():
            link.symlink_to(target, target_is_directory=True)
        paths.append(str(link))
    return paths


def _evaluation(runs, spec, out: Path, **opts: Any) -> dict[str, Any]:
    """The evaluation report of each variant's seed-0 model (module doc)."""
    from ase_mlff.agents.evaluation import EvaluationOptions, evaluation_report

    infos = {v: runs[v][0] for v in ("scratch", "pretrained")}
    models = named_models(out / "models", infos)
    ev, _, _ = evaluation_report(
        EvaluationOptions(
            model=models,
            data=spec["data"],
            latent_data=("md17", "organic"),
            out=out / "evaluation",
            **opts,
        )
    )
    return {
        "models": {v: str(Path(i["checkpoint"])) for v, i in infos.items()},
        "analyses": ev.get("analyses", {}),
        "scalars": {n: m.get("scalars", {}) for n, m in ev["models"].items()},
    }


def pretrain_finetune(
    spec: dict[str, Any],
    out: Path,
    *,
    h_r_steps: int,
    experiment: str = "pretrain_finetune",
    tracking_uri: str | None = None,
    device: str = "cpu",
    analyses: bool = True,
    latent_frames: int = 200,
    latent_pool: str = "frame",
) -> dict[str, Any]:
    """Run the study (module doc) into ``out``; returns the summary (also
    ``out/summary.json``). Resumable: finished variants and the stability study are
    reused (the comparison agent's own mechanism); the h(r) MD and the evaluation report
    run again."""
    from ase_mlff.agents.comparison import ComparisonAgent
    from ase_mlff.data import load_dataset
    from ase_mlff.data.splits import held_out_frames
    from ase_mlff.metrics.plots import t_inst_vs_epoch_figure
    from ase_mlff.tracking import Tracker

    out = Path(out)
    result = ComparisonAgent(
        spec, out, experiment=experiment, tracking_uri=tracking_uri, device=device
    ).run()
    runs = variant_runs(out)
    summary: dict[str, Any] = {
        "spec": spec,
        "variants": seed_summary(result.rows),
        "logrank": result.logrank,
        "best": result.best,
        "paper_000": PAPER_000,
    }
    figs: dict[str, Any] = {}
    histories = {v: [i.get("history", []) for i in infos] for v, infos in runs.items()}
    figs["t_inst_vs_epoch_seeds.png"] = t_inst_vs_epoch_figure(histories)
    summary["probes"] = {
        v: [
            {
                "seed": i["seed"],
                "epoch": h["epoch"],
                "t_inst_mean_fs": h["probe_t_inst_mean_fs"],
                "val_forces_mae": h["val_forces_mae"],
            }
            for i in infos
            for h in i.get("history", [])
            if "probe_t_inst_mean_fs" in h
        ]
        for v, infos in runs.items()
    }
    ds = load_dataset(spec["data"])
    test_idx = held_out_frames(spec["data"], ds)
    test = ds[test_idx] if test_idx is not None else ds
    summary["h_r"], figs["h_r_early_late.png"] = h_r_early_late(
        runs, test, steps=h_r_steps, md=spec["md"], device=device
    )
    if analyses:
        opts = dict(latent_frames=latent_frames, latent_pool=latent_pool, experiment=experiment)
        summary["evaluation"] = _evaluation(
            runs, spec, out, tracking_uri=tracking_uri, device=device, **opts
        )
    tracker = Tracker(experiment, uri=tracking_uri)
    parent = tracker.get_run(result.parent_run_id)
    with tracker.run("paper000-analyses", tags={"mlflow.parentRunId": parent.info.run_id}) as run_h:
        for name, fig in figs.items():
            fig.savefig(out / name, dpi=130)
            run_h.log_figure(fig, name)
        write_json(out / "summary.json", summary, nan_as_null=True)
        run_h.log_artifact(out / "summary.json")
    return summary
