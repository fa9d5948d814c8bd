"""Making reference data: configurations sampled and labelled by a reference method.

* :mod:`~ase_mlff.reference.runner`: the one runner of every reference set (a job list,
  Ray tasks, resume from finished parts, assembly in job order, provenance);
* :mod:`~ase_mlff.reference.molecule`: GFN2-xTB Langevin MD of a molecule (the shipped
  aspirin set, recipe ``make_reference``);
* :mod:`~ase_mlff.reference.water`: flexible-TIP3P water MD with OpenMM (the shipped water
  set, recipe ``make_water_reference``);
* :mod:`~ase_mlff.reference.silica`: GFN1-xTB silica, relaxed, strained, NVT and
  melt-quenched (the shipped silica set, recipe ``make_silica_reference``);
* :mod:`~ase_mlff.reference.langevin`: the ASE Langevin loop the tblite sets share;
* :mod:`~ase_mlff.reference.sampling`: rattled and perturbed pre-training sets labelled by
  a potential.
"""
