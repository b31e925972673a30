"""A planted ground truth: a model whose edge circuit is known by construction.

`build_planted` saves a random Llama (grouped-query attention) in which every attention head
and every MLP *outside* the chosen circuit has its output projection set to zero (the head's
columns of ``o_proj``, the MLP's ``down_proj``): their outputs are exactly zero on every input,
so nothing they read or write can change the logits. Only the chosen components carry signal.

**The true edge set** (`planted_edges`) is every edge of the graph between planted nodes:

* sources — ``Resid Start``, each planted head ``A{l}.{h}``, each planted ``MLP {l}``;
* destinations — each planted head's ``A{l}.{h}.Q``, the K and V inputs ``A{l}.{g}.K|V`` of the
  KV head ``g = h // (n_heads / n_kv_heads)`` it reads, each planted ``MLP {l}`` input and
  ``Resid End``.

Every other edge has exactly zero effect under any ablation (its source outputs zero, or its
destination's output is multiplied by zero). Every true edge has an effect for generic random
weights, as long as its source's ablated value differs from its clean value: with ``zero``
ablation always; with ``resample`` only where the corrupt prompt differs from the clean one at
the positions the destination reads, which is why `planted_rows` changes *every* position (a
corrupt prompt that kept the last token would leave ``Resid Start -> A{L-1}.{h}.Q`` unseen:
the last block's queries matter only at the answer position). Weights are drawn with ``init_std``
0.2 (ten times HF's default): then every true edge alone moves KL(clean ‖ patched) by at least
~2·10⁻⁴, far above ACDC's smallest τ (10⁻⁵). At HF's 0.02 the same edges move it by ~10⁻⁷ —
below every τ, so ACDC cannot see them (BENCHMARKS.md reports both).

`planted_aucs` runs the edge-circuit methods (`circuitlab.acdc.discover.METHODS`) on the planted
model and reports each one's ROC AUC of its edge scores against the true set (``inf`` scores
rank above every finite one). Head pruning scores edges by their source head, so it cannot
separate a planted head's edges into planted and non-planted destinations; its head-level AUC
(|Δmetric| per head against the planted heads) is reported beside it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from sklearn.metrics import roc_auc_score
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from circuitlab.acdc.artifact import CircuitArtifact
from circuitlab.acdc.graph import RESID_END, RESID_START, Graph
from circuitlab.acdc.settings import ACDC_METHODS, AcdcConfig
from circuitlab.errors import ConfigError
from circuitlab.models.loading import LoadedModel, load_model
from circuitlab.types import Split, TaskRow

#: word tokens ``w0 … w{n-1}`` have ids ``2 …``; 0 and 1 are ``<unk>`` and ``<eos>``
FIRST_WORD_ID = 2


@dataclass(frozen=True)
class PlantedSpec:
    """The planted model: sizes, the circuit's heads ``(layer, head)`` and MLP layers, the
    weight scale and the seed. The default circuit spans all three layers and shares KV head 0
    of layer 0 with a head outside it (so K/V edges of a shared KV head are in the circuit)."""

    n_layers: int = 3
    n_heads: int = 4
    n_kv_heads: int = 2
    d_model: int = 32
    d_mlp: int = 64
    n_words: int = 62
    heads: tuple[tuple[int, int], ...] = ((0, 1), (2, 3))
    mlps: tuple[int, ...] = (1,)
    init_std: float = 0.2
    seed: int = 0

    def __post_init__(self) -> None:
        if self.n_layers < 1 or self.n_heads < 1 or self.n_kv_heads < 1:
            raise ConfigError("a planted model needs ≥ 1 layer, head and KV head")
        if self.n_heads % self.n_kv_heads:
            raise ConfigError(
                f"planted n_heads ({self.n_heads}) must be a multiple of n_kv_heads "
                f"({self.n_kv_heads})"
            )
        if self.d_model % self.n_heads or (self.d_model // self.n_heads) % 2:
            raise ConfigError(
                f"planted d_model ({self.d_model}) must split into {self.n_heads} heads of an "
                "even size (rotary embeddings)"
            )
        bad_heads = [
            h for h in self.heads if not (0 <= h[0] < self.n_layers and 0 <= h[1] < self.n_heads)
        ]
        bad_mlps = [m for m in self.mlps if not 0 <= m < self.n_layers]
        if bad_heads or bad_mlps:
            raise ConfigError(
                f"planted heads {bad_heads} / MLPs {bad_mlps} are outside a model of "
                f"{self.n_layers} layers × {self.n_heads} heads"
            )
        if not self.heads and not self.mlps:
            raise ConfigError("a planted circuit needs at least one head or MLP")
        if not (math.isfinite(self.init_std) and self.init_std > 0):
            raise ConfigError(f"planted init_std must be positive and finite, got {self.init_std}")
        if self.n_words < 4:
            raise ConfigError("a planted model needs at least 4 words")

    @property
    def vocab_size(self) -> int:
        return self.n_words + FIRST_WORD_ID

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_heads

    def kv_head(self, head: int) -> int:
        return head // (self.n_heads // self.n_kv_heads)


def build_planted(path: Path, spec: PlantedSpec | None = None) -> LoadedModel:
    """Save the planted model (`save_pretrained`) and a word-level tokenizer under ``path``
    and load them back through `load_model`, the path every stage uses."""
    spec = spec or PlantedSpec()
    torch.manual_seed(spec.seed)
    config = LlamaConfig(
        vocab_size=spec.vocab_size,
        hidden_size=spec.d_model,
        intermediate_size=spec.d_mlp,
        num_hidden_layers=spec.n_layers,
        num_attention_heads=spec.n_heads,
        num_key_value_heads=spec.n_kv_heads,
        max_position_embeddings=128,
        initializer_range=spec.init_std,
        tie_word_embeddings=False,
        bos_token_id=1,
        eos_token_id=1,
        pad_token_id=1,
    )
    model = LlamaForCausalLM(config)
    planted_heads, planted_mlps = set(spec.heads), set(spec.mlps)
    hd = spec.head_dim
    with torch.no_grad():
        for layer, block in enumerate(model.model.layers):
            for head in range(spec.n_heads):
                if (layer, head) not in planted_heads:
                    block.self_attn.o_proj.weight[:, head * hd : (head + 1) * hd] = 0.0
            if layer not in planted_mlps:
                block.mlp.down_proj.weight.zero_()
    path = Path(path)
    model.save_pretrained(path)
    _save_tokenizer(path, spec.n_words)
    return load_model(path)


def _save_tokenizer(path: Path, n_words: int) -> None:
    vocab = {"<unk>": 0, "<eos>": 1, **{f"w{i}": i + FIRST_WORD_ID for i in range(n_words)}}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    PreTrainedTokenizerFast(
        tokenizer_object=tok, unk_token="<unk>", eos_token="<eos>", pad_token="<eos>"
    ).save_pretrained(path)


def planted_nodes(spec: PlantedSpec) -> tuple[frozenset[str], frozenset[str]]:
    """(source names, destination names) of the planted circuit (module doc)."""
    sources = {RESID_START}
    dests = {RESID_END}
    for layer, head in spec.heads:
        sources.add(f"A{layer}.{head}")
        g = spec.kv_head(head)
        dests.update({f"A{layer}.{head}.Q", f"A{layer}.{g}.K", f"A{layer}.{g}.V"})
    for layer in spec.mlps:
        sources.add(f"MLP {layer}")
        dests.add(f"MLP {layer}")
    return frozenset(sources), frozenset(dests)


def planted_edges(graph: Graph, spec: PlantedSpec) -> frozenset[str]:
    """The true edge set: every edge of ``graph`` from a planted source to a planted
    destination. ConfigError if the graph is not the planted model's."""
    if (graph.n_layers, graph.n_heads, graph.n_kv_heads) != (
        spec.n_layers,
        spec.n_heads,
        spec.n_kv_heads,
    ):
        raise ConfigError(
            f"the graph ({graph.n_layers} layers, {graph.n_heads} heads, {graph.n_kv_heads} KV "
            "heads) is not the planted model's"
        )
    sources, dests = planted_nodes(spec)
    return frozenset(
        graph.edges[i]
        for i, (s, d) in enumerate(
            zip(graph.edge_src.tolist(), graph.edge_dst.tolist(), strict=True)
        )
        if graph.sources[s] in sources and graph.dests[d] in dests
    )


