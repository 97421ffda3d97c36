"""What a command costs before it does any work: what ``--help`` imports, how many times a
run loads its embedder, and how many temporary Prefect servers a run starts."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from miners import embedders
from synth.planted import make_synthetic_set

ROOT = Path(__file__).resolve().parents[2]
HEAVY = ("torch", "open_clip", "faiss", "prefect", "distributed")
COUNTED = f"{__name__}:counted_pixel_embedder"
LOADS: list[int] = []  # one entry per call of the factory below


def counted_pixel_embedder():
    """The pixel embedder, counting how many times it is built."""
    LOADS.append(1)
    return embedders.pixel_embedder()


def _imported_after(argv: list[str]) -> tuple[list[str], str]:
    """Heavy modules present after ``capmine ARGV`` parses its arguments, and its output."""
    probe = (
        "import contextlib, io, sys\nfrom flows.cli import main\nout = io.StringIO()\n"
        f"with contextlib.redirect_stdout(out), contextlib.suppress(SystemExit):\n    main({argv!r})\n"
        f"print([m for m in {HEAVY!r} if m in sys.modules])\nprint(out.getvalue())\n"
    )
    proc = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                          env=dict(os.environ, PYTHONPATH=str(ROOT)), timeout=120)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    first, _, rest = proc.stdout.partition("\n")
    return eval(first), rest  # a list literal printed by the probe


@pytest.mark.parametrize("argv", [["--help"], ["mine", "--help"]])
def test_help_imports_no_model_nor_prefect(argv):
    heavy, text = _imported_after(argv)
    assert heavy == [], heavy
    assert "mine-and-train" in text if argv == ["--help"] else "--seeds SEEDS" in text, text


def test_each_command_still_has_its_options():
    _, text = _imported_after(["train", "--help"])
    assert "--steps STEPS" in text and "--seeds" not in text, text
    _, text = _imported_after(["mine-and-train", "--help"])
    assert "--seeds SEEDS" in text and "--holdout-shards" in text, text


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("startup")
    make_synthetic_set(root / "data", n_seeds=2, n_unplanted=1, n_videos=1, seconds=10.0,
                       broken=False)  # fmt: skip
    return root / "data"


def _mine_argv(data: Path, out: Path, *extra: str) -> list[str]:
    return ["mine", "--seeds", str(data / "seeds"), "--videos", str(data / "videos.txt"),
            "--out", str(out), "--filters", "none", "--shard-size", "2", "--clip-seconds", "4",
            "--device", "cpu", "--no-progress", *extra]  # fmt: skip


def test_a_run_loads_its_embedder_once(tiny, tmp_path, prefect_harness):
    """Seeds, calibration (no --threshold) and the scan share one load in this process."""
    from flows.cli import main

    embedders._cached_embedder.cache_clear()
    embedders._sized_embedder.cache_clear()
    LOADS.clear()
    assert main(_mine_argv(tiny, tmp_path / "out", "--embedder", COUNTED)) == 0
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["videos"]["ok"] == 1 and report["threshold"]["basis"] != "given", report
    assert len(LOADS) == 1


def test_a_run_with_another_batch_size_still_loads_once(tiny, tmp_path, prefect_harness):
    from flows.cli import main

    embedders._cached_embedder.cache_clear()
    embedders._sized_embedder.cache_clear()
    LOADS.clear()
    argv = _mine_argv(tiny, tmp_path / "out", "--embedder", COUNTED, "--batch-size", "8")
    assert main([*argv, "--threshold", "0.6"]) == 0
    assert len(LOADS) == 1


def _cli_run(data: Path, out: Path, env: dict[str, str]) -> str:
    """``capmine --verbose mine`` in its own process: its stderr, once it succeeded."""
    cmd = [sys.executable, "-m", "flows.cli", "--verbose",
           *_mine_argv(data, out, "--embedder", embedders.__name__ + ":pixel_embedder",
                       "--threshold", "0.6")]  # fmt: skip
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (out / "report.json").exists()
    return proc.stderr


def test_a_run_starts_one_temporary_server(tiny, tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    env.update(PYTHONPATH=str(ROOT), PREFECT_HOME=str(tmp_path / "prefect"),
               PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS="150")  # fmt: skip
    err = _cli_run(tiny, tmp_path / "out", env)
    assert err.count("Starting temporary server") == 1, err[-3000:]
    assert err.count("Stopping temporary server") == 1, err[-3000:]


def test_a_run_with_prefect_api_url_starts_no_server(tiny, tmp_path, prefect_harness):
    from prefect.settings import PREFECT_API_URL

    env = dict(os.environ, PYTHONPATH=str(ROOT), PREFECT_API_URL=PREFECT_API_URL.value())
    err = _cli_run(tiny, tmp_path / "out", env)
    assert "Beginning flow run" in err, err[-3000:]
    assert "temporary server" not in err, err[-3000:]
