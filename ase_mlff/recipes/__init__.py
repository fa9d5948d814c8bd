"""Experiments as scripts: ``python -m ase_mlff.recipes.<name> --help``.

- ``make_reference``: GFN2-xTB reference MD of a molecule (the shipped aspirin set).
- ``train``: train, evaluate and log one potential to MLflow.
- ``stability``: how long MD with a model stays physical, over Ray trajectory agents.
"""
