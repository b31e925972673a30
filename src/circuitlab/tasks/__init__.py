"""Task families: contrastive prompt datasets and the corpus sentences behind them.

Importing this package registers every family (`capitals`, `ioi`, `sva`, `induction` are
circuit-discovery tasks; `refusal`, `sentiment` are steering/CAA behaviours).
"""

from circuitlab.tasks import capitals, induction, ioi, refusal, sentiment, sva
from circuitlab.tasks.base import (
    REGISTRY,
    TaskFamily,
    TaskParams,
    build_rows,
    families,
    get_family,
    parse_rows,
)
from circuitlab.tasks.tokencheck import TokenCheckReport, check_for_tokenizer
from circuitlab.types import TaskRow

__all__ = [
    "REGISTRY",
    "TaskFamily",
    "TaskParams",
    "TaskRow",
    "TokenCheckReport",
    "build_rows",
    "capitals",
    "check_for_tokenizer",
    "families",
    "get_family",
    "induction",
    "ioi",
    "parse_rows",
    "refusal",
    "sentiment",
    "sva",
]
