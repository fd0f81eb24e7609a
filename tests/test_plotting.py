"""Tests for iclab.plotting: PNGs are written and readable, non-finite data and log scales are handled."""

from __future__ import annotations

import matplotlib.image as mpimg
import numpy as np
import pytest

from iclab import plotting


@pytest.fixture
def figures(monkeypatch):
    """Figures passed to save_figure, in order (the PNGs are still written)."""
    saved = []
    real = plotting.save_figure

    def spy(fig, path):
        saved.append(fig)
        return real(fig, path)

    monkeypatch.setattr(plotting, "save_figure", spy)
    return saved


def _png_shape(path) -> tuple[int, ...]:
    assert path.is_file() and path.stat().st_size > 0
    image = mpimg.imread(path)
    assert image.ndim == 3 and image.shape[0] > 0 and image.shape[1] > 0
    return image.shape


def _legend_texts(ax) -> list[str]:
    return [t.get_text() for t in ax.get_legend().get_texts()]


def _construction(d: int) -> dict[str, np.ndarray]:
    kq = np.zeros((d + 1, d + 1))
    kq[:d, :d] = np.eye(d)
    pv = np.zeros((d + 1, d + 1))
    pv[d, d] = -1.0
    return {"W_KQ": kq, "W_PV": pv}


# ---------------------------------------------------------------- training curve


def test_training_curve_writes_png_with_references(tmp_path, figures):
    steps = np.arange(0, 1000, 10)
    losses = 0.5 * np.exp(-steps / 300) + 0.19
    path = plotting.plot_training_curve(
        steps, losses, tmp_path / "nested" / "dir" / "curve.png", reference={"1 step of GD": 0.2}, title="LSA"
    )
    assert path == tmp_path / "nested" / "dir" / "curve.png"
    assert _png_shape(path)[:2] == (4 * plotting.DPI, 6 * plotting.DPI)
    (ax,) = figures[0].axes
    assert ax.get_yscale() == "log"
    assert _legend_texts(ax) == ["model", "1 step of GD"]
    assert figures[0].get_suptitle() == "LSA"


def test_training_curve_nan_and_inf_are_gaps(tmp_path, figures):
    losses = np.array([1.0, 0.5, np.nan, np.inf, 0.1, -np.inf, 0.05])
    path = plotting.plot_training_curve(np.arange(7), losses, tmp_path / "nan.png")
    _png_shape(path)
    (ax,) = figures[0].axes
    assert ax.get_yscale() == "log"  # the finite values are all positive
    plotted = ax.lines[0].get_ydata()
    assert np.isnan(plotted[[2, 3, 5]]).all()
    assert np.array_equal(plotted[[0, 1, 4, 6]], losses[[0, 1, 4, 6]])


@pytest.mark.parametrize(
    ("losses", "reference"),
    [
        ([1.0, 0.5, 0.0], None),  # a zero loss
        ([1.0, 0.5, 0.2], {"baseline": -0.1}),  # a non-positive reference
        ([np.nan, np.nan, np.nan], None),  # nothing finite at all
    ],
)
def test_training_curve_falls_back_to_linear(tmp_path, figures, losses, reference):
    _png_shape(plotting.plot_training_curve([0, 1, 2], losses, tmp_path / "lin.png", reference=reference))
    assert figures[0].axes[0].get_yscale() == "linear"


def test_training_curve_length_mismatch_is_an_error(tmp_path):
    with pytest.raises(ValueError, match="losses has 2 values; expected 3"):
        plotting.plot_training_curve([0, 1, 2], [1.0, 0.5], tmp_path / "bad.png")


# ---------------------------------------------------------------- weight heatmaps


def test_symmetric_limits():
    assert plotting.symmetric_limits(np.array([[0.5, -2.0]]), np.array([1.0])) == 2.0
    assert plotting.symmetric_limits(np.array([np.nan, -np.inf, 0.3])) == 0.3
    assert plotting.symmetric_limits(np.zeros(3), np.array([np.nan])) == 1.0  # degenerate: any non-empty scale


