"""The install must ship every package: pyproject lists them by hand (nodes/ is renamed on install)."""
import pytest

tomllib = pytest.importorskip("tomllib")  # Python ≥ 3.11
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_every_subpackage_is_listed_in_pyproject():
    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {".".join(p.parent.relative_to(ROOT).parts) for p in (ROOT / "kling_foley_core").rglob("__init__.py")}
    assert found - listed == set(), f"add these to [tool.setuptools] packages: {sorted(found - listed)}"
    assert "kling_foley_nodes" in listed


def test_nodes_import_under_their_installed_name():
    import kling_foley_nodes

    assert isinstance(kling_foley_nodes.NODE_CLASS_MAPPINGS, dict)


def test_requirements_txt_matches_pyproject_without_torch():
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    reqs = [ln.strip() for ln in (ROOT / "requirements.txt").read_text().splitlines()
            if ln.strip() and not ln.startswith("#")]
    assert sorted(reqs) == sorted(d for d in deps if not d.startswith("torch"))
