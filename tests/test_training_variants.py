"""Training variants: SAM (paper 004's baseline), paper 002's metric-guided losses and RBP
reweighting, freezing / head learning rate, and the MD stability probe with
stability-aware checkpoint selection (paper 000 Fig. 2b); also data parallel (2 gloo ranks)
against one process for SAM + a balanced loss + the probe."""

import argparse
import copy
import json
import logging
import shutil

import numpy as np
import pytest
import torch

from ase_mlff.data import Dataset, load_dataset
from ase_mlff.graph.batch import Batch
from ase_mlff.metrics.clusters import ConformationClusters
from ase_mlff.metrics.forces import element_metrics, force_metrics
from ase_mlff.models import CheckpointError, PaiNN, SchNet
from ase_mlff.models.base import compute_properties
from ase_mlff.models.io import load_model
from ase_mlff.training import ExperimentConfig, TrainConfig, Trainer
from ase_mlff.training.losses import (
    assign_clusters,
    atom_factors,
    element_balance,
    frame_weights,
    training_loss,
)
from ase_mlff.training.probe import is_more_stable
from ase_mlff.training.sam import SAM
from ase_mlff.training.sample_weights import rbp_weights, rbp_weights_from_forces
from ase_mlff.training.trainer import apply_freeze, param_groups

torch.set_num_threads(1)  # as the MD test modules (a full run imports them all anyway)

FAST = {"epochs": 2, "batch_size": 8, "lr": 1e-2}
#: SAM in float64 without clipping: the trainer's steps are reproduced by hand to 1e-12
SAM_FLOAT64 = dict(
    lr=1e-2,
    weight_decay=1e-2,
    dtype="float64",
    grad_clip=None,
    optimizer="sam",
    sam_rho=0.05,
    threads=1,
)


