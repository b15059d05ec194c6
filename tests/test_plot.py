"""jitnn.plot: the files are written, in the format asked, and hold what they show (curve names,
layer rows, the peak) as text; the data drawn are the history's and the profile's own numbers."""

import numpy as np
import pytest
from test_profiler import profiled

from jitnn import Dense, Sequential, plot, report


@pytest.fixture(scope="module")
def history():
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((96, 5)), rng.integers(0, 3, 96)
    model = Sequential([Dense(8, activation="relu"), Dense(3, activation="softmax")])
    model.compile(loss="categorical_crossentropy", optimizer="adam", metrics=["accuracy"])
    return model.fit(x[:64], y[:64], epochs=4, validation_data=(x[64:], y[64:]), verbose=0, seed=0)


def test_history_svg_and_png(history, tmp_path):
    fig = plot.history(history, tmp_path / "h.svg", title="run 1")
    text = (tmp_path / "h.svg").read_text(encoding="utf-8")
    assert "<svg" in text and ">loss<" in text and ">accuracy<" in text and ">validation<" in text
    axes = fig.axes
    assert [ax.get_title() for ax in axes] == ["loss", "accuracy"]
    lines = {line.get_label(): line for line in axes[0].get_lines()}
    np.testing.assert_allclose(lines["train"].get_ydata(), history.history["loss"])
    np.testing.assert_allclose(lines["validation"].get_ydata(), history.history["val_loss"])
    np.testing.assert_array_equal(lines["train"].get_xdata(), [1, 2, 3, 4])
    plot.history(history.history, tmp_path / "h.png")
    assert (tmp_path / "h.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # same figure, same bytes: SVGs in docs/ do not change without a reason
    plot.history(history, tmp_path / "again.svg", title="run 1")
    assert (tmp_path / "again.svg").read_bytes() == (tmp_path / "h.svg").read_bytes()


def test_history_rejects_what_is_not_one():
    with pytest.raises(TypeError, match="History"):
        plot.history([0.1, 0.2])
    with pytest.raises(TypeError, match="History"):
        plot.history({})


def test_profile_chart_has_every_layer_and_the_peak(tmp_path):
    _, prof = profiled(batch=32)
    fig = plot.profile(prof, tmp_path / "p.svg", ["batch 32"], peak_gflops=123.0, limit=50)
    text = (tmp_path / "p.svg").read_text(encoding="utf-8")
    for r in report.rows(prof):
        assert r["name"].replace(">", "&gt;") in text
    assert "peak 123" in text
    time_ax, gflops_ax = fig.axes
    ms = sorted(bar.get_width() for bar in time_ax.patches)
    assert ms == pytest.approx(sorted(r["flat_ns"] / 1e6 for r in report.rows(prof)))
    assert any(line.get_xdata()[0] == 123.0 for line in gflops_ax.get_lines())
    two = plot.profile([prof, prof], tmp_path / "two.png", limit=3)
    assert len(two.axes) == 4 and len(two.axes[0].patches) == 3
