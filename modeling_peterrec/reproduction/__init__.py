"""Reproduction of the paper's experiments (Section 4, RQ1-RQ4), the transfer study (RQ5), the adapter study
(RQ6, Adapter4Rec) and items from their text (RQ7, TransRec) on MovieLens-1M: `peterrec reproduce`.

Every number in `results/` comes from one command. One job per module:

- `plan`: presets, tasks, research questions and the configurations each one needs;
- `runner`: pretraining, hyperparameter selection, the runs (resumed from disk) and the report's data;
- `folds`: the cross-validation folds inside the training users (the models' selection, the baselines' own);
- `selection`: the candidates of a preset's grid and the choice of the best mean held-out measure;
- `baselines`: the rule and classical baselines on the models' own rows and candidates;
- `report`: aggregation over seeds, markdown tables, learning curves and the JSON file;
- `investigation`: the validation-only study of learning rates and PeterRec's options;
- `cli`: the `ReproduceArguments` dataclass and the `peterrec reproduce` entry point.
"""

from ..reporting import markdown_table, mean_curve
from .baselines import (
    BASELINES,
    baseline_rows,
    item_popularity,
    majority_label,
    popularity_metrics,
)
from .cli import ReproduceArguments, main
from .folds import fold_indices, user_folds
from .investigation import investigate
from .plan import (
    DEFAULT_RESEARCH_QUESTIONS,
    PRESETS,
    SOURCE_BACKBONES,
    Configuration,
    Preset,
    research_plan,
    unique_configurations,
)
from .report import Aggregate, render_report, write_plots
from .runner import Reproduction, derived_task, reproduce, run_plan, validation_curve
from .selection import Selection, candidates, choose_candidate

__all__ = [
    "BASELINES",
    "DEFAULT_RESEARCH_QUESTIONS",
    "PRESETS",
    "SOURCE_BACKBONES",
    "Aggregate",
    "Configuration",
    "Preset",
    "ReproduceArguments",
    "Reproduction",
    "Selection",
    "baseline_rows",
    "candidates",
    "choose_candidate",
    "derived_task",
    "fold_indices",
    "investigate",
    "item_popularity",
    "main",
    "majority_label",
    "markdown_table",
    "mean_curve",
    "popularity_metrics",
    "render_report",
    "reproduce",
    "research_plan",
    "run_plan",
    "unique_configurations",
    "user_folds",
    "validation_curve",
    "write_plots",
]
