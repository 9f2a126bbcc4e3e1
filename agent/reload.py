"""SIGHUP (``systemctl reload``): read the config again and apply what can change while the
agent runs; associations in progress are not touched.

Applied at once: ``forward.destinations`` (added, removed and changed ones; see
agent/forward/pool.py), ``routes``, ``default_to``, ``hold_timeout_s``, ``alert_after_s`` and
``retry``; the QC protocols (``qc.protocols``, thresholds included); the calling-AE allow-list;
each triage model's ``mode`` (active or shadow). A change anywhere else (the listener,
storage, the broker, the models themselves, which load into ONNX Runtime at start) is
reported as needing a restart and left as it was. A config that does not load, or QC
protocols that do not, keep the old ones running, and a ``system`` alert names every error.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from agent.config import AgentConfig, ForwardConfig, TriageConfig
from agent.errors import ConfigError
from agent.forward.pool import Changes
from agent.qc.protocols import Protocols, load_protocols

log = logging.getLogger(__name__)

# top-level keys and forward.* keys that reload applies; every other change needs a restart
_LIVE_FORWARD = {"destinations", "routes", "default_to", "hold_timeout_s", "alert_after_s", "retry"}
_LIVE_TOP = {"forward", "qc", "dicom", "logging", "triage"}
_LIVE_DICOM = {"allowed_calling_aets"}
_LIVE_TRIAGE = {"models"}


@dataclass
class Target:
    """What reload may change in the running agent."""

    cfg: AgentConfig
    set_forward: Callable[[Any], None]  # the release gate's and workers' ForwardConfig
    set_protocols: Callable[[Protocols | None], None]
    set_calling_aets: Callable[[list[str]], None]
    alert: Callable[[str, str], Awaitable[None]]  # (code, message): a system alert
    set_destinations: Callable[[AgentConfig], Changes]  # the forward workers follow them
    set_model_modes: Callable[[TriageConfig], list[str]]  # problems, or [] once applied


def restart_needed(old: AgentConfig, new: AgentConfig) -> list[str]:
    """The config paths that changed but only take effect after a restart."""
    a, b = old.model_dump(), new.model_dump()
    paths = [k for k in sorted(set(a) | set(b)) if k not in _LIVE_TOP and a.get(k) != b.get(k)]
    for section, live in (("forward", _LIVE_FORWARD), ("dicom", _LIVE_DICOM),
                          ("triage", _LIVE_TRIAGE)):  # fmt: skip
        sa, sb = a.get(section, {}), b.get(section, {})
        paths += [f"{section}.{k}" for k in sorted(set(sa) | set(sb))
                  if k not in live and sa.get(k) != sb.get(k)]  # fmt: skip
    if a["qc"]["enabled"] != b["qc"]["enabled"]:
        paths.append("qc.enabled")
    return paths


async def reload(target: Target, load: Callable[[], AgentConfig]) -> AgentConfig:
    """Apply a freshly loaded config to ``target``; returns the config now in force."""
    try:
        new = load()
    except ConfigError as exc:
        await _refuse(target, [f"{exc.source}: {p}" for p in exc.problems])
        return target.cfg
    protocols: Protocols | None = None
    if new.qc.enabled and target.cfg.qc.enabled:
        try:
            protocols = load_protocols(new.qc.protocols)
        except ConfigError as exc:
            await _refuse(target, [f"{exc.source}: {p}" for p in exc.problems])
            return target.cfg
    later = restart_needed(target.cfg, new)
    merged = target.cfg.forward.model_dump() | {
        k: v for k, v in new.forward.model_dump().items() if k in _LIVE_FORWARD
    }
    try:
        forward = ForwardConfig.model_validate(merged)
    except ValidationError as exc:
        await _refuse(target, [f"forward: {e['msg']}" for e in exc.errors()])
        return target.cfg
    triage = target.cfg.triage.model_copy(update={"models": new.triage.models})
    if problems := target.set_model_modes(triage):  # first: it applies all or nothing
        await _refuse(target, problems)
        return target.cfg
    target.set_forward(forward)
    if target.cfg.qc.enabled:
        target.set_protocols(protocols)
    target.set_calling_aets(list(new.dicom.allowed_calling_aets))
    applied = target.cfg.model_copy(
        update={"forward": forward, "qc": new.qc if target.cfg.qc.enabled else target.cfg.qc,
                "triage": triage, "dicom": target.cfg.dicom.model_copy(
                    update={"allowed_calling_aets": new.dicom.allowed_calling_aets})}
    )  # fmt: skip
    changes = target.set_destinations(applied)
    if changes.removed:
        await target.alert("config.destination-removed", _removed_note(changes.removed))
    log.info("config reloaded: %sroutes, hold and retry settings, QC protocols, model modes and "
             "the calling-AE allow-list applied%s",
             f"{changes.describe()}; " if changes else "",
             f"; needs a restart: {', '.join(later)}" if later else "")  # fmt: skip
    if later:
        await target.alert("config.restart-needed",
                           f"reloaded; these changes need a restart: {', '.join(later)}")  # fmt: skip
    target.cfg = applied
    return applied


def _removed_note(names: list[str]) -> str:
    return (f"destination(s) {', '.join(names)} removed by the reload; whatever was queued for "
            "them stays in the journal, undelivered and never purged, until they are "
            "configured again")  # fmt: skip


async def _refuse(target: Target, problems: list[str]) -> None:
    message = "reload refused, the running config is kept: " + "; ".join(problems)
    log.error("%s", message)
    await target.alert("config.reload-failed", message)
