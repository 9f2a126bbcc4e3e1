"""``check-config``: everything ``run`` would trip on, found in one pass and reported at once.

The config itself (pydantic already lists each of its errors), then the QC protocol file and
the metrics it names, the triage models, TLS files, the state directory and onnxruntime. Each
problem is one line starting with its YAML path.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable

import numpy as np

from agent.config import AgentConfig, SaltError, read_salt
from agent.errors import ConfigError
from agent.monitor.preflight import startup_problems
from agent.qc.protocols import Protocols, Threshold, load_protocols
from agent.triage.models import check_triage


def check_everything(cfg: AgentConfig, source: str) -> tuple[list[str], list[str]]:
    """(lines about what is fine, problems); the config must have parsed already."""
    info: list[str] = []
    problems = startup_problems(cfg, for_run=False)
    problems += protocol_problems(cfg)
    problems += salt_problems(cfg)
    try:
        info += check_triage(cfg, source)
    except ConfigError as exc:
        problems += exc.problems
    return info, problems


def salt_problems(cfg: AgentConfig) -> list[str]:
    """Each de-identifying destination's salt file must hold a key: without it, nothing goes
    there (the sender waits rather than send identities)."""
    found = []
    for i, dest in enumerate(cfg.forward.destinations):
        deid = getattr(dest, "deidentify", None)
        if deid is None:
            continue
        try:
            read_salt(deid.salt_file)
        except SaltError as exc:
            found.append(f"forward.destinations[{i}].deidentify.salt_file {deid.salt_file}: {exc}")
    return found


def protocol_problems(cfg: AgentConfig) -> list[str]:
    where = f"qc.protocols {cfg.qc.protocols or '<shipped qc-protocols.yaml>'}"
    try:
        protocols = load_protocols(cfg.qc.protocols)
    except ConfigError as exc:
        return [f"{where}: {p}" for p in exc.problems]
    return [f"{where}: {p}" for p in unknown_metrics(protocols)]


def unknown_metrics(protocols: Protocols) -> list[str]:
    """Thresholds on a metric the modality's QC never measures would silently never fire."""
    known = known_metrics()
    everything = set().union(*known.values())
    found: list[str] = []
    for key, thresholds in protocols.defaults.items():
        names = known.get(key, everything)
        found += _unknown(f"defaults.{key}", thresholds.items(), names)
    for i, proto in enumerate(protocols.protocols):
        matching = [m for m in known if re.fullmatch(proto.match.modality, m, re.IGNORECASE)]
        names = set().union(*(known[m] for m in matching)) if matching else everything
        found += _unknown(f"protocols[{i}].metrics", proto.metrics.items(), names)
    return found


def _unknown(where: str, items: Iterable[tuple[str, Threshold]], names: set[str]) -> list[str]:
    out = []
    for entry, threshold in items:
        metric = threshold.metric or entry
        if metric not in names:
            key = f"{where}.{entry}.metric" if threshold.metric else f"{where}.{entry}"
            out.append(f"{key}: unknown metric {metric!r} (known: {', '.join(sorted(names))})")
    return out


@functools.cache
def known_metrics() -> dict[str, set[str]]:
    """The metric names QC produces, per modality, asked of the kernels themselves on a small
    synthetic image, so this list cannot drift from what kernels/qc computes."""
    from kernels.qc import ct_metrics, dx_metrics, mr_metrics

    yy, xx = np.mgrid[:64, :64]
    disc = ((yy - 32) ** 2 + (xx - 32) ** 2 < 20**2).astype(np.float32)
    return {
        "CT": set(ct_metrics(np.where(disc > 0, 40.0, -1000.0).astype(np.float32), 0.5)),
        "MR": set(mr_metrics(disc * 100.0 + 1.0, 0)),
        "DX": set(dx_metrics(disc * 1000.0 + 10.0, {})),
    }
