"""Metrics of patched answer-position logits, one value per edge set.

Each metric is a plain function ``(logits [E, B, V], ctx) -> [E]`` reading the clean logits
and the answer tokens from the `PatchContext`; the registry `METRICS` maps names to them.
All are means over the B prompts and computed in float32.

* ``kl`` — KL(clean ‖ patched) of the next-token distributions (auto-circuit's
  ``multibatch_kl_div``: ``kl_div(patched_logprobs, clean_logprobs, log_target=True)`` summed
  and divided by B);
* ``mse`` — mean squared error of the logits against the clean logits (over B × V);
* ``logit_diff`` — logit of the target minus logit of the counterfactual;
* ``target_logit`` — logit of the target.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from circuitlab.errors import ConfigError
from circuitlab.stats import kl_divergence

if TYPE_CHECKING:
    from circuitlab.acdc.patch import PatchContext

MetricFn = Callable[[Tensor, "PatchContext"], Tensor]


def kl(logits: Tensor, ctx: PatchContext) -> Tensor:
    """KL(clean ‖ patched), mean over prompts."""
    patched = torch.log_softmax(logits.float(), dim=-1)
    clean = torch.log_softmax(ctx.clean_logits.float(), dim=-1)
    return kl_divergence(clean, patched).mean(-1)


def mse(logits: Tensor, ctx: PatchContext) -> Tensor:
    """Mean squared logit error against the clean run."""
    return (logits.float() - ctx.clean_logits.float()).pow(2).mean((-2, -1))


def _answer(logits: Tensor, tokens: Tensor) -> Tensor:
    index = tokens.to(logits.device).expand(*logits.shape[:-1])[..., None]
    return logits.float().gather(-1, index)[..., 0]


def logit_diff(logits: Tensor, ctx: PatchContext) -> Tensor:
    """Target logit minus counterfactual logit, mean over prompts."""
    batch = ctx.batch
    batch.require_answers("the logit_diff metric")
    return (_answer(logits, batch.target) - _answer(logits, batch.counterfactual)).mean(-1)


def target_logit(logits: Tensor, ctx: PatchContext) -> Tensor:
    """Target logit, mean over prompts."""
    ctx.batch.require_answers("the target_logit metric")
    return _answer(logits, ctx.batch.target).mean(-1)


METRICS: dict[str, MetricFn] = {
    "kl": kl,
    "mse": mse,
    "logit_diff": logit_diff,
    "target_logit": target_logit,
}


def get_metric(name: str) -> MetricFn:
    """The metric registered under ``name``; ConfigError listing the choices otherwise."""
    if name not in METRICS:
        raise ConfigError(f"unknown metric {name!r}; choose one of {sorted(METRICS)}")
    return METRICS[name]
