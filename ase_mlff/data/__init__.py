"""Configurations: the Dataset, readers/writers of the field's formats, splits, samplers."""

from ase_mlff.data.dataset import Dataset, DatasetError
from ase_mlff.data.io import (
    load_dataset,
    read_ase,
    read_db,
    read_md17,
    read_rmd17,
    write_db,
    write_extxyz,
    write_npz,
)
from ase_mlff.data.splits import Split, group_split, random_split

__all__ = [
    "Dataset",
    "DatasetError",
    "Split",
    "group_split",
    "load_dataset",
    "random_split",
    "read_ase",
    "read_db",
    "read_md17",
    "read_rmd17",
    "write_db",
    "write_extxyz",
    "write_npz",
]