def planted_rows(
    lm: LoadedModel, n: int = 16, length: int = 8, seed: int = 0, split: Split = "train"
) -> list[TaskRow]:
    """``n`` random word prompts of ``length`` tokens, each with a corrupt prompt that differs
    at *every* position (module doc). The target is the planted model's own top word after the
    clean prompt, the counterfactual its top word after the corrupt prompt (the clean run's
    second word when both agree), so logit-difference metrics measure the planted path."""
    if n < 1 or length < 1:
        raise ConfigError(f"planted rows need n ≥ 1 and length ≥ 1, got n={n}, length={length}")
    n_words = lm.model.config.vocab_size - FIRST_WORD_ID
    g = torch.Generator().manual_seed(seed)
    clean = torch.randint(0, n_words, (n, length), generator=g)
    shift = torch.randint(1, n_words, (n, length), generator=g)
    corrupt = (clean + shift) % n_words  # differs everywhere
    with torch.no_grad():
        ids = torch.cat([clean, corrupt]).to(lm.device) + FIRST_WORD_ID
        logits = lm.model(input_ids=ids).logits[:, -1, FIRST_WORD_ID:].float().cpu()
    top2 = logits[:n].topk(2, dim=-1).indices
    corrupt_top = logits[n:].argmax(-1)
    rows = []
    for i in range(n):
        target = int(top2[i, 0])
        other = int(corrupt_top[i]) if int(corrupt_top[i]) != target else int(top2[i, 1])
        rows.append(
            TaskRow(
                id=f"planted{i}",
                split=split,
                prompt=" ".join(f"w{w}" for w in clean[i].tolist()),
                corrupt_prompt=" ".join(f"w{w}" for w in corrupt[i].tolist()),
                target=f" w{target}",
                counterfactual=f" w{other}",
            )
        )
    return rows


