"""A general (pre-trained) model on molecules it never saw: force and energy errors per
molecule and MD stability at each temperature (:mod:`ase_mlff.agents.general_model`).

    python -m ase_mlff.recipes.general_model_report --model organic-painn
    python -m ase_mlff.recipes.general_model_report --model runs/mine/best --temperatures 300 500 800

Writes ``<out>/report.json`` and ``<out>/report.md``; the figures of ``organic-painn`` on
the eight MD17 molecules are in docs/models.md.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path


def main(argv: list[str] | None = None) -> dict:
    from ase_mlff.agents.general_model import held_out_report, report_markdown

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--model", default="organic-painn", help="shipped name or checkpoint")
    p.add_argument("--data", default="md17", help="a set that labels frames by molecule")
    p.add_argument("--temperatures", type=float, nargs="+", default=[300.0, 500.0])
    p.add_argument("--replicas", type=int, default=4, help="per molecule and temperature")
    p.add_argument("--steps", type=int, default=4000, help="of 0.5 fs")
    p.add_argument("--device", default="cpu")
    p.add_argument("--out", type=Path, default=Path("runs") / "general_model_report")
    a = p.parse_args(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    t0 = time.perf_counter()
    rep = held_out_report(
        a.model,
        a.data,
        temperatures_K=tuple(a.temperatures),
        replicas=a.replicas,
        steps=a.steps,
        device=a.device,
    )
    rep["seconds"] = time.perf_counter() - t0
    a.out.mkdir(parents=True, exist_ok=True)
    (a.out / "report.json").write_text(json.dumps(rep, indent=1))
    table = report_markdown(rep)
    (a.out / "report.md").write_text(table + "\n")
    print(table)
    print(f"mean F-MAE over molecules {rep['forces_mae_meV_A_mean_over_molecules']:.1f} meV/Å; "
          f"{rep['seconds'] / 60:.1f} min; {a.out}")
    return rep


if __name__ == "__main__":
    from ase_mlff.recipes.cli import run_recipe

    run_recipe(main)
