"""The documentation site builds with --strict, and its generated reference pages are current."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
GENERATED = ROOT / "docs" / "reference"


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ORCH_", "FAL_"))}
    env["NO_MKDOCS_2_WARNING"] = "1"
    return env


def test_site_builds_strict(tmp_path: Path) -> None:
    """Broken links, missing anchors, pages outside the nav or a missing page fail the build."""
    site = tmp_path / "site"
    proc = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site)],
        cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=180,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert (site / "reference" / "settings" / "index.html").is_file()
    architecture = (site / "explanation" / "architecture" / "index.html").read_text()
    assert 'class="mermaid"' in architecture
    # Diagrams are drawn by the vendored mermaid, so nothing is fetched from a CDN to read them.
    assert "assets/vendor/mermaid/mermaid.min.js" in architecture
    assert (site / "assets" / "vendor" / "mermaid" / "mermaid.min.js").stat().st_size > 1_000_000
    assert "fonts.googleapis.com" not in architecture


def test_generated_reference_is_up_to_date(tmp_path: Path) -> None:
    """A new command, option, setting, endpoint, state or error type without regenerated docs
    fails here: run `python scripts/gen_docs.py` and commit the pages."""
    proc = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "gen_docs.py"), "--out", str(tmp_path)],
        cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    fresh = sorted(p.name for p in tmp_path.glob("*.md"))
    assert fresh == ["cli.md", "http-api.md", "settings.md", "states-and-errors.md"]
    stale = [name for name in fresh
             if (tmp_path / name).read_text() != (GENERATED / name).read_text()]
    assert not stale, f"docs/reference/{stale} out of date: run `python scripts/gen_docs.py`"


def test_every_setting_and_command_is_in_the_reference() -> None:
    """The pages name what the code has (guards the generator itself, not only its output)."""
    import typer

    from orchestrator.cli import app
    from orchestrator.settings import catalog

    settings_page = (GENERATED / "settings.md").read_text()
    docs = catalog()
    envs = [d.env for d in docs]
    assert len(envs) == len(set(envs)) > 40
    assert {"ORCH_DATABASE_URL", "ORCH_BROKER_URL", "FAL_KEY", "ORCH_LOCAL_MODEL_PATH"} <= set(envs)
    for doc in docs:
        assert f"| `{doc.env}` |" in settings_page
    cli_page = (GENERATED / "cli.md").read_text()
    root = typer.main.get_command(app)
    for name, command in getattr(root, "commands").items():
        assert f"## `orchestrator {name}`" in cli_page
        for sub in getattr(command, "commands", {}):
            assert f"## `orchestrator {name} {sub}`" in cli_page


def test_cost_chart_recipe_still_draws(tmp_path: Path) -> None:
    """The commands under the cost chart on the cost-reports page still produce a chart."""
    db = tmp_path / "chart.db"
    seed = subprocess.run([sys.executable, str(ROOT / "scripts" / "seed_cost_chart.py"), str(db)],
                          cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=120)
    assert seed.returncode == 0, seed.stderr
    chart = tmp_path / "chart.svg"
    report = subprocess.run(
        [sys.executable, "-m", "orchestrator", "report", "costs", "--since", "2026-11-01",
         "--until", "2026-11-14", "-g", "day", "--chart", str(chart), "--chart-size", "900x420",
         "--json"],
        cwd=ROOT, env={**_env(), "ORCH_DATABASE_URL": f"sqlite:///{db}"},
        capture_output=True, text=True, timeout=120,
    )
    assert report.returncode == 0, report.stderr
    assert chart.read_text().lstrip().startswith("<?xml")
    assert "cost-chart.svg" in (ROOT / "docs" / "how-to" / "cost-reports.md").read_text()
    assert (ROOT / "docs" / "assets" / "cost-chart.svg").is_file()
