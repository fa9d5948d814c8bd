"""Metrics: how good a potential is, on data and in MD. Every function returns plain numbers
or arrays; each module has the plotting companions of its quantities (matplotlib, Agg).

On a dataset (paper 002):
    errors      energy/force errors (``error_metrics``, ``evaluate``)
    forces      F_mae, F_max-err, FNM (Eqs. 1-4), per element (Eqs. 10-13)
    clusters    Kabsch alignment, conformation clusters (K-means + PCA), per-cluster
                metrics and RBP (Eqs. 5-9), explored/unexplored frames
On trajectories (papers 000, 002, 003, 004), over their stable part:
    trajectory  ``Trajectory`` (from Atoms, arrays or a stored study), RMSD/RMSF, contact
                maps, Lindemann index, minimum distance, max force, energy drift
    distance_distribution  h(r), MAE_h     rdf        element-pair g(r), MAE_RDF
    diffusion   D from the MSD over all windows    fes        F = −kT ln p, MAE_F
    stability   survival curves, t_inst statistics, force metrics vs t_inst
    plots       figures of training and stability results
Of a model (papers 000, 001, 004):
    latent      atom embeddings, t-SNE/UMAP, silhouette scores
    bond_forces bond-length scans F∥, dF∥/dr and roughness; ΔF MAE; force angles
    scans       energy scans: bond stretch, angle closing
The report over all of it is ``python -m ase_mlff.recipes.evaluate``.
"""

from ase_mlff.metrics.clusters import ConformationClusters, cluster_metrics, exploration
from ase_mlff.metrics.errors import error_metrics, evaluate
from ase_mlff.metrics.forces import element_metrics, force_metrics
from ase_mlff.metrics.trajectory import Trajectory, load_study

__all__ = [
    "ConformationClusters",
    "Trajectory",
    "cluster_metrics",
    "element_metrics",
    "error_metrics",
    "evaluate",
    "exploration",
    "force_metrics",
    "load_study",
]