@pytest.fixture(scope="module")
def frames():
    """20 aspirin frames spread over the shipped trajectory: 16 train, 4 val."""
    ds = load_dataset("aspirin")
    sel = ds[np.arange(20) * (len(ds) // 20)]
    return sel, sel[:16], sel[16:]


def _tiny(seed=0):
    torch.manual_seed(seed)
    return PaiNN(species=[1, 6, 8], hidden=8, n_interactions=1)


def _params(model):
    return {k: v.detach().clone() for k, v in model.named_parameters()}


# ------------------------------------------------------------------------------- SAM
def _quadratic(seed=0):
    g = torch.Generator().manual_seed(seed)
    m = torch.randn(4, 4, generator=g, dtype=torch.float64)
    a = m @ m.T + 4 * torch.eye(4, dtype=torch.float64)
    x0 = torch.randn(4, generator=g, dtype=torch.float64)
    return a, x0


@pytest.mark.parametrize("adaptive", [False, True])
def test_sam_step_is_the_formula_on_a_quadratic(adaptive):
    a, x0 = _quadratic()
    lr, rho = 0.1, 0.3
    x = torch.nn.Parameter(x0.clone())
    sam = SAM(torch.optim.SGD([x], lr=lr), rho=rho, adaptive=adaptive)

    def closure():
        sam.zero_grad()
        loss = 0.5 * x @ a @ x
        loss.backward()
        return loss

    loss = sam.step(closure)
    g = a @ x0
    if adaptive:  # ASAM: ε = ρ T² g / ‖T g‖, T = |w|
        t = x0.abs()
        eps = rho * t**2 * g / torch.linalg.norm(t * g)
    else:
        eps = rho * g / torch.linalg.norm(g)
    expected = x0 - lr * (a @ (x0 + eps))
    torch.testing.assert_close(x.detach(), expected, rtol=1e-12, atol=1e-12)
    assert float(loss.detach()) == pytest.approx(float(0.5 * x0 @ a @ x0))
    # and not the plain gradient step
    assert not torch.allclose(x.detach(), x0 - lr * g)


@pytest.mark.parametrize("adaptive", [False, True])
def test_sam_perturbation_over_several_parameters_by_hand(adaptive):
    """perturb() moves every parameter holding a gradient by ε (one global norm over all
    of them), returns ‖ε‖ (= ρ without ``adaptive``), leaves the gradients and any
    parameter without a gradient alone; restore() gives back w exactly."""
    g = torch.Generator().manual_seed(3)
    ws = [torch.randn(s, generator=g, dtype=torch.float64) for s in ((3,), (2, 2))]
    gs = [torch.randn(w.shape, generator=g, dtype=torch.float64) for w in ws]
    params = [torch.nn.Parameter(w.clone()) for w in ws]
    idle = torch.nn.Parameter(torch.ones(2, dtype=torch.float64))  # no gradient
    for p, gi in zip(params, gs):
        p.grad = gi.clone()
    rho = 0.3
    sam = SAM(torch.optim.SGD([*params, idle], lr=0.1), rho=rho, adaptive=adaptive)
    t = [w.abs() if adaptive else torch.ones_like(w) for w in ws]
    norm_tg = torch.sqrt(sum(((ti * gi) ** 2).sum() for ti, gi in zip(t, gs)))
    eps = [rho * ti**2 * gi / norm_tg for ti, gi in zip(t, gs)]
    norm_eps = float(torch.sqrt(sum((e**2).sum() for e in eps)))

    gn = sam.grad_norm()
    assert float(gn) == pytest.approx(float(norm_tg), rel=1e-12)
    assert not gn.requires_grad
    returned = sam.perturb()
    assert returned == pytest.approx(norm_eps, rel=1e-10)
    if not adaptive:
        assert returned == pytest.approx(rho, rel=1e-10)
    for p, w, e, gi in zip(params, ws, eps, gs):
        torch.testing.assert_close(p.detach(), w + e, rtol=1e-10, atol=0)
        torch.testing.assert_close(p.grad, gi, rtol=0, atol=0)
    assert torch.equal(idle.detach(), torch.ones(2, dtype=torch.float64))
    with pytest.raises(RuntimeError, match=r"^SAM.perturb\(\) called twice without restore\(\)$"):
        sam.perturb()
    sam.restore()
    for p, w in zip(params, ws):
        assert torch.equal(p.detach(), w)
    sam.perturb()  # allowed again after restore()
    sam.restore()


def test_sam_zero_gradient_radius_defaults_and_bad_rho():
    """A zero gradient gives ε = 0 (not NaN); the defaults are the Trainer's; ρ ≤ 0 is
    refused with a message naming it; the groups and zero_grad are the base optimizer's."""
    x = torch.nn.Parameter(torch.ones(3, dtype=torch.float64))
    x.grad = torch.zeros(3, dtype=torch.float64)
    base = torch.optim.SGD([x], lr=0.1)
    sam = SAM(base)
    assert sam.perturb() == 0.0
    assert torch.equal(x.detach(), torch.ones(3, dtype=torch.float64))
    sam.restore()
    cfg = TrainConfig()
    assert (sam.rho, sam.adaptive) == (cfg.sam_rho, cfg.sam_adaptive)
    assert sam.param_groups is base.param_groups
    sam.zero_grad()
    assert x.grad is None  # set_to_none by default, as torch's optimizers
    x.grad = torch.ones(3, dtype=torch.float64)
    sam.zero_grad(set_to_none=False)
    assert torch.equal(x.grad, torch.zeros(3, dtype=torch.float64))
    for bad in (0.0, -0.1, float("nan")):
        with pytest.raises(ValueError, match=rf"^SAM needs rho > 0, got {bad}$"):
            SAM(base, rho=bad)


def test_sam_trains_a_tiny_model_and_logs_rho(frames, tmp_path):
    _, train, val = frames
    logged = []
    cfg = TrainConfig(**FAST, optimizer="sam", sam_rho=0.02)
    tr = Trainer(_tiny(), train, val, cfg, tmp_path / "sam", log_fn=lambda m, s: logged.append(m))
    res = tr.fit()
    assert res.epochs_run == 2
    assert all(row["sam_rho"] == 0.02 for row in res.history)
    assert all(m["sam_rho"] == 0.02 for m in logged)
    assert all(np.isfinite(row["train_loss_perturbed"]) for row in res.history)
    # a SAM run differs from the AdamW run of the same seed
    plain = Trainer(_tiny(), train, val, TrainConfig(**FAST), tmp_path / "adamw").fit()
    w_sam = load_model(res.last_dir)[0].state_dict()
    w_plain = load_model(plain.last_dir)[0].state_dict()
    assert any(not torch.allclose(w_sam[k], w_plain[k]) for k in w_sam if "atomref" not in k)


def _hand_loss(model, batch, energy_weight, force_weight):
    """λ_E mean_s ((E_s - Ê_s)/N_s)² + λ_F mean over force components (F - F̂)², written
    out here (not the library's loss) for unit frame weights."""
    out = compute_properties(model, batch, forces=True, training=True)
    de = (out["energy"] - batch.energy_s) / batch.n_atoms_s
    return (
        energy_weight * (de**2).mean()
        + force_weight * ((out["forces"] - batch.forces_nc) ** 2).mean()
    )


def _hand_sam_steps(model, batch, cfg, rho, n_steps, batches=None):
    """n SAM steps by hand: g₁ = ∇L(w), ε = ρ g₁/‖g₁‖, g₂ = ∇L(w + ε), AdamW from w
    with g₂ (torch.optim.AdamW on a copy). ``batches`` (one per step) replaces ``batch``;
    a batch with ``weight_s`` uses the weighted loss. Returns the copy and the losses
    (L(w), L(w+ε))."""
    model = copy.deepcopy(model).train()
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    losses = []

    def loss_of(b):
        if b.weight_s is None:
            return _hand_loss(model, b, cfg.energy_weight, cfg.force_weight)
        out = compute_properties(model, b, forces=True, training=True)
        return _weighted_mse_by_hand(out, b, cfg.energy_weight, cfg.force_weight, None)

    for k in range(n_steps):
        b = batch if batches is None else batches[k]
        loss = loss_of(b)
        g1 = torch.autograd.grad(loss, params)
        norm = torch.sqrt(sum((g**2).sum() for g in g1))
        w = [p.detach().clone() for p in params]
        with torch.no_grad():
            for p, g in zip(params, g1):
                p.add_(rho * g / norm)
        loss_pert = loss_of(b)
        g2 = torch.autograd.grad(loss_pert, params)
        with torch.no_grad():
            for p, w0, g in zip(params, w, g2):
                p.copy_(w0)
                p.grad = g.clone()
        opt.step()
        losses.append((float(loss.detach()), float(loss_pert.detach())))
    return model, losses


def test_trainer_sam_epoch_of_several_weighted_batches_by_hand(frames, tmp_path):
    """One epoch of 5 frames with unequal frame weights in batches of 2 (2 + 2 + 1, in the
    trainer's shuffled order): each batch is one weighted SAM + AdamW step by hand, and the
    epoch's losses are the frame-weighted means over the batches (1e-12); a one-frame
    epoch reports its single loss."""
    ds, _, val = frames
    train = ds[:5]
    train.weight_s = np.array([1.0, 3.0, 0.5, 2.0, 1.5])
    cfg = TrainConfig(epochs=1, batch_size=2, **SAM_FLOAT64)
    tr = Trainer(_tiny(), train, val, cfg, tmp_path / "sam")
    start = copy.deepcopy(tr.model)
    perm = copy.deepcopy(tr.rng).permutation(len(train))
    row = tr.train_epoch()
    v = frame_weights(train, "mse")
    batches = []
    for lo in range(0, 5, 2):
        idx = perm[lo : lo + 2]
        b = Batch.from_dataset(train, idx, cutoff=start.cutoff, dtype=torch.float64)
        b.weight_s = torch.as_tensor(v[idx], dtype=torch.float64)
        batches.append(b)
    ref, losses = _hand_sam_steps(start, None, cfg, cfg.sam_rho, 3, batches=batches)
    for (name, p), q in zip(tr.model.named_parameters(), ref.parameters(), strict=True):
        torch.testing.assert_close(p.detach(), q.detach(), rtol=0, atol=1e-12, msg=name)
    sizes = np.array([2, 2, 1])
    for key, col in (("train_loss", 0), ("train_loss_perturbed", 1)):
        expected = float(np.dot(sizes, [x[col] for x in losses]) / 5)
        assert row[key] == pytest.approx(expected, rel=1e-12)
    one = Trainer(_tiny(), train[:1], val, cfg, tmp_path / "one")
    start1 = copy.deepcopy(one.model)
    row1 = one.train_epoch()
    b1 = Batch.from_dataset(train[:1], [0], cutoff=start1.cutoff, dtype=torch.float64)
    b1.weight_s = torch.ones(1, dtype=torch.float64)
    _, l1 = _hand_sam_steps(start1, None, cfg, cfg.sam_rho, 1, batches=[b1])
    assert row1["train_loss"] == pytest.approx(l1[0][0], rel=1e-12)
    assert row1["train_loss_perturbed"] == pytest.approx(l1[0][1], rel=1e-12)


def test_trainer_element_balanced_loss_and_a_diverging_sam_step(frames, tmp_path):
    """loss="element_balanced" in the Trainer: the first batch's loss is λ_E mean(ΔE/N)²
    + λ_F Σ_i b_i |ΔF_i|² / (3N) with b_i = N / (3 N_Z) for aspirin's three elements
    (C9H8O4), written out here; plain mse differs by far more than the tolerance. A SAM
    radius that sends the perturbed loss to infinity stops with a one-line message that
    names the SAM step."""
    ds, _, val = frames
    train = ds[:4]
    cfg = TrainConfig(epochs=1, batch_size=4, loss="element_balanced", **SAM_FLOAT64)
    tr = Trainer(_tiny(), train, val, cfg, tmp_path / "balanced")
    start = copy.deepcopy(tr.model)
    row = tr.train_epoch()
    batch = Batch.from_dataset(train, np.arange(4), cutoff=start.cutoff, dtype=torch.float64)
    out = {k: v.detach() for k, v in compute_properties(start, batch, forces=True).items()}
    counts = {6: 9, 1: 8, 8: 4}
    b_n = torch.tensor([21 / (3 * counts[int(z)]) for z in batch.numbers_n], dtype=torch.float64)
    de = (out["energy"] - batch.energy_s) / batch.n_atoms_s
    df2 = ((out["forces"] - batch.forces_nc) ** 2).sum(dim=1)
    e_term = cfg.energy_weight * (de**2).mean()
    balanced = e_term + cfg.force_weight * (b_n * df2).sum() / (3 * len(b_n))
    plain = e_term + cfg.force_weight * df2.sum() / (3 * len(b_n))
    assert row["train_loss"] == pytest.approx(float(balanced), rel=1e-12)
    assert abs(float(balanced / plain) - 1) > 1e-3
    wild = TrainConfig(epochs=1, batch_size=4, **{**SAM_FLOAT64, "sam_rho": 1e300})
    with pytest.raises(
        FloatingPointError,
        match=r"^non-finite loss at the SAM-perturbed weights at epoch 1, batch 0; "
        r"lower sam_rho or the learning rate or check the data$",
    ):
        Trainer(_tiny(), train, val, wild, tmp_path / "wild").train_epoch()


def test_trainer_sam_step_is_the_formula_on_one_batch(frames, tmp_path):
    """Two epochs of one float64 batch each (4 frames, batch_size 4) through the
    Trainer's SAM: equal to the hand-made SAM + AdamW steps to 1e-12 — the radius ρ the
    trainer uses is ``sam_rho`` (ρ x 10 moves the weights by ~1e-2)."""
    ds, _, val = frames
    train = ds[:4]
    cfg = TrainConfig(epochs=2, batch_size=4, **SAM_FLOAT64)
    tr = Trainer(_tiny(), train, val, cfg, tmp_path / "sam")
    start = copy.deepcopy(tr.model)  # after the trainer's atomref fit and float64 cast
    rows = [tr.train_epoch() for _ in range(2)]
    batch = Batch.from_dataset(train, np.arange(4), cutoff=start.cutoff, dtype=torch.float64)
    ref, losses = _hand_sam_steps(start, batch, cfg, cfg.sam_rho, 2)
    for (name, p), q in zip(tr.model.named_parameters(), ref.parameters(), strict=True):
        torch.testing.assert_close(p.detach(), q.detach(), rtol=0, atol=1e-12, msg=name)
    for row, (loss, loss_pert) in zip(rows, losses, strict=True):
        assert row["train_loss"] == pytest.approx(loss, rel=1e-12)
        assert row["train_loss_perturbed"] == pytest.approx(loss_pert, rel=1e-12)
        assert loss_pert > loss  # the ascent step did go uphill
    # the test's power: another radius gives clearly different weights
    other, _ = _hand_sam_steps(start, batch, cfg, 10 * cfg.sam_rho, 2)
    pairs = zip(other.parameters(), ref.parameters())
    diff = max(float((p - q).detach().abs().max()) for p, q in pairs)
    assert diff > 1e-4


def _float32_exact_atomref(train):
    """A tiny model with its atomref fitted (float64 values that float32 cannot hold: the
    reload must keep them exactly, or the resumed run differs)."""
    m = _tiny()
    m.atomref.fit(train)
    return m


def test_resume_is_bit_identical_to_an_uninterrupted_run(frames, tmp_path, caplog):
    """4 epochs straight vs 2 epochs, then a new Trainer resuming to 4 in the same out
    dir (3 shuffled batches per epoch): the same weights, AdamW moments, scheduler,
    numpy RNG and history, bit for bit. Resuming without the optimizer state (Adam
    restarts) or without the numpy RNG (other batches) changes all of them."""
    _, train, val = frames
    base = dict(batch_size=6, lr=1e-2, threads=1)

    def fit(epochs, out):
        cfg = TrainConfig(epochs=epochs, **base)
        model = _float32_exact_atomref(train)
        return Trainer(model, train, val, cfg, out, refit_atomref=False).fit()

    def trainer_in(out):
        cfg = TrainConfig(epochs=4, **base)
        return Trainer(_float32_exact_atomref(train), train, val, cfg, out, refit_atomref=False)

    full = fit(4, tmp_path / "full")
    half = fit(2, tmp_path / "resumed")
    assert half.epochs_run == 2
    # a new trainer in that directory does resume: epoch, bests, patience, history, weights
    probe = trainer_in(tmp_path / "resumed")
    with caplog.at_level(logging.INFO, logger="ase_mlff.training.trainer"):
        assert probe.try_resume() is True
    assert f"resumed from {tmp_path / 'resumed'} at epoch 2" in caplog.messages
    saved = torch.load(tmp_path / "resumed" / "trainer_state.pt", weights_only=True)
    assert probe.epoch == 2 and probe.best_epoch == saved["best_epoch"]
    assert probe.best_val == saved["best_val"] and probe.bad_epochs == saved["bad_epochs"]
    assert probe.history == half.history
    w_half = load_model(half.last_dir)[0].state_dict()
    for k, w in probe.model.state_dict().items():
        assert torch.equal(w, w_half[k].to(w)), k
    fresh = trainer_in(tmp_path / "fresh")
    assert fresh.try_resume() is False and fresh.epoch == 0
    # a state without its last/ checkpoint (killed between the two writes) is not resumed
    shutil.copytree(tmp_path / "resumed", tmp_path / "no_last")
    shutil.rmtree(tmp_path / "no_last" / "last")
    assert trainer_in(tmp_path / "no_last").try_resume() is False
    shutil.copytree(tmp_path / "resumed", tmp_path / "broken")
    (tmp_path / "broken" / "trainer_state.pt").write_bytes(b"not a checkpoint")
    broken = trainer_in(tmp_path / "broken")
    with pytest.raises(CheckpointError) as err:
        broken.try_resume()
    try:  # the first line of torch's own error, cut at 200 characters
        torch.load(tmp_path / "broken" / "trainer_state.pt", weights_only=True)
    except Exception as e:  # noqa: BLE001 - whatever torch raises is quoted
        first = str(e).strip().splitlines()[0][:200]
        kind = type(e).__name__
    assert str(err.value) == (
        f"cannot resume from {tmp_path / 'broken'}: last/ or trainer_state.pt cannot be read "
        f"({kind}: {first}); delete it or choose another --out"
    )
    # a state holding arbitrary objects is refused too (weights only: no code runs)
    torch.save({"epoch": argparse.Namespace()}, tmp_path / "broken" / "trainer_state.pt")
    with pytest.raises(CheckpointError, match=r"\(UnpicklingError: Weights only load failed"):
        trainer_in(tmp_path / "broken").try_resume()
    resumed = fit(4, tmp_path / "resumed")
    assert resumed.epochs_run == 4

    def timeless(h):
        return [{k: v for k, v in r.items() if k != "epoch_seconds"} for r in h]

    assert timeless(resumed.history) == timeless(full.history)
    w_full = load_model(full.last_dir)[0].state_dict()
    w_res = load_model(resumed.last_dir)[0].state_dict()
    for k in w_full:
        assert torch.equal(w_res[k], w_full[k]), k
    s_full = torch.load(tmp_path / "full" / "trainer_state.pt", weights_only=True)
    s_res = torch.load(tmp_path / "resumed" / "trainer_state.pt", weights_only=True)
    opt_full, opt_res = s_full["optimizer"], s_res["optimizer"]
    assert opt_res["param_groups"] == opt_full["param_groups"]
    assert opt_res["state"].keys() == opt_full["state"].keys()
    for i, st in opt_full["state"].items():
        for key in ("step", "exp_avg", "exp_avg_sq"):
            assert torch.equal(opt_res["state"][i][key], st[key]), (i, key)
    assert s_res["scheduler"] == s_full["scheduler"]
    assert s_res["numpy_rng"] == s_full["numpy_rng"]
    assert torch.equal(s_res["torch_rng"], s_full["torch_rng"])
    assert (s_res["best_epoch"], s_res["best_val_loss"]) == (
        s_full["best_epoch"],
        s_full["best_val_loss"],
    )


# ---------------------------------------------------------------------------- losses
def _hand_dataset(numbers, n_frames, clusters=None, seed=0):
    rng = np.random.default_rng(seed)
    n = len(numbers)
    extra = {} if clusters is None else {"cluster": np.asarray(clusters)}
    return Dataset(
        numbers_n=np.tile(numbers, n_frames),
        positions_nc=rng.normal(size=(n * n_frames, 3)) * 2.0,
        n_atoms_s=np.full(n_frames, n),
        cell_s33=np.zeros((n_frames, 3, 3)),
        pbc_s3=np.zeros((n_frames, 3), bool),
        energy_s=rng.normal(size=n_frames),
        forces_nc=rng.normal(size=(n * n_frames, 3)),
        extra_s=extra,
    )


def _batch(ds, loss="mse"):
    b = Batch.from_dataset(ds, cutoff=0.0, dtype=torch.float64)
    b.weight_s = torch.as_tensor(frame_weights(ds, loss))
    f = atom_factors(ds, loss)
    return b, None if f is None else torch.as_tensor(f)


def _out(batch, dforces_nc, de_s=None):
    e = batch.energy_s + (0.0 if de_s is None else torch.as_tensor(de_s, dtype=torch.float64))
    return {"energy": e, "forces": batch.forces_nc + torch.as_tensor(dforces_nc)}


def _weighted_mse_by_hand(out, batch, energy_weight, force_weight, norms):
    """The trainer's default loss written out here: Σ_s w_s ((E_s - Ê_s)/N_s)² / Σ w_s
    and Σ_n w_s(n) |F_n - F̂_n|² / (3 Σ_n w_s(n)), norms replacing the two denominators."""
    w_s = batch.weight_s.double()
    de = (out["energy"] - batch.energy_s) / batch.n_atoms_s
    w_n = w_s[batch.system_n]
    norm_s, norm_n = (w_s.sum(), w_n.sum()) if norms is None else norms
    e_loss = (w_s * de**2).sum() / norm_s
    f_loss = (w_n * ((out["forces"] - batch.forces_nc) ** 2).sum(dim=1)).sum() / (3.0 * norm_n)
    return energy_weight * e_loss + force_weight * f_loss


def test_mse_is_the_weighted_mse_by_hand(frames):
    ds, _, _ = frames
    sub = ds[np.arange(5)]
    sub.weight_s = np.array([1.0, 2.0, 0.5, 1.0, 3.0])
    batch, b_n = _batch(sub)
    rng = np.random.default_rng(1)
    out = _out(batch, rng.normal(size=batch.forces_nc.shape), rng.normal(size=5))
    for norms in (None, (7.5, 7.5 * 21 + 3.0)):
        old = _weighted_mse_by_hand(out, batch, 1.0, 20.0, norms)
        new = training_loss(out, batch, energy_weight=1.0, force_weight=20.0, norms=norms)
        torch.testing.assert_close(new, old, rtol=1e-13, atol=0)


def test_cluster_balanced_makes_clusters_of_different_sizes_count_the_same():
    ds = _hand_dataset([6, 1, 1, 8], 3, clusters=[0, 0, 1])
    v = frame_weights(ds, "cluster_balanced")
    np.testing.assert_allclose(v, [0.75, 0.75, 1.5])  # each cluster's total = 1.5, mean 1
    err = np.zeros((12, 3))
    err_small, err_big = err.copy(), err.copy()
    err_big[:8] = 0.1  # every force component of cluster 0 (2 frames) off by 0.1
    err_small[8:] = 0.1  # ... or of cluster 1 (1 frame)
    for loss, ratio in (("cluster_balanced", 1.0), ("mse", 2.0)):
        batch, _ = _batch(ds, loss)
        l_big = training_loss(_out(batch, err_big), batch, energy_weight=0.0, force_weight=1.0)
        l_small = training_loss(_out(batch, err_small), batch, energy_weight=0.0, force_weight=1.0)
        assert float(l_big / l_small) == pytest.approx(ratio)
        # the energy term too
        e_big = training_loss(_out(batch, err, [0.1, 0.1, 0]), batch, force_weight=0.0)
        e_small = training_loss(_out(batch, err, [0, 0, 0.1]), batch, force_weight=0.0)
        assert float(e_big / e_small) == pytest.approx(ratio)


def test_cluster_balanced_needs_labels_and_assign_clusters_sets_them(frames, tmp_path):
    ds, train, val = frames
    with pytest.raises(ValueError, match="assign_clusters"):
        Trainer(_tiny(), train, val, TrainConfig(loss="cluster_balanced"), tmp_path)
    cl = ConformationClusters(n_clusters=2, n_init=2).fit_dataset(ds)
    labelled = ds[np.arange(len(ds))]
    labels = assign_clusters(labelled, cl)
    np.testing.assert_array_equal(labelled.extra_s["cluster"], labels)
    np.testing.assert_array_equal(labels, cl.labels_)
    assert labelled[np.arange(5)].extra_s["cluster"].tolist() == labels[:5].tolist()


def test_element_balanced_makes_h_and_c_count_the_same():
    ds = _hand_dataset([6, 1, 1, 1], 2)
    b = element_balance(ds.numbers_n, ds.n_atoms_s)
    np.testing.assert_allclose(b, np.tile([2.0, 2 / 3, 2 / 3, 2 / 3], 2))  # N/(E·N_Z)
    on_c, on_h = np.zeros((8, 3)), np.zeros((8, 3))
    on_c[[0, 4]] = 0.2
    on_h[[1, 2, 3, 5, 6, 7]] = 0.2
    for loss, ratio in (("element_balanced", 1.0), ("mse", 3.0)):
        batch, b_n = _batch(ds, loss)
        kw = {"energy_weight": 0.0, "force_weight": 1.0, "atom_factor_n": b_n}
        l_h = training_loss(_out(batch, on_h), batch, **kw)
        l_c = training_loss(_out(batch, on_c), batch, **kw)
        assert float(l_h / l_c) == pytest.approx(ratio)


def test_absolute_losses_are_paper_002_metrics(frames):
    """With |ΔF| the losses are the metrics themselves: F_mae (Eq. 1), FNM_mae (Eq. 3),
    F_max-err (Eq. 2), mean over elements of F_mae^(S) (Eq. 10)."""
    ds, _, _ = frames
    sub = ds[np.arange(6)]
    batch, _ = _batch(sub)
    rng = np.random.default_rng(2)
    df = rng.normal(size=batch.forces_nc.shape) * 0.3
    out = _out(batch, df)
    pred = out["forces"].numpy()
    ref = sub.forces_nc
    m = force_metrics(pred, ref, sub.numbers_n, sub.n_atoms_s)
    kw = {"energy_weight": 0.0, "loss_error": "absolute"}
    f_mae = training_loss(out, batch, force_weight=1.0, **kw)
    fnm = training_loss(out, batch, force_weight=1.0, mass_normalised=True, **kw)
    f_max = training_loss(out, batch, force_weight=0.0, max_err_weight=1.0, **kw)
    assert float(f_mae) == pytest.approx(m["forces_mae"], rel=1e-12)
    assert float(fnm) == pytest.approx(m["fnm_mae"], rel=1e-12)
    assert float(f_max) == pytest.approx(m["forces_max_err"], rel=1e-12)
    batch_e, b_n = _batch(sub, "element_balanced")
    f_el = training_loss(out, batch_e, force_weight=1.0, atom_factor_n=b_n, **kw)
    per_el = element_metrics(pred, ref, sub.numbers_n, sub.n_atoms_s)
    assert float(f_el) == pytest.approx(np.mean([v["forces_mae"] for v in per_el.values()]))


def test_balanced_losses_train(frames, tmp_path):
    ds, _, _ = frames
    labelled = ds[np.arange(len(ds))]
    labelled.extra_s["cluster"] = np.arange(len(ds)) % 3 // 2  # clusters of 14 and 6 frames
    train, val = labelled[:16], labelled[16:]
    for loss in ("cluster_balanced", "element_balanced"):
        cfg = TrainConfig(**FAST, loss=loss, max_err_weight=0.1, mass_normalised=True)
        res = Trainer(_tiny(), train, val, cfg, tmp_path / loss).fit()
        assert res.history[-1]["train_loss"] < res.history[0]["train_loss"] * 10
        assert all(np.isfinite(r["val_loss"]) for r in res.history)


# ----------------------------------------------------------------------- reweighting
def test_rbp_weights_favour_the_bad_cluster(frames):
    ds, _, _ = frames
    cl = ConformationClusters(n_clusters=2, n_init=2).fit_dataset(ds)
    labels = cl.labels_
    assert 0 < labels.sum() < len(labels)
    rng = np.random.default_rng(0)
    noise = np.where(np.repeat(labels == 1, 21)[:, None], 1.0, 0.01)
    pred = ds.forces_nc + noise * rng.normal(size=ds.forces_nc.shape)
    w, table = rbp_weights_from_forces(pred, ds, cl)
    assert table[1]["rbp"] == 1.0 and table[0]["rbp"] == 0.0
    assert w.mean() == pytest.approx(1.0)
    assert np.all(w[labels == 1] > w[labels == 0].max())
    assert w[labels == 1][0] / w[labels == 0][0] == pytest.approx(3.0)  # m = 1 + RBP/mean RBP
    assert table[1]["weight"] == pytest.approx(w[labels == 1][0])
    w_exp, _ = rbp_weights_from_forces(pred, ds, cl, scheme="exp", strength=0.5)
    assert w_exp.mean() == pytest.approx(1.0) and w_exp[labels == 1][0] > w_exp[labels == 0][0]
    # the model path runs and gives mean-one weights, one table row per cluster
    w_m, t_m = rbp_weights(_tiny(), ds, cl)
    assert w_m.shape == (len(ds),) and w_m.mean() == pytest.approx(1.0) and len(t_m) == 2


# ------------------------------------------------------------ freezing and head lr
def test_freeze_and_head_lr(frames, tmp_path):
    _, train, val = frames
    model = _tiny()
    before = _params(model)
    cfg = TrainConfig(**FAST, freeze=("embedding", "messages.0"), head_lr_factor=4.0)
    tr = Trainer(model, train, val, cfg, tmp_path / "freeze")
    groups = tr.optimizer.param_groups
    assert [g["name"] for g in groups] == ["body", "head"]
    assert groups[1]["lr"] == pytest.approx(4.0 * groups[0]["lr"]) == pytest.approx(0.04)
    n_head = sum(p.numel() for n, p in model.named_parameters() if n.startswith("readout."))
    assert sum(p.numel() for p in groups[1]["params"]) == n_head
    res = tr.fit()
    after = _params(tr.model)
    for name in before:
        frozen = name.startswith(("embedding.", "messages.0."))
        same = torch.equal(before[name], after[name])
        assert same == frozen, name
    assert "lr_head" in res.history[0]


def test_freeze_errors(frames, tmp_path):
    _, train, val = frames
    with pytest.raises(ValueError, match="matches no parameter"):
        apply_freeze(_tiny(), ("interactions.0",))  # PaiNN has messages.0 / updates.0
    with pytest.raises(ValueError, match="matches no parameter"):
        Trainer(_tiny(), train, val, TrainConfig(freeze=("embeding",)), tmp_path)
    schnet = SchNet(species=[1, 6, 8], hidden=8, n_interactions=2)
    frozen = apply_freeze(schnet, ["interactions.0"])
    assert frozen and all(n.startswith("interactions.0.") for n in frozen)
    apply_freeze(schnet, ["readout"])
    with pytest.raises(ValueError, match="readout"):  # no trainable head for its own lr
        param_groups(schnet, 1e-3, head_lr_factor=2.0)


def test_config_checks_and_yaml(tmp_path):
    for bad in (
        {"optimizer": "sgd"},
        {"loss": "huber"},
        {"select_by": "stability"},
        {"sam_rho": 0.0},
        {"head_lr_factor": -1.0},
    ):
        with pytest.raises(ValueError):
            TrainConfig(**bad)
    cfg = ExperimentConfig.from_dict({"train": {"freeze": ["embedding"], "optimizer": "sam"}})
    assert cfg.train.freeze == ("embedding",)
    cfg.to_yaml(tmp_path / "c.yaml")
    assert ExperimentConfig.from_yaml(tmp_path / "c.yaml") == cfg


# ---------------------------------------------------------------------------- probe
def test_is_more_stable_ties_broken_by_val_loss():
    assert is_more_stable((10.0, 5.0), None)
    assert is_more_stable((20.0, 9.0), (10.0, 1.0))
    assert is_more_stable((10.0, 1.0), (10.0, 2.0))
    assert not is_more_stable((10.0, 3.0), (10.0, 2.0))
    assert not is_more_stable((5.0, 0.1), (10.0, 2.0))


def test_probe_most_stable_selection_and_resume(frames, tmp_path):
    _, train, val = frames
    out = tmp_path / "probe"
    probe = {"probe_every": 1, "probe_starts": 2, "probe_steps": 100}
    starts = [val.to_atoms(i, with_labels=False) for i in range(3)]
    cfg = TrainConfig(**FAST, **probe, select_by="stability")
    tr = Trainer(_tiny(), train, val, cfg, out, probe_images=starts)
    assert len(tr.probe_images) == 2
    res = tr.fit()
    # each row is the probe of that epoch's weights: the same MD run again from the saved
    # epoch checkpoint, its stable fraction and mean of min(t_inst, run length) by hand
    from ase_mlff.md.runner import run_md

    for row in res.history:
        assert row["probe_total_fs"] == 50.0
        model, _ = load_model(out / f"epoch_{row['epoch']:04d}", dtype=torch.float64)
        run = run_md(
            model,
            tr.probe_images,
            steps=100,
            dt=0.5,
            integrator="langevin",
            temperature_K=cfg.probe_temperature_K,
            seed=cfg.seed,
        )
        stable = np.array([r.stable for r in run.replicas])
        t = np.where(stable, 50.0, np.minimum(run.t_inst(), 50.0))
        assert row["probe_fraction_stable"] == stable.mean()
        assert row["probe_t_inst_mean_fs"] == pytest.approx(t.mean(), rel=1e-12)
    assert (out / "epoch_0001").is_dir() and (out / "epoch_0002").is_dir()
    assert res.selected_by == "stability" and res.best_dir == out / "most_stable"
    t = [r["probe_t_inst_mean_fs"] for r in res.history]
    v = [r["val_loss"] for r in res.history]
    expected = max(range(2), key=lambda i: (t[i], -v[i])) + 1
    assert res.best_epoch == expected
    meta = json.loads((out / "most_stable" / "model.json").read_text())
    assert meta["epoch"] == expected and "probe_t_inst_mean_fs" in meta["probe"]
    loaded, _ = load_model(out / "most_stable")
    for k, p in loaded.state_dict().items():  # fit() left the selected weights in memory
        torch.testing.assert_close(tr.model.state_dict()[k], p)
    # resume: the most stable epoch so far comes back with the state, and two more
    # epochs keep the probed history
    cfg4 = TrainConfig(**{**FAST, "epochs": 4}, **probe, select_by="stability")
    again = Trainer(_tiny(), train, val, cfg4, out, probe_images=starts)
    assert again.most_stable == {} and again.try_resume() is True
    assert again.most_stable == tr.most_stable and again.most_stable["epoch"] == expected
    tr4 = Trainer(_tiny(), train, val, cfg4, out, probe_images=starts)
    res4 = tr4.fit()
    assert res4.epochs_run == 4 and len(res4.history) == 4
    assert [r["probe_t_inst_mean_fs"] for r in res4.history[:2]] == t
    assert (out / "epoch_0004").is_dir()
    assert tr4.most_stable["t_inst_mean_fs"] == max(r["probe_t_inst_mean_fs"] for r in res4.history)
    # select_by="val" keeps "best"; without probe_images the validation frames are used
    shutil.rmtree(out)
    res_v = Trainer(_tiny(), train, val, TrainConfig(**FAST, **probe), out).fit()
    assert res_v.best_dir == out / "best" and (out / "most_stable").is_dir()


# -------------------------------------------------------------------- data parallel
DP_CFG = {
    "epochs": 2,
    "batch_size": 5,  # 16 frames: batches of 5, 5, 5, 1 -> one rank gets no frame
    "lr": 1e-2,
    "dtype": "float64",
    "seed": 3,
    "optimizer": "sam",
    "loss": "cluster_balanced",
    "max_err_weight": 0.5,
    "probe_every": 2,
    "probe_starts": 2,
    "probe_steps": 40,
}


def _dp_data():
    ds = load_dataset("aspirin")
    sel = ds[np.arange(20) * (len(ds) // 20)]
    sel.extra_s["cluster"] = np.arange(20) % 3 // 2
    return sel[:16], sel[16:]


def _dp_worker(rank, world, out_dir, store):
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=world)
    try:
        train, val = _dp_data()
        res = Trainer(_tiny(7), train, val, TrainConfig(**DP_CFG), out_dir).fit()
        with open(f"{out_dir}/history_rank{rank}.json", "w") as fh:
            json.dump(res.history, fh)
    finally:
        dist.destroy_process_group()


def test_data_parallel_sam_and_balanced_loss_match_one_process(tmp_path):
    import torch.multiprocessing as mp

    mp.start_processes(
        _dp_worker,
        args=(2, str(tmp_path / "dp"), str(tmp_path / "store")),
        nprocs=2,
        join=True,
        start_method="spawn",
    )
    train, val = _dp_data()
    single = Trainer(_tiny(7), train, val, TrainConfig(**DP_CFG), tmp_path / "one").fit()
    h0 = json.loads((tmp_path / "dp" / "history_rank0.json").read_text())
    h1 = json.loads((tmp_path / "dp" / "history_rank1.json").read_text())

    def timeless(h):
        return [{k: v for k, v in r.items() if not k.endswith("_seconds")} for r in h]

    assert timeless(h0) == timeless(h1)  # every rank saw the same history, probe included
    assert "probe_t_inst_mean_fs" in h0[1]
    for a, b in zip(single.history, h0, strict=True):
        for key in ("train_loss", "train_loss_perturbed", "val_loss", "probe_t_inst_mean_fs"):
            if key in a:
                assert b[key] == pytest.approx(a[key], rel=1e-8), key
    w1 = load_model(tmp_path / "one" / "last")[0].state_dict()
    w2 = load_model(tmp_path / "dp" / "last")[0].state_dict()
    for k in w1:
        torch.testing.assert_close(w2[k], w1[k], rtol=1e-8, atol=1e-10)


def test_trainer_progress_bar_only_when_asked(frames, tmp_path, monkeypatch, capsys):
    """The batch progress bar names the epoch and the batch loss on a terminal, and
    nothing is drawn when progress is off (CI, a pipe)."""
    import re

    import ase_mlff.training.trainer as trainer_module

    _, train, val = frames
    cfg = TrainConfig(epochs=1, batch_size=8, threads=1)
    for shown in (False, True):
        monkeypatch.setattr(trainer_module, "show_progress", lambda shown=shown: shown)
        Trainer(_tiny(), train, val, cfg, tmp_path / str(shown)).train_epoch()
        err = capsys.readouterr().err
        if shown:
            assert re.search(r"(?<![A-Za-z])epoch 1(?![0-9A-Za-z])", err), err
            assert re.search(r"loss=[0-9]", err), err
        else:
            assert err == ""
