"""Shared rendering: plots leave the caller's matplotlib backend alone and name the extra when matplotlib is missing."""

import sys

import pytest

from modeling_peterrec.reporting import plot_curves


def test_plot_writes_a_png_without_switching_the_backend(tmp_path):
    matplotlib = pytest.importorskip("matplotlib")
    backend = matplotlib.get_backend()
    plot_curves(
        {"GenEst": {"PeterRec": [[(1, 0.5), (2, 0.6)]]}}, tmp_path / "curves.png", {"GenEst": "accuracy"}
    )
    assert (tmp_path / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert matplotlib.get_backend() == backend


def test_missing_matplotlib_names_the_plots_extra(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
    with pytest.raises(ImportError, match=r"peterrec\[plots\]"):
        plot_curves({"GenEst": {}}, tmp_path / "curves.png", {"GenEst": "accuracy"})
