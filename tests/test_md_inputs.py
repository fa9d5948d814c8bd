"""Bad MD parameters fail at once, with a ValueError naming the parameter and the value,
before any model evaluation, calculator, file or Ray start; valid ones still run."""

import math

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.build import molecule
from ase.neighborlist import neighbor_list

from ase_mlff.calculators import MLFFCalculator
from ase_mlff.graph import Batch
from ase_mlff.md import MDParameterError, run_md, validate_md_parameters
from ase_mlff.md.ase_driver import run_ase_md
from ase_mlff.models.base import Potential, scatter_sum

torch.set_num_threads(1)


class Springs(Potential):
    """E = ½k Σ (r − r0)² over the pairs within 3 Å of one template molecule."""

    def __init__(self, template: Atoms, k: float = 20.0) -> None:
        super().__init__()
        self.cutoff, self.config = 2.0, {"name": "springs"}
        i, j, d = neighbor_list("ijd", template, 3.0)
        m = i < j
        self.i, self.j, self.r0, self.k = (
            torch.as_tensor(i[m]),
            torch.as_tensor(j[m]),
            torch.as_tensor(d[m]),
            k,
        )
        self.n = len(template)

    def forward(self, batch: Batch) -> torch.Tensor:
        off = (torch.arange(batch.n_systems) * self.n)[:, None]
        gi, gj = (off + self.i).flatten(), (off + self.j).flatten()
        r = (batch.pos_nc[gj] - batch.pos_nc[gi]).norm(dim=1)
        e = 0.5 * self.k * (r - self.r0.repeat(batch.n_systems).to(r.dtype)) ** 2
        return scatter_sum(e, batch.system_n[gi], batch.n_systems)


class NeverCalled(Potential):
    """Fails the test if the MD engine evaluates it: validation must come first."""

    cutoff, config = 2.0, {"name": "never"}

    def forward(self, batch: Batch) -> torch.Tensor:
        pytest.fail("the model was evaluated before the parameters were checked")


def _water() -> Atoms:
    a = molecule("H2O")
    a.rattle(0.02, seed=0)
    return a


nan, inf = math.nan, math.inf

# (keyword arguments that make one parameter bad, the regex the message must match)
BAD = [
    ({"dt": 0.0}, r"\bdt\b.*0\.0"),
    ({"dt": -0.5}, r"\bdt\b.*-0\.5"),
    ({"dt": nan}, r"\bdt\b.*nan"),
    ({"dt": inf}, r"\bdt\b.*inf"),
    ({"temperature_K": -1.0}, r"temperature_K.*-1\.0"),
    ({"temperature_K": nan}, r"temperature_K.*nan"),
    ({"temperature_K": inf}, r"temperature_K.*inf"),
    ({"integrator": "nose_hoover", "temperature_K": 0.0}, r"temperature_K.*Nos"),
    ({"integrator": "langevin", "friction": -0.01}, r"friction.*-0\.01"),
    ({"integrator": "langevin", "friction": nan}, r"friction.*nan"),
    ({"integrator": "nose_hoover", "tdamp": 0.0}, r"tdamp.*0\.0"),
    ({"integrator": "nose_hoover", "tdamp": -50.0}, r"tdamp.*-50"),
    ({"integrator": "npt_berendsen", "taut": 0.0}, r"taut.*0\.0"),
    ({"integrator": "npt_berendsen", "taup": -1.0}, r"taup.*-1\.0"),
    ({"integrator": "npt_berendsen", "compressibility": -1e-5}, r"compressibility.*-1e-05"),
    ({"integrator": "npt_berendsen", "pressure_bar": nan}, r"pressure_bar.*nan"),
    ({"steps": 0}, r"\bsteps\b.*got 0"),
    ({"steps": -10}, r"\bsteps\b.*-10"),
    ({"steps": 10.5}, r"\bsteps\b.*10\.5"),
    ({"steps": 10.0}, r"\bsteps\b.*10\.0"),
    ({"check_every": 0}, r"check_every.*got 0"),
    ({"record_every": 0}, r"record_every.*got 0"),
    ({"record_every": -1}, r"record_every.*-1"),
    ({"checkpoint_every": 0}, r"checkpoint_every.*got 0"),
    ({"checkpoint_every": 15, "check_every": 10}, r"checkpoint_every.*multiple"),
    ({"integrator": "verlet"}, r"unknown integrator 'verlet'"),
]
BAD_IDS = [",".join(f"{k}={v}" for k, v in kw.items()) for kw, _ in BAD]

