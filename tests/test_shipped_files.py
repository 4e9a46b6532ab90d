"""The files shipped for operators: the reference config and the systemd unit."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from dataclasses import fields
from pathlib import Path

import pytest

from checkpointd.config import Config
from checkpointd.daemon.settings import DaemonSettings, HttpSettings, NatsSettings, load

ROOT = Path(__file__).resolve().parent.parent
CONFIG = ROOT / "config" / "checkpointd.toml"
UNIT = ROOT / "systemd" / "checkpointd.service"


def _listed(text: str, section: str | None) -> set[str]:
    """Keys written in the file (set or commented out), in the top level or a table."""
    keys: set[str] = set()
    current: str | None = None
    for line in text.splitlines():
        table = re.fullmatch(r"\[(\w+)\]", line.strip())
        if table:
            current = table.group(1)
            continue
        key = re.match(r"#? ?(\w+) = ", line)
        if key and current == section:
            keys.add(key.group(1))
    return keys


def test_the_reference_config_lists_every_setting() -> None:
    text = CONFIG.read_text(encoding="utf-8")
    top = {f.name for f in fields(Config)} | {f.name for f in fields(DaemonSettings)}
    assert _listed(text, None) == top
    assert _listed(text, "nats") == {f.name for f in fields(NatsSettings)}
    assert _listed(text, "http") == {f.name for f in fields(HttpSettings)}


def test_the_reference_config_gives_the_defaults() -> None:
    """Every value written in the file is the default: loading it changes nothing."""
    assert load(str(CONFIG), environ={}) == load(None, environ={})


def _unit_for_this_machine(tmp_path: Path) -> Path:
    """The unit with ExecStart pointing at this venv's checkpointd (verify checks it exists)."""
    script = shutil.which("checkpointd", path=str(Path(sys.executable).parent))
    assert script is not None, "checkpointd console script not installed (pip install -e .)"
    unit = tmp_path / "checkpointd.service"
    unit.write_text(UNIT.read_text().replace("/opt/checkpointd/bin/checkpointd", script))
    return unit


def test_the_unit_declares_the_lifecycle_and_sandbox() -> None:
    directives = dict(
        line.split("=", 1)
        for line in UNIT.read_text().splitlines()
        if "=" in line and not line.startswith("#")
    )
    assert directives["Type"] == "notify"
    assert directives["WatchdogSec"]
    assert directives["DynamicUser"] == "yes"
    assert directives["StateDirectory"] == "checkpointd"
    assert directives["LoadCredential"].startswith("encryption.key:")
    assert directives["KillMode"] == "mixed"
    assert directives["RestartPreventExitStatus"] == "78"
    for hardening in ("NoNewPrivileges", "ProtectSystem", "PrivateTmp", "SystemCallFilter"):
        assert hardening in directives


@pytest.mark.skipif(
    shutil.which("systemd-analyze") is None,
    reason="systemd-analyze not installed (Debian: apt-get install systemd; .ci/run does)",
)
def test_the_unit_passes_systemd_analyze_verify(tmp_path: Path) -> None:
    unit = _unit_for_this_machine(tmp_path)
    result = subprocess.run(
        ["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, check=False
    )
    problems = [line for line in result.stderr.splitlines() if "checkpointd.service" in line]
    assert result.returncode == 0, result.stderr
    assert problems == []


BACKUP_UNITS = ("checkpointd-backup.service", "checkpointd-backup.timer")


def test_the_backup_unit_shares_the_daemons_user_and_state_and_the_timer_starts_it() -> None:
    """The nightly backup reads the daemon's log: same dynamic user, same state directory."""
    service = (ROOT / "systemd" / BACKUP_UNITS[0]).read_text()
    timer = (ROOT / "systemd" / BACKUP_UNITS[1]).read_text()
    daemon = UNIT.read_text()
    assert "DynamicUser=yes" in service
    assert "StateDirectory=checkpointd checkpointd-backups" in service
    assert re.search(r"^ExecStart=\S+/checkpointd backup ", service, re.MULTILINE)
    assert "StateDirectory=checkpointd\n" in daemon
    assert "OnCalendar=" in timer
    assert "Persistent=true" in timer


@pytest.mark.skipif(
    shutil.which("systemd-analyze") is None,
    reason="systemd-analyze not installed (Debian: apt-get install systemd; .ci/run does)",
)
def test_the_backup_units_pass_systemd_analyze_verify(tmp_path: Path) -> None:
    script = shutil.which("checkpointd", path=str(Path(sys.executable).parent))
    assert script is not None, "checkpointd console script not installed (pip install -e .)"
    paths = []
    for name in BACKUP_UNITS:
        text = (ROOT / "systemd" / name).read_text()
        path = tmp_path / name
        path.write_text(text.replace("/opt/checkpointd/bin/checkpointd", script))
        paths.append(str(path))
    result = subprocess.run(
        ["systemd-analyze", "verify", *paths], capture_output=True, text=True, check=False
    )
    problems = [line for line in result.stderr.splitlines() if "checkpointd-backup" in line]
    assert result.returncode == 0, result.stderr
    assert problems == []
