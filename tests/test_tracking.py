from ase_mlff.tracking import default_tracking_uri, flatten


def test_tracking_uri_default_and_env(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert default_tracking_uri(tmp_path) == f"sqlite:///{tmp_path.resolve() / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:////elsewhere/x.db")
    assert default_tracking_uri(tmp_path) == "sqlite:////elsewhere/x.db"


def test_flatten_params():
    flat = flatten({"model": {"name": "painn", "species": [1, 6]}, "train": {"lr": 1e-3}})
    assert flat == {"model.name": "painn", "model.species": "[1, 6]", "train.lr": 1e-3}
