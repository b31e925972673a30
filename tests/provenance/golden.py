"""The golden fingerprint: a short training of the default architecture, then one LRP
attribution pass and one edge-attribution (EAP) pass with patched forwards on it, each reduced
to a sha256. Run as a script (a fresh process, so the numerics pins are set before torch is
imported); prints one JSON object. `test_golden.py` compares it with the committed values.

    python tests/provenance/golden.py [--steps 100] [--threads N]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import tempfile
import time
from pathlib import Path

from circuitlab.provenance import numerics

ROOT = Path(__file__).resolve().parents[2]


def sha(*tensors) -> str:  # type: ignore[no-untyped-def]
    h = hashlib.sha256()
    for t in tensors:
        h.update(t.detach().contiguous().cpu().numpy().tobytes())
    return h.hexdigest()


def short_training(steps: int, *, threads: int | None = None, warmup: int = 10):  # type: ignore[no-untyped-def]
    """The default architecture and optimiser, ``steps`` steps on a small corpus (300 sentences
    per family): (config, model, tokenizer, train result, seconds). Imports torch: set the
    pins first (`main` does; `tests/benchmarks/bench_numerics.py` sets its own variants)."""
    import yaml

    from circuitlab.config import load_config
    from circuitlab.models.toy import build_toy_model
    from circuitlab.models.toy.settings import ToyModelConfig

    cfg = load_config(yaml.safe_load((ROOT / "config" / "config.yaml").read_text()))
    default = cfg.models["toy"]
    assert isinstance(default, ToyModelConfig)
    training = {"steps": steps, "warmup_steps": warmup}
    if threads is not None:
        training["threads"] = threads
    toy = default.model_copy(
        update={
            "training": default.training.model_copy(update=training),
            "corpus": default.corpus.model_copy(
                update={"sentences_per_family": 300, "filler_sentences": 300}
            ),
        }
    )
    start = time.perf_counter()
    model, tokenizer, result = build_toy_model(toy, cfg.corpus_params(), cfg.seed, progress=False)
    return cfg, model, tokenizer, result, time.perf_counter() - start


def golden(steps: int, threads: int | None = None) -> dict[str, object]:
    import torch

    from circuitlab.acdc.backend import patchable
    from circuitlab.acdc.eap import EAPConfig, edge_attribution
    from circuitlab.acdc.metrics import get_metric
    from circuitlab.acdc.patch import evaluate_masks, prepare_rows
    from circuitlab.lrp.attribution import attribute_lrp
    from circuitlab.models.loading import load_model
    from circuitlab.tasks import build_rows

    cfg, model, tokenizer, result, seconds = short_training(steps, threads=threads)
    weights = sha(*(v for _, v in sorted(model.state_dict().items())))
    with tempfile.TemporaryDirectory() as tmp:  # through the pipeline's loading path
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        lm = load_model(Path(tmp))
    rows = [
        r
        for r in build_rows("capitals", cfg.dataset_params("capitals"), cfg.seed)
        if r.split == "train"
    ][:8]
    attr, _ = attribute_lrp(lm, rows, cfg.lrp, task="capitals", progress=False)
    ctx = prepare_rows(patchable(lm), rows[:4], "resample")
    eap = edge_attribution(ctx, EAPConfig(metric="logit_diff"))
    gen = torch.Generator().manual_seed(0)
    masks = torch.rand(3, len(ctx.graph.edges), generator=gen) < 0.1
    patched = evaluate_masks(ctx, masks, get_metric("kl"))
    return {
        "steps": steps,
        "final_loss": result.losses[-1],
        "weights": weights,
        "lrp_attribution": sha(attr.scores, attr.metric),
        "eap_scores": sha(torch.tensor(eap.scores, dtype=torch.float64)),
        "patched_kl": sha(patched.double()),
        "seconds_training": round(seconds, 2),
        "environment": numerics.environment(),
    }


def main() -> None:
    numerics.apply()  # before torch is imported
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--threads", type=int, default=None, help="training's torch threads")
    args = parser.parse_args()
    json.dump(golden(args.steps, args.threads), sys.stdout, indent=2)
    print()


if __name__ == "__main__":
    main()
