"""The MD protocol (ase_mlff.md.protocol): one frozen, checked set of MD settings with the
project's only defaults, the integrator registry, and the papers' named protocols."""

import dataclasses
import inspect
import re

import numpy as np
import pytest
import torch

from ase_mlff.md import MDParameterError, run_md
from ase_mlff.md.ase_driver import run_ase_md
from ase_mlff.md.protocol import INTEGRATORS, PROTOCOLS, MDProtocol, make_protocol
from ase_mlff.md.state import init_state
from tests.test_md_stability import TemplateSprings, _aspirin

torch.set_num_threads(1)


def test_defaults_and_immutability():
    """The documented defaults (docs/md.md), and the step functions' keyword defaults are
    the protocol's: one set of MD defaults."""
    from ase_mlff.md.integrators import init_nose_hoover_chain

    p = MDProtocol(steps=100)
    assert (p.integrator, p.dt, p.temperature_K, p.friction) == ("langevin", 0.5, 500.0, 0.01)
    assert (p.tdamp, p.check_every, p.record_every) == (50.0, 10, 20)
    assert (p.taut, p.pressure_bar, p.taup, p.compressibility, p.anisotropic) == (
        500.0,
        0.0,
        1000.0,
        4.57e-5,
        False,
    )
    for spec in INTEGRATORS.values():
        sig = inspect.signature(spec.step).parameters
        for name in spec.params:
            if sig[name].default is not inspect.Parameter.empty:
                assert sig[name].default == getattr(p, name), (spec.name, name)
    assert inspect.signature(init_nose_hoover_chain).parameters["tdamp"].default == p.tdamp
    start = _aspirin()
    state = init_state(TemplateSprings([start], [20.0]), [start], temperature_K=300, seed=0)
    chain = init_nose_hoover_chain(state, temperature_K=300.0).thermostat
    assert chain["v_xi"].shape == (1, 3)  # a chain of three links by default
    with pytest.raises(dataclasses.FrozenInstanceError):
        p.dt = 1.0
    q = p.replace(dt=1.0, integrator="nve")
    assert (q.dt, q.integrator, p.dt) == (1.0, "nve", 0.5)


@pytest.mark.parametrize(
    "changes,param,message",
    [
        ({"dt": 0.0}, "dt", "dt must be > 0 fs, got 0.0"),
        ({"integrator": "verlet"}, "integrator", "unknown integrator 'verlet'"),
        ({"tdmap": 20.0}, "tdmap", "unknown MD protocol field(s) ['tdmap']"),
        ({"steps": 0}, "steps", "steps must be an integer >= 1, got 0"),
        ({"temperature_K": -1.0}, "temperature_K", "temperature_K must be >= 0 K"),
        ({"anisotropic": "yes"}, "anisotropic", "anisotropic must be True or False"),
    ],
)
def test_a_bad_field_is_named_when_the_protocol_is_made(changes, param, message):
    with pytest.raises(MDParameterError, match=re.escape(message)) as e:
        MDProtocol(steps=100).replace(**changes)
    assert e.value.param == param
    with pytest.raises(MDParameterError, match=re.escape(message)):  # before the model is used
        run_md(None, [_aspirin()], **{"steps": 100, **changes})


def test_the_registry_matches_the_step_functions():
    """Each integrator's registered fields are keyword arguments of its step function, and a
    protocol passes exactly dt and those."""
    for name, spec in INTEGRATORS.items():
        sig = inspect.signature(spec.step).parameters
        assert "dt" in sig and all(p in sig for p in spec.params), name
        p = MDProtocol(steps=10, integrator=name)
        assert set(p.step_kwargs()) == {"dt", *spec.params}
        assert p.integration() == {"integrator": name, **p.step_kwargs()}
    assert INTEGRATORS["npt_berendsen"].periodic_only
    assert not any(INTEGRATORS[n].periodic_only for n in ("nve", "langevin", "nose_hoover"))


def test_make_protocol_from_a_name_a_mapping_or_fields():
    assert make_protocol("md17_nose_hoover") is PROTOCOLS["md17_nose_hoover"]
    p = make_protocol("md17_nose_hoover", steps=20)
    assert (p.steps, p.integrator, p.dt) == (20, "nose_hoover", 0.5)
    assert make_protocol({"steps": 5, "dt": 1.0}) == MDProtocol(steps=5, dt=1.0)
    assert make_protocol({"steps": 5}, dt=2.0).dt == 2.0
    assert make_protocol(None, steps=7) == MDProtocol(steps=7)
    with pytest.raises(MDParameterError, match="unknown MD protocol 'md18'"):
        make_protocol("md18")
    with pytest.raises(MDParameterError, match="protocol must be an MDProtocol"):
        make_protocol(3)


