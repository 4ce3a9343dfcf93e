"""The session plot (pipeline/plots.py): long lines are thinned to a point budget that keeps
their extremes; short ones are drawn as they are."""
import numpy as np

from facebot.pipeline.plots import min_max_points


def test_plot_lines_keep_their_extremes_within_the_point_budget():
    x = np.arange(100_000) / 100.0
    y = np.sin(x) + (np.arange(100_000) == 54_321) * 5.0
    px, py = min_max_points(x, y, max_points=1000)
    assert px.shape[0] <= 1000 and np.all(np.diff(px) >= 0)
    assert py.max() == y.max() and py.min() == y.min()


def test_short_lines_are_drawn_as_they_are():
    x = np.arange(1000) / 100.0
    y = np.cos(x)
    px, py = min_max_points(x, y, max_points=1000)
    assert np.array_equal(px, x) and np.array_equal(py, y)
