import numpy as np
import pytest
import torch
from ase import Atoms
from ase.build import bulk, molecule

torch.set_num_threads(2)


@pytest.fixture
def molecules() -> list[Atoms]:
    out = []
    for name, seed in [("CH3CH2OH", 0), ("C6H6", 1), ("H2O", 2)]:
        a = molecule(name)
        a.rattle(0.05, seed=seed)
        out.append(a)
    return out


@pytest.fixture
def periodic_cells() -> list[Atoms]:
    """A rattled orthorhombic SiO-like cell and a triclinic cell smaller than 2x the cutoff."""
    a = bulk("Si", "diamond", 5.43, cubic=True)
    a.numbers[::2] = 8
    a.rattle(0.05, seed=3)
    b = bulk("Cu", "fcc", 3.6) * (2, 1, 1)
    b.numbers[0] = 8
    b.rattle(0.05, seed=4)
    return [a, b]


@pytest.fixture
def aspirin() -> Atoms:
    import ase.io

    from ase_mlff.data.io import SHIPPED_DIR

    a = ase.io.read(SHIPPED_DIR / "aspirin_md17_order.xyz")
    a.rattle(0.02, seed=5)
    return a


def random_species_model(cls, species, **kw):
    torch.manual_seed(0)
    m = cls(species=species, **kw)
    # non-trivial reference energies and scale, as after fitting
    with torch.no_grad():
        m.atomref.e_ref[:] = torch.linspace(-3, 1, len(m.atomref.e_ref))
        m.atomref.scale.fill_(0.7)
    return m


@pytest.fixture
def rng():
    return np.random.default_rng(0)


@pytest.fixture(autouse=True)
def _close_figures():
    """Figures made by a test are closed after it (pyplot keeps them otherwise)."""
    yield
    import sys

    if "matplotlib.pyplot" in sys.modules:
        sys.modules["matplotlib.pyplot"].close("all")


@pytest.fixture(scope="module")
def ray_local():
    """A local 2-CPU Ray for the tests of one module (shut down after them)."""
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


class CrashAfter(torch.nn.Module):
    """Wraps a potential and raises after ``n`` calls: a worker killed mid-run."""

    def __init__(self, model, n):
        super().__init__()
        self.model, self.n, self.cutoff = model, n, model.cutoff

    def forward(self, batch):
        self.n -= 1
        if self.n < 0:
            raise RuntimeError("worker killed")
        return self.model(batch)