def edge_auc(edges: Sequence[str], scores: Sequence[float], truth: frozenset[str]) -> float:
    """ROC AUC of edge scores (higher = more important) against the true edges; ``inf`` ranks
    above every finite score (ties count half). ConfigError for NaN scores, unknown true
    edges, or a truth that is empty or everything."""
    if len(edges) != len(scores):
        raise ConfigError(f"{len(edges)} edges but {len(scores)} scores")
    unknown = truth - set(edges)
    if unknown:
        raise ConfigError(f"true edges {sorted(unknown)[:3]} are not in the graph")
    labels = np.array([e in truth for e in edges])
    if labels.all() or not labels.any():
        raise ConfigError("an AUC needs both true and false edges")
    return float(roc_auc_score(labels, finite_ranks(scores)))


def finite_ranks(scores: Sequence[float]) -> np.ndarray:
    """Scores with ``+inf`` replaced by one more than the largest finite score (``-inf`` by one
    less than the smallest): the same order, acceptable to scikit-learn."""
    values = np.asarray(scores, dtype=np.float64)
    if np.isnan(values).any():
        raise ConfigError("edge scores contain NaN; an AUC needs comparable scores")
    finite = values[np.isfinite(values)]
    hi = float(finite.max()) + 1.0 if finite.size else 1.0
    lo = float(finite.min()) - 1.0 if finite.size else -1.0
    return np.where(np.isposinf(values), hi, np.where(np.isneginf(values), lo, values))


def head_auc(deltas: dict[str, float], spec: PlantedSpec) -> float:
    """Head pruning at its own resolution: ROC AUC of each head's |Δmetric| against the
    planted heads."""
    planted = {f"A{layer}.{head}" for layer, head in spec.heads}
    names = sorted(deltas)
    labels = np.array([n in planted for n in names])
    if labels.all() or not labels.any():
        raise ConfigError("a head AUC needs planted and non-planted heads")
    return float(roc_auc_score(labels, [abs(deltas[n]) for n in names]))


def planted_aucs(
    lm: LoadedModel,
    spec: PlantedSpec,
    rows: Sequence[TaskRow],
    cfg: AcdcConfig,
    methods: Sequence[str] = ACDC_METHODS,
) -> dict[str, dict[str, Any]]:
    """Per method, `score_artifact` of its run on the train rows with ``cfg`` (its ablation
    included) through `discover_artifact`."""
    from circuitlab.acdc.backend import patchable
    from circuitlab.acdc.discover import discover_artifact

    truth = planted_edges(patchable(lm).graph, spec)
    return {
        method: score_artifact(
            discover_artifact(lm, rows, cfg, method, model="planted", task="planted"),
            truth,
            spec,
            cfg.reference_tau,
        )
        for method in methods
    }


def score_artifact(
    art: CircuitArtifact, truth: frozenset[str], spec: PlantedSpec, reference_tau: float
) -> dict[str, Any]:
    """One method's figures against the planted truth: its edge-score ROC AUC (``auc``), the
    size of its reference circuit and how many of those edges are planted (``n_kept``,
    ``kept_true``), the graph's and the truth's sizes, its cost (``n_forward``, ``seconds``);
    head pruning adds ``head_auc`` and ``kept_heads``."""
    ref = art.reference_circuit(reference_tau)
    entry: dict[str, Any] = {
        "auc": edge_auc(art.edges, art.scores, truth),
        "n_edges": len(art.edges),
        "n_true": len(truth),
        "n_kept": len(ref.kept),
        "kept_true": len(set(ref.kept) & truth),
        "n_forward": art.n_forward,
        "seconds": art.seconds,
    }
    if art.score_kind == "head_delta":
        entry["head_auc"] = head_auc(_head_deltas(art), spec)
        entry["kept_heads"] = art.details.get("kept_heads", "")
    return entry


def _head_deltas(art: CircuitArtifact) -> dict[str, float]:
    """|Δmetric| per head from a head-pruning artifact's edge scores (an edge's score is its
    source head's |Δ|)."""
    heads: dict[str, float] = {}
    for edge, score in zip(art.edges, art.scores, strict=True):
        src = edge.split("->", 1)[0]
        if src.startswith("A") and math.isfinite(score):
            heads[src] = score
    return heads
