"""The plugin is found by napari after an editable install and inside a built wheel."""

from __future__ import annotations

import subprocess
import sys
import zipfile

import pytest

from conftest import REPO_ROOT


def test_manifest_validates():
    from npe2 import PluginManifest

    manifest = PluginManifest.from_file(REPO_ROOT / "napari.yaml")
    manifest.validate_imports()  # every python_name points at something importable
    assert manifest.name == "napari-cem"
    widget_names = [w.display_name for w in manifest.contributions.widgets]
    assert "Load EM volume" in widget_names


def test_npe2_validate_cli():
    result = subprocess.run(
        [sys.executable, "-m", "npe2", "validate", str(REPO_ROOT / "napari.yaml")],
        capture_output=True, text=True, check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "valid" in result.stdout


def test_installed_plugin_is_discovered():
    import npe2

    pm = npe2.PluginManager.instance()
    pm.discover()
    manifest = pm.get_manifest("napari-cem")
    assert {s.key for s in manifest.contributions.sample_data} >= {
        "synthetic-isotropic", "synthetic-anisotropic"}


@pytest.mark.slow
def test_wheel_contains_manifest_and_entry_point(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "build", "--wheel", "--no-isolation", "-o", str(tmp_path), str(REPO_ROOT)],
        capture_output=True, text=True, check=False,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    (wheel,) = tmp_path.glob("napari_cem-*.whl")
    with zipfile.ZipFile(wheel) as zf:
        names = zf.namelist()
        manifest_text = zf.read("napari_cem/napari.yaml").decode()
        entry_points = next(zf.read(n).decode() for n in names if n.endswith("entry_points.txt"))
    assert manifest_text == (REPO_ROOT / "napari.yaml").read_text()
    assert "napari-cem = napari_cem:napari.yaml" in entry_points
    assert "napari-cem = napari_cem.cli:main" in entry_points
    # The manifest inside the wheel loads and validates on its own.
    from npe2 import PluginManifest

    extracted = tmp_path / "napari.yaml"
    extracted.write_text(manifest_text)
    assert PluginManifest.from_file(extracted).name == "napari-cem"
