"""Order of the gallery examples: the quickstart first, then from simple to specialised."""

ORDER = [
    "plot_quickstart.py",
    "plot_imputation.py",
    "plot_grid_search.py",
    "plot_missing_rate.py",
    "plot_latent_space.py",
    "plot_training_curves.py",
    "plot_anchor_shift.py",
]


class ExampleOrder:
    """Sort key for sphinx-gallery's ``within_subsection_order``: listed files first, the rest by name."""

    def __init__(self, src_dir):
        self.src_dir = src_dir

    def __call__(self, filename):
        rank = ORDER.index(filename) if filename in ORDER else len(ORDER)
        return (rank, filename)

    def __repr__(self):
        return f"<{self.__class__.__name__}>"
