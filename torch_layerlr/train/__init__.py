"""Training comparisons on image data: the strategy zoo (:mod:`~torch_layerlr.train.zoo`), one run
(:mod:`~torch_layerlr.train.loop`), a whole comparison (:mod:`~torch_layerlr.train.comparison`) and its report."""

from torch_layerlr.train.comparison import DATASETS, DEFAULT_TARGETS, compare, load_dataset, resolve_dataset
from torch_layerlr.train.loop import RunSpec, evaluate, train_run
from torch_layerlr.train.zoo import STRATEGIES, Setup, Strategy, parse_strategies, strategy

__all__ = ["DATASETS", "DEFAULT_TARGETS", "RunSpec", "STRATEGIES", "Setup", "Strategy", "compare", "evaluate",
           "load_dataset", "parse_strategies", "resolve_dataset", "strategy", "train_run"]
