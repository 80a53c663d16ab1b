"""`orchestrator dev`'s data folder is its owner's only on every start (issue 14.8)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from orchestrator.dev.data_dir import DataDir


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_a_pre_existing_folder_and_its_files_are_made_private(tmp_path: Path) -> None:
    root = tmp_path / "orchestrator-data"
    (root / "logs").mkdir(parents=True)
    (root / "tls").mkdir()
    root.chmod(0o755)
    (root / "logs").chmod(0o755)
    (root / "tls").chmod(0o755)
    files = [root / "orchestrator.db", root / "broker.db", root / "logs" / "api.log",
             root / "tls" / "server.pem", root / "tls" / "server.key"]
    for path in files:
        path.write_text("x")
        path.chmod(0o644)
    DataDir.at(root).create()
    assert [_mode(p) for p in (root, root / "logs", root / "tls")] == [0o700] * 3
    assert [_mode(p) for p in files] == [0o600] * len(files)


def test_a_new_folder_is_private(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        data = DataDir.at(tmp_path / "new" / "data")
        data.create()
    finally:
        os.umask(old)
    assert _mode(data.root) == 0o700 and _mode(data.logs) == 0o700
