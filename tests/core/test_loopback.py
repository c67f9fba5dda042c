"""`make run` starts every listener on 127.0.0.1 unless the operator says otherwise."""

from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent.parent


def procfile() -> dict[str, str]:
    lines = (BASE_DIR / "Procfile").read_text().splitlines()
    return dict(line.split(":", 1) for line in lines if line.strip() and not line.startswith("#"))


def test_it_binds_redis_and_daphne_to_loopback_only():
    procs = procfile()
    assert "--bind 127.0.0.1" in procs["redis"]
    assert "-b 127.0.0.1" in procs["web"]
    assert set(procs) == {"redis", "web", "worker"}  # the worker listens on nothing


def test_nothing_in_the_run_configuration_names_a_wildcard_address():
    for name in ("Procfile", "Makefile"):
        text = (BASE_DIR / name).read_text()
        assert "0.0.0.0" not in text, name
