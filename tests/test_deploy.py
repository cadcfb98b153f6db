"""The deployment files: ``docker-compose.yml`` validated by docker-compose itself (the
Debian package ``docker-compose``, installed by ``.ci/run``), and checked for what a
deployment needs; the ``Dockerfile`` against the package layout.

No image is built or pulled here (the machines have no registry of images): what is
checked is the composition, the names and the wiring."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from api.app import ApiSettings
from payouts.config import PayoutSettings

REPO = Path(__file__).resolve().parent.parent


def compose_config(*flags: str) -> dict[str, Any]:
    binary = shutil.which("docker-compose")
    assert binary is not None, "docker-compose is missing: apt-get install docker-compose (.ci/run does)"
    done = subprocess.run([binary, *flags, "config"], cwd=REPO, capture_output=True, text=True, timeout=60,
                          env={"PATH": "/usr/bin:/bin:/usr/local/bin"})  # fmt: skip
    assert done.returncode == 0, done.stderr
    config: dict[str, Any] = yaml.safe_load(done.stdout)
    return config


def test_the_compose_file_validates_and_wires_every_part() -> None:
    services = compose_config()["services"]
    assert services.pop("stellar")["profiles"] == ["stellar"]  # only with --profile stellar
    assert set(services) == {"postgresql", "temporal-schema", "temporal", "temporal-namespace", "temporal-ui",
                             "devnet", "migrate", "worker", "api"}  # fmt: skip
    images = {name: s.get("image", "") for name, s in services.items()}
    assert not any("auto-setup" in image for image in images.values()), images
    assert images["temporal"].startswith("temporalio/server:")
    assert "setup-schema.sh" in " ".join(services["temporal-schema"]["entrypoint"])
    assert services["temporal"]["depends_on"]["temporal-schema"]["condition"] == "service_completed_successfully"
    worker = services["worker"]
    # Scalable with --scale: no fixed container name, no published port.
    assert "container_name" not in worker and "ports" not in worker
    assert worker["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
    assert worker["depends_on"]["temporal-namespace"]["condition"] == "service_completed_successfully"
    assert set(worker["environment"]) <= set(PayoutSettings.model_fields), "a worker variable the engine ignores"
    assert set(services["api"]["environment"]) <= set(ApiSettings.model_fields), "an API variable the API ignores"
    assert services["api"]["command"] == ["payouts-api"]
    assert services["worker"]["environment"]["DATABASE_URL"].startswith("postgresql+psycopg://")


def test_the_stellar_profile_adds_a_local_quickstart_network_with_rpc() -> None:
    stellar = compose_config("--profile", "stellar")["services"]["stellar"]
    assert stellar["image"].startswith("stellar/quickstart")
    assert "--local" in stellar["command"] and any("rpc" in part for part in stellar["command"])


@pytest.mark.parametrize("script", sorted((REPO / "deploy" / "temporal").glob("*.sh")), ids=lambda p: p.name)
def test_the_setup_scripts_are_valid_shell(script: Path) -> None:
    done = subprocess.run(["sh", "-n", str(script)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_the_namespace_setup_registers_the_search_attributes_the_workflows_set() -> None:
    from workflows.payout import PAYOUT_ASSET, PAYOUT_STATUS

    script = (REPO / "deploy" / "temporal" / "setup-namespace.sh").read_text()
    assert f"{PAYOUT_STATUS.name} {PAYOUT_ASSET.name}" in script and "--type Keyword" in script


def test_the_dockerfile_copies_every_package_the_project_installs() -> None:
    dockerfile = (REPO / "Dockerfile").read_text()
    copied = {line.split()[1] for line in dockerfile.splitlines() if line.startswith("COPY ")}
    packages = {"activities", "api", "devnet", "payouts", "workflows"}
    assert packages <= copied, packages - copied
    for package in packages:
        assert (REPO / package / "__init__.py").exists()