def test_the_papers_protocols():
    """As the papers state them: paper 003 (MD17) Nosé–Hoover, 500 K, 0.5 fs, 300 ps;
    paper 001 Langevin 2 ps⁻¹ at 0.5 fs (aspirin 500 K, water 300 K); paper 004 Table 1
    silica at 2,000 K with 2 fs steps, NVT Langevin and NPT Berendsen."""
    md17 = PROTOCOLS["md17_nose_hoover"]
    assert (md17.integrator, md17.temperature_K, md17.dt, md17.steps * md17.dt) == (
        "nose_hoover",
        500.0,
        0.5,
        300_000.0,
    )
    for name, temp in (("aspirin_langevin", 500.0), ("water_langevin", 300.0)):
        p = PROTOCOLS[name]
        assert (p.integrator, p.friction, p.dt, p.temperature_K) == ("langevin", 0.002, 0.5, temp)
    nvt, npt = PROTOCOLS["silica_nvt"], PROTOCOLS["silica_npt"]
    assert (nvt.integrator, nvt.dt, nvt.temperature_K) == ("langevin", 2.0, 2000.0)
    assert (npt.integrator, npt.dt, npt.temperature_K) == ("npt_berendsen", 2.0, 2000.0)
    assert npt.pressure_bar == pytest.approx(1.01325)  # 1 atm


def test_run_md_with_a_protocol_equals_run_md_with_its_fields():
    start = _aspirin()
    model = TemplateSprings([start], [20.0])
    p = MDProtocol(steps=40, dt=0.5, integrator="nose_hoover", temperature_K=400.0, tdamp=30.0)
    a = run_md(model, [start, start.copy()], p, seed=3, detectors=[])
    b = run_md(
        model,
        [start, start.copy()],
        steps=40,
        integrator="nose_hoover",
        temperature_K=400.0,
        tdamp=30.0,
        seed=3,
        detectors=[],
    )
    c = run_md(
        model,
        [start, start.copy()],
        "md17_nose_hoover",
        steps=40,
        temperature_K=400.0,
        tdamp=30.0,
        seed=3,
        detectors=[],
    )
    for other in (b, c):
        for ra, rb in zip(a.replicas, other.replicas, strict=True):
            np.testing.assert_array_equal(ra.positions_tn3, rb.positions_tn3)
    assert a.settings["integrator"] == "nose_hoover" and a.settings["tdamp"] == 30.0


def test_the_ase_path_takes_the_same_protocol_but_not_npt():
    with pytest.raises(MDParameterError, match="unknown integrator 'npt_berendsen' for the ASE"):
        run_ase_md([_aspirin()], lambda: None, PROTOCOLS["silica_npt"])


def test_heating_ramp_drives_the_thermostat_and_dates_failures_in_kelvin():
    """A Langevin heating ramp 100 → 2,100 K over 1 ps: the replicas' mean temperature
    follows the target (first and last tenth of the run, 64 H2 replicas, strong
    friction); a shallow Morse bond fails at a lower temperature than a deeper one, and
    each failure temperature is the ramp's value at its t_inst."""
    import numpy as np
    from ase import Atoms

    from ase_mlff.md.runner import run_md
    from tests.test_active_comparison import Morse

    h2 = [Atoms("H2", positions=[[0, 0, 0], [0.74, 0, 0]]) for _ in range(64)]
    ramp = dict(
        steps=2000,
        dt=0.5,
        temperature_K=100.0,
        temperature_end_K=2100.0,
        friction=0.05,
        check_every=10,
        record_every=10,
        seed=0,
    )
    run = run_md(Morse(4.7), h2, **ramp)
    assert all(r.stable for r in run.replicas)
    times = run.replicas[0].times_fs
    temps = np.array([r.temperature_t for r in run.replicas])  # (R, T)
    for lo, hi in ((100.0, 200.0), (900.0, 1000.0)):
        window = (times > lo) & (times <= hi)
        target = 100.0 + 2000.0 * ((lo + hi) / 2) / 1000.0
        assert abs(temps[:, window].mean() / target - 1) < 0.2, (lo, target)
    assert run.settings["temperature_end_K"] == 2100.0
    assert np.isnan(run.failure_temperature_K()).all()

    medians = []
    for depth in (0.3, 0.8):
        run = run_md(Morse(depth), h2[:32], **ramp)
        t_fail = run.failure_temperature_K()
        failed = ~np.isnan(t_fail)
        assert failed.sum() >= 16, depth
        expected = 100.0 + 2000.0 * run.t_inst()[failed] / 1000.0
        np.testing.assert_allclose(t_fail[failed], expected)
        medians.append(np.median(t_fail[failed]))
    assert medians[0] < medians[1]


def test_a_ramp_is_refused_where_it_cannot_run():
    from ase import Atoms

    from ase_mlff.md.protocol import make_protocol
    from ase_mlff.md.runner import run_md
    from ase_mlff.md.validation import MDParameterError
    from tests.test_active_comparison import Morse

    with pytest.raises(MDParameterError, match="langevin"):
        make_protocol(None, steps=100, integrator="nose_hoover", temperature_end_K=900.0)
    with pytest.raises(MDParameterError, match="temperature_end_K"):
        make_protocol(None, steps=100, temperature_end_K=-5.0)
    h2 = [Atoms("H2", positions=[[0, 0, 0], [0.74, 0, 0]]) for _ in range(4)]
    with pytest.raises(ValueError, match="ramp"):
        run_md(Morse(4.7), h2, steps=100, temperature_end_K=900.0, batch_size=2)