# images that are no valid replica list (sizes may differ between images: that is fine)
BAD_IMAGES = [
    ([], r"images must hold at least one structure"),
    ([Atoms()], r"images\[0\] has 0 atoms"),
    ([_water(), molecule("CH4"), Atoms()], r"images\[2\] has 0 atoms"),
    (_water(), r"images must be a list of Atoms"),
]


@pytest.mark.parametrize("bad, match", BAD, ids=BAD_IDS)
def test_run_md_rejects_bad_parameters(bad, match):
    kw = {"steps": 20, **bad}
    with pytest.raises(ValueError, match=match) as err:
        run_md(NeverCalled(), [_water()], **kw)
    assert isinstance(err.value, MDParameterError)


@pytest.mark.parametrize("images, match", BAD_IMAGES)
def test_run_md_rejects_bad_images(images, match):
    with pytest.raises(ValueError, match=match):
        run_md(NeverCalled(), images, steps=20)


ASE_BAD = [
    (kw, m)
    for kw, m in BAD
    if kw.get("integrator") in (None, "langevin", "nose_hoover") and "checkpoint_every" not in kw
]


@pytest.mark.parametrize(
    "bad, match", ASE_BAD, ids=[",".join(map(str, b.items())) for b, _ in ASE_BAD]
)
def test_run_ase_md_rejects_bad_parameters(bad, match):
    def factory():
        pytest.fail("a calculator was made before the parameters were checked")

    with pytest.raises(ValueError, match=match):
        run_ase_md([_water()], factory, **{"steps": 20, **bad})


@pytest.mark.parametrize("images, match", BAD_IMAGES)
def test_run_ase_md_rejects_bad_images(images, match):
    with pytest.raises(ValueError, match=match):
        run_ase_md(images, lambda: pytest.fail("calculator made"), steps=20)


def test_run_ase_md_rejects_npt():
    with pytest.raises(ValueError, match="unknown integrator 'npt_berendsen'"):
        run_ase_md(
            [_water()], lambda: pytest.fail("calculator made"), steps=5, integrator="npt_berendsen"
        )


def test_valid_calls_still_run(tmp_path):
    """Legal edge values: 0 K with NVE and Langevin, friction 0, images of other sizes."""
    water, methane = _water(), molecule("CH4")
    model = Springs(water)
    run = run_md(
        model,
        [water, water],
        steps=20,
        dt=0.5,
        integrator="langevin",
        temperature_K=0.0,
        friction=0.0,
        detectors=[],
        check_every=5,
        record_every=5,
    )
    assert run.steps == 20 and len(run.replicas) == 2
    assert all(r.stable and len(r.times_fs) == 5 for r in run.replicas)
    assert np.isfinite(run.replicas[0].energy_t).all()
    run = run_md(
        model,
        [water],
        steps=10,
        integrator="nve",
        temperature_K=0.0,
        detectors=[],
        traj_dir=tmp_path,
        checkpoint_every=10,
        record_every=5,
    )
    assert run.replicas[0].stable and run.t_inst()[0] == 5.0
    run = run_ase_md(
        [water],
        lambda: MLFFCalculator(model),
        steps=10,
        integrator="nve",
        temperature_K=300.0,
        check_every=5,
        record_every=5,
        detector_factory=lambda starts, state: [],
    )
    assert run.replicas[0].stable and len(run.replicas[0].times_fs) == 3
    # different sizes are fine for the checks (batched replicas)
    validate_md_parameters(steps=1, dt=0.1, temperature_K=0.0, images=[water, methane])


# ---- stability studies: fail before Ray starts or a directory is made --------------------


@pytest.fixture
def no_ray(monkeypatch):
    class RayStarted(Exception):
        pass

    def ensure_ray(*args, **kwargs):
        raise RayStarted("ensure_ray was called")

    monkeypatch.setattr("ase_mlff.agents.study.ensure_ray", ensure_ray)
    return RayStarted


