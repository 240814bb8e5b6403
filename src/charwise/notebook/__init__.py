"""Runs in a notebook: `charwise.open_run(path)` gives a Run that shows itself as a card
(settings, best loss, a curve thumbnail) and draws its pictures inline.

    import charwise
    run = charwise.open_run("runs/x")       # or Run.from_result(charwise.train(...))
    run                                     # the card
    run.plot_curve()                        # matplotlib Figures: they render inline
    run.samples(temperatures=(0.5, 1.0, 1.5))
    run.per_char(); run.heatmap("Mr Bennet replied that he had not.")
    run.neurons(); run.show_unit(17)        # selective units; text coloured by one unit
    run.attention("ROMEO:")                 # a transformer: attention maps, layers x heads
    compare_curves([run, other], x="time"); compare_samples([run, other], prime="ROMEO:")

Every method returns an object (a Figure, or something with _repr_html_) rather than writing
files, and nothing here needs IPython: outside a notebook the objects print as text. It uses the
same computations as `charwise analyze` (analysis, neurons, plots), only drawn for a notebook.
"""
from __future__ import annotations

from .run import Run
from .views import HTML, Neurons, Samples, compare_curves, compare_samples, show_figures_inline

__all__ = ["Run", "open_run", "compare_curves", "compare_samples", "Samples", "Neurons", "HTML"]


def open_run(path, which: str = "best") -> Run:
    """A run directory made by `charwise train`, for a notebook (see Run)."""
    return Run(path, which)


show_figures_inline()
