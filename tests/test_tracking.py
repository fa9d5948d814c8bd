from ase_mlff.tracking import default_tracking_uri, flatten


def test_tracking_uri_default_and_env(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert default_tracking_uri(tmp_path) == f"sqlite:///{tmp_path.resolve() / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:////elsewhere/x.db")
    assert default_tracking_uri(tmp_path) == "sqlite:////elsewhere/x.db"


def test_flatten_params():
    flat = flatten({"model": {"name": "painn", "species": [1, 6]}, "train": {"lr": 1e-3}})
    assert flat == {"model.name": "painn", "model.species": "[1, 6]", "train.lr": 1e-3}


def test_a_run_left_running_by_a_killed_process_is_closed_at_the_next_start(tmp_path):
    """A run whose process died without closing it (SIGKILL: no handler runs) is marked
    FAILED, with the reason, when the next run of the experiment starts on this host; a
    run of a live process and one of another host stay RUNNING."""
    import os
    import socket
    import subprocess
    import sys

    from ase_mlff.tracking import HOST_TAG, PID_TAG, Tracker

    tracker = Tracker("stale", uri=f"sqlite:///{tmp_path / 'm.db'}")
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    )
    host = socket.gethostname()
    runs = {}
    for name, pid, h in (
        ("killed", dead.stdout.strip(), host),
        ("alive", str(os.getpid()), host),
        ("elsewhere", dead.stdout.strip(), "another-host"),
    ):
        r = tracker.client.create_run(
            tracker.experiment_id, run_name=name, tags={PID_TAG: pid, HOST_TAG: h}
        )
        runs[name] = r.info.run_id
    with tracker.run("next") as run:
        assert tracker.get_run(run.run_id).data.tags[PID_TAG] == str(os.getpid())
    status = {n: tracker.get_run(i).info.status for n, i in runs.items()}
    assert status == {"killed": "FAILED", "alive": "RUNNING", "elsewhere": "RUNNING"}
    error = tracker.get_run(runs["killed"]).data.tags["error"]
    assert error.startswith(f"the process (pid {dead.stdout.strip()} on {host}) ended")
