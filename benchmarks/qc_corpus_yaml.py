"""Render config/qc-protocols.yaml from fitted thresholds (schema scanner-agent.qc-protocols/1)."""

from __future__ import annotations

import copy

import yaml

from benchmarks.qc_corpus_gen import ENTRY, PRIMARY

# Metrics that may warn but never hold a series (none at present).
WARN_ONLY: set[str] = set()


def render_yaml(thr: dict[str, dict[str, dict[str, float]]], comment: list[str]) -> str:
    defaults: dict[str, dict[str, dict[str, object]]] = {}
    for mod, arts in PRIMARY.items():
        defaults[mod] = {}
        for art, (metric, direction) in arts.items():
            name = ENTRY.get((mod, art), metric)
            entry: dict[str, object] = {"metric": metric} if name != metric else {}
            entry.update({"direction": direction, **thr[mod][art]})
            if name in WARN_ONLY:
                entry["fail"] = None
            defaults[mod][name] = entry
    doc = {
        "schema": "scanner-agent.qc-protocols/1",
        "generated_by": "benchmarks/eval_qc.py (fit corpus; held-out scores below); validate locally",
        "defaults": defaults,
        "protocols": [
            {
                "name": "head-ct",
                "match": {
                    "modality": "CT",
                    "body_part": "HEAD|BRAIN",
                    "series_description": "(?i).*",
                },
                "metrics": copy.deepcopy(defaults["CT"]),
            },
            {
                "name": "chest-cr-dx",
                "match": {
                    "modality": "CR|DX",
                    "body_part": "CHEST",
                    "series_description": "(?i).*",
                },
                "metrics": copy.deepcopy(defaults["DX"]),
            },
        ],
    }
    head = "".join(f"# {line}\n" if line else "#\n" for line in comment)
    return head + yaml.safe_dump(doc, sort_keys=False)
