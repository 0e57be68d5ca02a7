"""bioimage.io packages: export-model writes a package that bioimageio.spec validates and
bioimageio.core's own test passes; segment runs a package of ours as it runs the bundle, and
refuses another tool's package with the reason."""

from __future__ import annotations

import zipfile

import numpy as np
import pytest

from napari_cem.cli import main
from napari_cem.model import load_bundle

pytest.importorskip("bioimageio.core")


@pytest.fixture(scope="module")
def package(unet_file, tmp_path_factory):
    out = tmp_path_factory.mktemp("pkg") / "mito.zip"
    assert main(["export-model", str(unet_file), "-o", str(out), "--author", "A. Tester", "--no-test"]) == 0
    return out


def test_export_is_valid_and_passes_bioimageio_core(package, capsys):
    from bioimageio.spec import load_description

    descr = load_description(package, perform_io_checks=True)
    assert descr.validation_summary.status in ("valid-format", "passed"), descr.validation_summary.format()
    assert [a.name for a in descr.authors] == ["A. Tester"]
    assert {"rdf.yaml", "weights.pt", "weights_torchscript.pt", "test_input.npy", "test_output.npy",
            "cover.png", "README.md"} <= set(zipfile.ZipFile(package).namelist())
    assert "CEM500K" in zipfile.ZipFile(package).read("README.md").decode()


def test_the_command_ran_bioimageio_core_test(unet_file, tmp_path, capsys):
    out = tmp_path / "again.zip"
    assert main(["export-model", str(unet_file), "-o", str(out)]) == 0
    assert "bioimageio.core test: passed" in capsys.readouterr().out


def test_segment_runs_our_package_like_the_bundle(unet_file, package):
    from napari_cem.infer import segment
    from napari_cem.synthetic import make_em_volume

    volume = make_em_volume((2, 64, 64), isotropic=True, seed=1).image
    a = segment(volume, load_bundle(unet_file), device="cpu", precision="float32", keep_probabilities=True)
    b = segment(volume, load_bundle(package), device="cpu", precision="float32", keep_probabilities=True)
    np.testing.assert_array_equal(a.labels, b.labels)
    np.testing.assert_array_equal(a.probabilities, b.probabilities)
    assert load_bundle(package).training == {"iterations": 3}


def test_another_tools_package_is_refused_with_the_reason(tmp_path, capsys):
    foreign = tmp_path / "stardist.zip"
    with zipfile.ZipFile(foreign, "w") as z:
        z.writestr("rdf.yaml", "name: StarDist nuclei\ntype: model\nformat_version: 0.5.3\n")
    with pytest.raises(ValueError, match="napari-cem did not write"):
        load_bundle(foreign)
    (tmp_path / "x.tif").write_bytes(b"")
    assert main(["segment", str(foreign), str(tmp_path / "x.tif"), "-o", str(tmp_path / "o.tif")]) == 2
    assert "StarDist nuclei" in capsys.readouterr().err
    broken = tmp_path / "broken.zip"
    broken.write_bytes(b"not a zip")
    with pytest.raises(ValueError, match="not a zip file"):
        load_bundle(broken)


def test_segment_widget_exports_the_active_model(unet_file, tmp_path, make_napari_viewer, qtbot):
    from napari_cem._widgets._state import state_for
    from napari_cem._widgets.segment import SegmentWidget
    from napari_cem.synthetic import make_em_volume

    viewer = make_napari_viewer()
    viewer.add_image(make_em_volume((2, 300, 300), isotropic=True, seed=3).image, name="em")
    widget = SegmentWidget(viewer)
    widget.package_file.value = tmp_path / "exported.zip"
    assert widget.export_model() is None  # no model yet: a message, no job
    state_for(viewer).set_active_model(load_bundle(unet_file))  # in memory: no file of its own
    widget.package_file.value = tmp_path / "exported.zip"
    assert widget.export_model() is not None
    qtbot.waitUntil(lambda: widget._worker is None, timeout=300_000)
    assert "bioimageio.core test passed" in widget.progress.status.value
    assert load_bundle(tmp_path / "exported.zip").classes == ["background", "mito"]
