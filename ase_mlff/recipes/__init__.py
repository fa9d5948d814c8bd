"""Experiments as scripts: ``python -m ase_mlff.recipes.<name> --help``.

- ``make_reference``: GFN2-xTB reference MD of a molecule (the shipped aspirin set).
- ``train``: train, evaluate and log one potential to MLflow.
- ``stability``: how long MD with a model stays physical, over Ray trajectory agents.

A wrong input stops a recipe with one line, ``error: ...``, and exit status 2; ``--debug``
shows the traceback (:mod:`ase_mlff.recipes.cli`).

Running a recipe applies the allocator tuning of :mod:`ase_mlff._malloc` (an entry point's
choice; ``import ase_mlff`` alone leaves the process as it is).
"""

from ase_mlff._malloc import keep_freed_memory

keep_freed_memory()