STUDY_BAD = [({"md": {"steps": 20, **kw}}, m) for kw, m in BAD if "checkpoint_every" not in kw] + [
    ({"md": {"steps": 20}, "n_agents": 0}, r"n_agents.*got 0"),
    ({"md": {"steps": 20}, "n_agents": -2}, r"n_agents.*-2"),
    ({"md": {"steps": 20}, "threads_per_agent": 0}, r"threads_per_agent.*got 0"),
    ({"md": {"steps": 20}, "checkpoint_every": 0}, r"checkpoint_every.*got 0"),
    ({"md": {"steps": 20, "check_every": 7}}, r"checkpoint_every.*multiple"),
    ({"md": {"dt": 0.5}}, r"md needs 'steps'"),
    ({"md": {"steps": 20, "temprature_K": 300}}, r"temprature_K"),
    ({"md": {"steps": 20, "dtype": "float32"}}, r"\['dtype'\]"),
]


@pytest.mark.parametrize("kwargs, match", STUDY_BAD, ids=[str(k)[:60] for k, _ in STUDY_BAD])
def test_study_rejects_bad_input_before_ray(kwargs, match, no_ray, tmp_path):
    from ase_mlff.agents.study import run_stability_study

    out = tmp_path / "study"
    with pytest.raises(ValueError, match=match):
        run_stability_study(["aspirin-painn"], [_water()], n_replicas=2, out_dir=out, **kwargs)
    assert not out.exists()


@pytest.mark.parametrize(
    "starts, match",
    [([], r"no start structures"), ([Atoms()], r"starts\[0\] has 0 atoms")],
)
def test_study_rejects_bad_starts(starts, match, no_ray, tmp_path):
    from ase_mlff.agents.study import run_stability_study

    with pytest.raises(ValueError, match=match):
        run_stability_study(["m"], starts, n_replicas=2, out_dir=tmp_path, md={"steps": 20})


def test_study_valid_input_reaches_ray(no_ray, tmp_path):
    from ase_mlff.agents.study import run_stability_study

    md = {
        "steps": 20,
        "dt": 0.5,
        "integrator": "langevin",
        "temperature_K": 0.0,
        "seed": 1,
        "check_every": 10,
        "record_every": 10,
        "friction": 0.0,
    }
    with pytest.raises(no_ray):
        run_stability_study(["m"], [_water()], n_replicas=2, out_dir=tmp_path, md=md, n_agents=1)


# ---- the recipe: usage + one line naming the flag, exit status 2, before any work -----------


class WorkStarted(Exception):
    pass


@pytest.fixture
def recipe(monkeypatch):
    from ase_mlff.recipes import stability

    def no_work(*args, **kwargs):
        raise WorkStarted

    monkeypatch.setattr("ase_mlff.agents.benchmark.start_structures", no_work)
    monkeypatch.setattr("ase_mlff.agents.study.ensure_ray", no_work)
    return stability


RECIPE_BAD = [
    (["--agents", "0"], "--agents"),
    (["--check-every", "0"], "--check-every"),
    (["--record-every", "0"], "--record-every"),
    (["--replicas", "0"], "--replicas"),
    (["--steps", "0"], "--steps"),
    (["--steps", "-5"], "--steps"),
    (["--dt", "0"], "--dt"),
    (["--dt", "nan"], "--dt"),
    (["--temperature", "-10"], "--temperature"),
    (["--temperature", "0", "--integrator", "nose_hoover"], "--temperature"),
    (["--friction", "-0.01"], "--friction"),
    (["--tdamp", "0"], "--tdamp"),
    (["--delta", "0"], "--delta"),
    (["--nve-steps", "-1"], "--nve-steps"),
]


@pytest.mark.parametrize("argv, flag", RECIPE_BAD, ids=[" ".join(a) for a, _ in RECIPE_BAD])
def test_recipe_rejects_bad_flags(argv, flag, recipe, capsys):
    with pytest.raises(SystemExit) as err:
        recipe.main(argv)
    assert err.value.code == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert "error:" in last and flag in last


def test_recipe_valid_flags_reach_the_work(recipe):
    with pytest.raises(WorkStarted):
        recipe.main(
            [
                "--steps",
                "20",
                "--temperature",
                "0",
                "--integrator",
                "langevin",
                "--agents",
                "1",
                "--replicas",
                "2",
                "--nve-steps",
                "40",
            ]
        )
