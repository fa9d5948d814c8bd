"""Making reference data: configurations sampled and labelled by a reference potential
(:mod:`ase_mlff.reference.sampling`). The recipes ``make_reference``,
``make_water_reference`` and ``make_silica_reference`` write the shipped sets."""