def test_weight_heatmaps_share_colour_limits_per_row(tmp_path, figures):
    d = 3
    constructed = _construction(d)
    rng = np.random.default_rng(0)
    trained = {k: 1.7 * v + 0.05 * rng.standard_normal(v.shape) for k, v in constructed.items()}
    path = plotting.plot_weight_heatmaps(trained, constructed, tmp_path / "w.png", title="weights")
    assert _png_shape(path)[:2] == (round(3.4 * 2 * plotting.DPI), round(7.5 * plotting.DPI))

    fig = figures[0]
    images = [ax.images[0] for ax in fig.axes if ax.images]
    assert len(images) == 4
    for row, name in enumerate(["W_KQ", "W_PV"]):
        trained_im, constructed_im = images[2 * row], images[2 * row + 1]
        limit = plotting.symmetric_limits(trained[name], constructed[name])
        assert trained_im.get_clim() == constructed_im.get_clim() == (-limit, limit)
        assert trained_im.get_cmap().name == "RdBu_r"
    assert images[0].get_clim() != images[2].get_clim()  # rows are scaled independently
    assert len(fig.axes) == 4 + 2  # one colourbar per row
    labels = [t.get_text() for t in fig.axes[0].get_xticklabels()]
    assert labels == ["$x_{1}$", "$x_{2}$", "$x_{3}$", "$y$"]


def test_weight_heatmaps_tolerate_nan(tmp_path):
    constructed = _construction(2)
    trained = {k: v.copy() for k, v in constructed.items()}
    trained["W_KQ"][0, 1] = np.nan
    trained["W_PV"][:] = np.inf
    _png_shape(plotting.plot_weight_heatmaps(trained, constructed, tmp_path / "nan.png"))


def test_weight_heatmaps_reject_mismatched_inputs(tmp_path):
    constructed = _construction(2)
    with pytest.raises(ValueError, match="same, non-empty set of matrices"):
        plotting.plot_weight_heatmaps({"W_KQ": constructed["W_KQ"]}, constructed, tmp_path / "a.png")
    with pytest.raises(ValueError, match="W_KQ: need two 2-D arrays of one shape"):
        plotting.plot_weight_heatmaps({"W_KQ": np.zeros((2, 2))}, {"W_KQ": np.zeros((3, 3))}, tmp_path / "b.png")


# ---------------------------------------------------------------- generic curves


def test_curves_with_bands_and_integer_x(tmp_path, figures):
    layers = np.arange(1, 7)
    mean = {"trained LSA": 1.0 / layers, "GD": 1.2 / layers}
    std = 0.8 / layers  # lower bound 1/K - 0.8/K > 0, but GD's band below dips under 0
    bands = {"trained LSA": (mean["trained LSA"] - std, mean["trained LSA"] + std), "GD": (-std, 2 * std)}
    path = plotting.plot_curves(
        layers, mean, tmp_path / "k.png", xlabel="layers K", ylabel="½·MSE", bands=bands, title="depth"
    )
    assert _png_shape(path)[:2] == (4 * plotting.DPI, 6 * plotting.DPI)
    (ax,) = figures[0].axes
    assert ax.get_yscale() == "log"  # bands do not force a linear axis; their negative bounds are clipped
    assert _legend_texts(ax) == ["trained LSA", "GD"]
    assert len(ax.collections) == 2
    ticks = ax.xaxis.get_major_locator().tick_values(1, 6)
    assert np.allclose(ticks, np.round(ticks))


def test_curves_non_positive_with_logy_falls_back_to_linear(tmp_path, figures):
    x = np.linspace(0.5, 2.0, 5)
    curves = {"a": np.array([1.0, 0.1, 0.0, -0.2, 0.3]), "b": np.array([1.0, np.nan, np.inf, 0.5, 0.4])}
    _png_shape(plotting.plot_curves(x, curves, tmp_path / "neg.png", xlabel="α", ylabel="loss", logx=True))
    (ax,) = figures[0].axes
    assert ax.get_yscale() == "linear"
    assert ax.get_xscale() == "log"
    assert np.isnan(ax.lines[1].get_ydata()[[1, 2]]).all()


def test_curves_logx_ignored_for_non_positive_x_and_markers_off(tmp_path, figures):
    x = np.linspace(0.0, 1.0, 11)  # interpolation coefficient, includes 0
    path = plotting.plot_curves(
        x,
        {"interp": 1 + x * (1 - x)},
        tmp_path / "i.png",
        xlabel="t",
        ylabel="loss",
        logx=True,
        markers=False,
    )
    _png_shape(path)
    (ax,) = figures[0].axes
    assert ax.get_xscale() == "linear"
    assert ax.lines[0].get_marker() in ("None", None, "")


def test_curves_reject_bad_inputs(tmp_path):
    with pytest.raises(ValueError, match="curve 'a' has 2 values; expected 3"):
        plotting.plot_curves([1, 2, 3], {"a": [1.0, 2.0]}, tmp_path / "a.png", xlabel="x", ylabel="y")
    with pytest.raises(ValueError, match=r"bands \['b'\] name no curve"):
        plotting.plot_curves(
            [1, 2],
            {"a": [1.0, 2.0]},
            tmp_path / "b.png",
            xlabel="x",
            ylabel="y",
            bands={"b": ([0, 0], [1, 1])},
        )
