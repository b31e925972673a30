# The HTML report: one self-contained page (figures inlined, no external fetch) of every
# model's training, blacklist, circuits, faithfulness, agreement, steering and timing. It reads
# exactly the files report_manifest() lists; they are its inputs. Every path is taken from the
# rule that writes it (its named output or benchmark, filled with the job's wildcards), so a
# renamed output cannot leave the report reading a stale path. Sections of stages whose rules
# are not in the workflow (steering, CAA vs circuit) are left out rather than failing the DAG.

from snakemake.io import apply_wildcards


def produces(prefix):
    """Whether some rule of the workflow writes outputs under `prefix`."""
    return any(str(f).startswith(prefix) for r in workflow.rules for f in r.output)



def output_of(rule_name, name, **wildcards):
    """The path of `rule_name`'s output `name` for one job (as the rule declares it)."""
    return apply_wildcards(str(getattr(getattr(rules, rule_name).output, name)), wildcards)


def benchmark_of(rule_name, **wildcards):
    """The job's entry of the report's timing table: the rule's `benchmark:` file, or None
    when the rule declares none."""
    pattern = getattr(rules, rule_name).rule.benchmark
    if pattern is None:
        return None
    job = "/".join(str(v) for v in wildcards.values()) or rule_name
    return {"rule": rule_name, "job": job, "path": apply_wildcards(str(pattern), wildcards)}


def report_manifest():
    """`circuitlab.report.manifest.ReportManifest` as a dict: every artifact the report shows."""
    jobs = [("datasets", {"task": t}) for t in DATASETS]
    models = {}
    for m in MODELS:
        native = m in NATIVE_MODELS
        entry = {} if native else {"backend": "transformer_lens"}
        if m in TOY_MODELS:
            entry["training"] = {
                "metrics": output_of("train_toy_model", "metrics", toy=m),
                "curve": output_of("train_toy_model", "plot", toy=m),
            }
            jobs.append(("train_toy_model", {"toy": m}))
        else:
            jobs.append(("model_ref", {"hub": m}))
        entry["evaluation"] = {
            t: apply_wildcards(str(rules.evaluate_model.output[0]), {"model": m, "task": t})
            for t in DATASETS
        }
        entry["blacklist"] = output_of("blacklist", "blacklist", model=m) if native else None
        entry["lrp"] = {}
        if native:
            for t in DATASETS:
                wc = {"model": m, "task": t}
                entry["lrp"][t] = {
                    "circuit": output_of("lrp_circuit", "circuit", **wc),
                    "metrics": output_of("lrp_circuit", "metrics", **wc),
                    "neurons_plot": output_of("lrp_circuit", "plot", **wc),
                    "faithfulness": output_of("lrp_faithfulness", "metrics", **wc),
                    "faithfulness_plot": output_of("lrp_faithfulness", "plot", **wc),
                }
        entry["acdc"] = {}
        for t in EDGE_TASKS:
            wc = {"model": m, "task": t}
            dots = [apply_wildcards(str(d), wc) for d in rules.acdc_evaluate.output.dots]
            entry["acdc"][t] = {
                "circuits": {k: output_of("acdc_circuit", "circuit", **wc, method=k) for k in ACDC_METHODS},
                "dots": dict(zip(ACDC_METHODS, dots, strict=True)),
                "evaluation": output_of("acdc_evaluate", "metrics", **wc),
                "plot": output_of("acdc_evaluate", "plot", **wc),
            }
        entry["contrastive"] = {
            b: output_of("contrastive_circuit", "circuit", model=m, behaviour=b)
            for b in CFG.behaviour_names()
            if native
        }
        for t in DATASETS:
            jobs += [
                ("check_dataset", {"model": m, "task": t}),
                ("evaluate_model", {"model": m, "task": t}),
            ]
            if native:
                jobs += [
                    (name, {"model": m, "task": t})
                    for name in ("lrp_attribution", "lrp_circuit", "lrp_faithfulness")
                ]
        if native:
            jobs.append(("blacklist", {"model": m}))
        for t in EDGE_TASKS:
            wc = {"model": m, "task": t}
            jobs += [("acdc_circuit", {**wc, "method": k}) for k in ACDC_METHODS]
            jobs.append(("acdc_evaluate", wc))
        if native:
            jobs += [
                ("contrastive_circuit", {"model": m, "behaviour": b})
                for b in CFG.behaviour_names()
            ]
        if produces("data/steering/") and produces("data/caa/"):
            names = {t: ["lrp"] for t in EDGE_TASKS} if native else {}
            names |= {b: behaviour_methods(m) for b in CFG.behaviour_names()}
            entry["steering"] = {}
            for name, methods in names.items():
                results, plots = {}, []
                for k in methods:
                    if k == "caa":
                        job = ("caa_steering", {"model": m, "behaviour": name})
                    else:
                        job = ("steering", {"model": m, "task": name, "circuit": k})
                    results[k] = output_of(job[0], "report", **job[1])
                    plots.append(output_of(job[0], "plot", **job[1]))
                    jobs.append(job)
                entry["steering"][name] = {"results": results, "plots": plots}
            if steering_report_paths(m):
                entry["steering_summary"] = {
                    "metrics": output_of("steering_summary", "metrics", model=m),
                    "plot": output_of("steering_summary", "plot", model=m),
                }
            jobs += [("caa", {"model": m, "behaviour": b}) for b in CFG.behaviour_names()]
        if native and produces("data/compare/") and produces("data/caa/"):
            entry["compare"] = {}
            for b in CFG.behaviour_names():
                wc = {"model": m, "behaviour": b}
                entry["compare"][b] = {
                    "result": output_of("compare", "report", **wc),
                    "plots": [output_of("compare", "pareto", **wc), output_of("compare", "overlap", **wc)],
                }
                jobs.append(("compare", wc))
        models[m] = entry
    benchmarks = [b for b in (benchmark_of(name, **wc) for name, wc in jobs) if b is not None]
    return {"models": models, "benchmarks": benchmarks}


def report_inputs(wildcards):
    from circuitlab.report.manifest import manifest_paths, parse_manifest

    return manifest_paths(parse_manifest(report_manifest(), "report_manifest()"))




rule report:
    input:
        report_inputs,
    output:
        report(
            "data/report/index.html",
            caption="../report/index.rst",
            category="1. Report",
            labels={"page": "circuitlab report"},
        ),
    params:
        code=code("report"),
        manifest=lambda wildcards: json_arg(report_manifest()),
    log:
        "logs/report/index.log",
    shell:
        "circuitlab report --manifest {params.manifest} --out {output} > {log} 2>&1"
