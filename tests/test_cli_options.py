"""Every numeric option of every subcommand refuses a value out of its range (one table), and
every message that asks for a channel or time point names the command's own option."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile

from napari_cem.cli import build_parser

# the positional arguments each command needs to get as far as option parsing
POSITIONAL = {"demo": [], "info": [], "inspect": ["x.tif"], "curate": ["x.tif", "-o", "out"],
              "segment": ["m.pt", "x.tif", "-o", "o.tif"], "evaluate": ["a.tif", "b.tif"],
              "instances": ["seg.tif", "-o", "o.tif"],
              "finetune": ["x.tif", "l.tif", "-o", "m.pt"], "filter": ["export", "-o", "out"],
              "pretrain": ["patches", "-o", "out"], "export-model": ["m.pt", "-o", "m.zip"]}

# (command, option, a value it must refuse, words of the refusal)
BAD_VALUES = [
    ("demo", "--seed", "-1", "must be 0 or more"),
    ("inspect", "--percentiles", "101", "must be at most 100"),
    ("inspect", "--timepoint", "-1", "must be 0 or more"),
    ("inspect", "--channel", "-1", "must be 0 or more"),
    ("inspect", "--level", "-1", "must be 0 or more"),
    ("curate", "--patch-size", "4", "must be 8 or more"),
    ("curate", "--cutoff", "-1", "between 0 and 64"),
    ("curate", "--cutoff", "65", "between 0 and 64"),
    ("curate", "--tolerance", "-1", "must be 0 or more"),
    ("curate", "--tolerance", "nan", "finite"),
    ("curate", "--seed", "-1", "must be 0 or more"),
    ("curate", "--workers", "0", "must be 1 or more"),
    ("curate", "--timepoint", "-1", "must be 0 or more"),
    ("curate", "--channel", "-2", "must be 0 or more"),
    ("segment", "--threshold", "1.5", "at most 1"),
    ("segment", "--threshold", "-0.1", "between 0 and 1"),
    ("segment", "--tile", "16", "must be 32 or more"),
    ("segment", "--min-size", "-5", "between 0 and"),
    ("segment", "--batch-size", "0", "must be 1 or more"),
    ("segment", "--batch-size", "-3", "must be 1 or more"),
    ("segment", "--workers", "0", "must be 1 or more"),
    ("instances", "--workers", "0", "must be 1 or more"),
    ("export-model", "--timepoint", "-1", "must be 0 or more"),
    ("export-model", "--channel", "-1", "must be 0 or more"),
    ("segment", "--timepoint", "-1", "must be 0 or more"),
    ("segment", "--channel", "-1", "must be 0 or more"),
    ("instances", "--threshold", "1.5", "at most 1"),
    ("instances", "--min-size", "-5", "between 0 and"),
    ("instances", "--split-depth", "0", "above 0"),
    ("instances", "--slab", "0", "must be 1 or more"),
    ("instances", "--timepoint", "-1", "must be 0 or more"),
    ("instances", "--channel", "-1", "must be 0 or more"),
    ("evaluate", "--timepoint", "-1", "must be 0 or more"),
    ("evaluate", "--channel", "-1", "must be 0 or more"),
    ("finetune", "--iterations", "0", "must be 1 or more"),
    ("finetune", "--crop", "32", "must be 64 or more"),
    ("finetune", "--batch", "0", "must be 1 or more"),
    ("finetune", "--background-label", "-1", "must be 0 or more"),
    ("finetune", "--lr", "0", "above 0"),
    ("finetune", "--lr", "inf", "finite"),
    ("finetune", "--seed", "-1", "must be 0 or more"),
    ("finetune", "--timepoint", "-1", "must be 0 or more"),
    ("finetune", "--channel", "-1", "must be 0 or more"),
    ("finetune", "--labels-timepoint", "-1", "must be 0 or more"),
    ("finetune", "--labels-channel", "-1", "must be 0 or more"),
    ("filter", "--threshold", "2", "at most 1"),
    ("filter", "--workers", "0", "1 or more (or -1"),
    ("filter", "--workers", "-2", "1 or more (or -1"),
    ("pretrain", "--epochs", "0", "must be 1 or more"),
    ("pretrain", "--batch", "1", "must be 2 or more"),
    ("pretrain", "--lr", "0", "above 0"),
    ("pretrain", "--queue", "0", "must be 1 or more"),
    ("pretrain", "--crop", "16", "must be 32 or more"),
    ("pretrain", "--seed", "-1", "must be 0 or more"),
    ("pretrain", "--max-minutes", "0", "above 0"),
]


def _numeric_options():
    """(command, option) of every option whose value is parsed as a number."""
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    found = set()
    for command, p in sub.choices.items():
        for action in p._actions:
            if action.option_strings and action.type is not None and action.type is not str:
                found.add((command, max(action.option_strings, key=len)))
    return found


def test_the_table_covers_every_numeric_option():
    assert _numeric_options() == {(c, o) for c, o, _v, _w in BAD_VALUES}


@pytest.mark.parametrize("command, option, value, words", BAD_VALUES,
                         ids=[f"{c} {o} {v}" for c, o, v, _w in BAD_VALUES])
def test_out_of_range_values_are_refused_before_anything_runs(tmp_path, napari_cem, command, option,
                                                               value, words):
    extra = ["50", value] if option == "--percentiles" else [value]
    code, out, err = napari_cem(command, *POSITIONAL[command], option, *extra, cwd=tmp_path)
    assert code == 2, (out, err)
    assert f"argument {option}" in err and words in err and "Traceback" not in err
    assert list(tmp_path.iterdir()) == []  # nothing read, nothing written


@pytest.fixture(scope="module")
def three_channels(tmp_path_factory):
    """A 4 x 3 x 64 x 64 ZCYX file (a real channel axis) and a matching model."""
    from napari_cem.model import ModelBundle, build_unet, save_bundle

    folder = tmp_path_factory.mktemp("channels")
    path = folder / "zcyx.tif"
    data = np.random.default_rng(0).integers(0, 255, (4, 3, 64, 64), dtype=np.uint8)
    tifffile.imwrite(path, data, imagej=True, metadata={"axes": "ZCYX"})
    grey = folder / "grey.tif"
    tifffile.imwrite(grey, data[:, 0], photometric="minisblack")
    model = save_bundle(ModelBundle(model=build_unet(1).eval(), classes=["background", "mito"],
                                    norms=(0.5, 0.2)), folder / "m.pt")
    return path, grey, model


@pytest.mark.parametrize("case", ["inspect", "curate", "segment", "evaluate", "finetune image",
                                  "finetune labels"])
def test_a_channel_choice_names_the_commands_own_option(three_channels, tmp_path, napari_cem, case):
    path, grey, model = three_channels
    args, option = {
        "inspect": (["inspect", path], "--channel C"),
        "curate": (["curate", path, "-o", tmp_path / "out"], "--channel C"),
        "segment": (["segment", model, path, "-o", tmp_path / "s.tif"], "--channel C"),
        "evaluate": (["evaluate", path, grey], "--channel C"),
        "finetune image": (["finetune", path, grey, "-o", tmp_path / "m.pt"], "--channel C"),
        "finetune labels": (["finetune", grey, path, "-o", tmp_path / "m.pt"], "--labels-channel C"),
    }[case]
    code, out, err = napari_cem(*args)
    assert code in (1, 2) and "Traceback" not in err
    assert f"choose {option} with C in 0-2" in err, err
    assert "channel=" not in err


def test_the_channel_option_is_then_taken(three_channels, napari_cem):
    path, _grey, _model = three_channels
    code, out, err = napari_cem("inspect", path, "--channel", "2")
    assert code == 0 and "4 x 64 x 64" in out, err


# Every numeric field of every dock widget: (widget, field, lowest, highest) allowed. The
# lowest matches the CLI's rule for the same setting (-1 = "none" for time point / channel).
WIDGET_FIELDS = [
    ("LoadVolumeWidget", "low", 0.0, 50.0), ("LoadVolumeWidget", "high", 50.0, 100.0),
    ("LoadVolumeWidget", "voxel_z", 0.01, 1e6), ("LoadVolumeWidget", "voxel_y", 0.01, 1e6),
    ("LoadVolumeWidget", "voxel_x", 0.01, 1e6), ("LoadVolumeWidget", "timepoint", -1, 100_000),
    ("LoadVolumeWidget", "channel", -1, 1000), ("LoadVolumeWidget", "level", 0, 20),
    ("NearDuplicatesWidget", "patch_size", 16, 4096), ("NearDuplicatesWidget", "seed", 0, 2**31 - 1),
    ("NearDuplicatesWidget", "cutoff", 0, 32),
    ("LabelPatchesWidget", "threshold", 0.0, 1.0),
    ("FinetuneWidget", "iterations", 1, 100_000), ("FinetuneWidget", "crop", 64, 2048),
    ("FinetuneWidget", "batch", 1, 256), ("FinetuneWidget", "live_every", 0.0, 600.0),
    ("SegmentWidget", "threshold", 0.0, 1.0),
    ("SegmentWidget", "min_size", 0, 10**9),
    ("PretrainWidget", "epochs", 1, 10_000), ("PretrainWidget", "batch", 2, 4096),
    ("PretrainWidget", "queue", 2, 1_048_576), ("PretrainWidget", "lr", 0.0001, 1.0),
    ("PretrainWidget", "max_minutes", 0.0, 100_000.0),
]


def test_every_numeric_widget_field_has_its_range(make_napari_viewer):
    from magicgui.widgets import FloatSlider, FloatSpinBox, Slider, SpinBox

    from napari_cem._widgets import (finetune, label_patches, load_volume, near_duplicates, pretrain,
                                     segment)

    classes = {"LoadVolumeWidget": load_volume.LoadVolumeWidget,
               "NearDuplicatesWidget": near_duplicates.NearDuplicatesWidget,
               "LabelPatchesWidget": label_patches.LabelPatchesWidget,
               "FinetuneWidget": finetune.FinetuneWidget, "SegmentWidget": segment.SegmentWidget,
               "PretrainWidget": pretrain.PretrainWidget}
    viewer = make_napari_viewer()
    found = set()
    table = {(w, f): (lo, hi) for w, f, lo, hi in WIDGET_FIELDS}
    for name, cls in classes.items():
        widget = cls(viewer)
        for field, value in vars(widget).items():
            if not isinstance(value, (SpinBox, FloatSpinBox, Slider, FloatSlider)):
                continue
            found.add((name, field))
            low, high = table[(name, field)]
            assert (value.min, value.max) == pytest.approx((low, high)), (name, field)
            step = 1 if isinstance(value, (SpinBox, Slider)) else 1e-6 * max(1.0, abs(low))
            with pytest.raises(ValueError):
                value.value = low - step  # refused, not silently accepted
    assert found == set(table)
