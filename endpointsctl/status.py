"""The ActivationEndpoints ``status``: the chosen activators, desired and actual N, and conditions.

Every condition type is always present, so ``kubectl wait --for=condition=X=false`` works:

- ``Ready``: True when at least one activator is published. False with reason ``NoEligibleActivators``,
  ``RevisionInvalid`` (the Revision's own settings cannot be read; the last published activators stay) or
  ``OutputConflict`` (an object we would write belongs to someone else).
- ``NotEnoughEligibleActivators``: True (Warning) when fewer activators are eligible than N.
- ``NoHighAvailability``: True (Warning) when a single activator serves the revision.
- ``InvalidSpec``: True (Error) when ``spec`` or the Revision's settings are invalid; a fallback is in use.
- ``InvalidConfiguration``: True (Error) when maxNodeSelection or config-autoscaler is invalid; a fallback is in use.
- ``EndpointsPublished``: False ``AddressesRejected`` when the server refused the Endpoints object (a 1.20 server
  refuses loopback addresses); the EndpointSlice is published regardless.

The status is a pure function of its inputs and the previous status (``lastTransitionTime`` moves only when a
condition's status does), so an unchanged revision produces an identical status and is not written.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from endpointsctl.inventory import ActivatorPod
from endpointsctl.sizing import Severity, Sizing, SizingCondition, SizingReason
from localsched import knative

Obj = dict[str, Any]

READY = "Ready"
NOT_ENOUGH = "NotEnoughEligibleActivators"
NO_HA = "NoHighAvailability"
INVALID_SPEC = "InvalidSpec"
INVALID_CONFIGURATION = "InvalidConfiguration"
ENDPOINTS_PUBLISHED = "EndpointsPublished"


@dataclass(frozen=True)
class Condition:
    type: str
    status: str  # "True", "False" or "Unknown"
    reason: str
    message: str = ""
    severity: str = ""  # "Warning" or "Error" for abnormal conditions that hold

    def to_dict(self, transition_time: str) -> Obj:
        return compact({"type": self.type, "status": self.status, "reason": self.reason, "message": self.message,
                        "severity": self.severity, "lastTransitionTime": transition_time})  # fmt: skip


def compact(obj: Obj) -> Obj:
    """Without empty-string fields: the server stores them as absent anyway (and the devcluster's API server turns
    ``""`` in custom resources into null, which a string schema then refuses), so an unchanged status compares
    equal to what the server holds."""
    return {key: value for key, value in obj.items() if value != ""}


@dataclass(frozen=True)
class Outcome:
    """What one reconcile decided and how publishing went."""

    generation: int
    algorithm: str
    chosen: Sequence[ActivatorPod]
    sizing: Sizing | None = None  # None when the revision could not be read
    revision_error: str | None = None
    spec_error: str | None = None
    autoscaler_error: str | None = None
    conflict: str | None = None  # an output object belongs to someone else
    endpoints_rejected: str | None = None  # the server's message
    previous_desired: int = 0


Reasons = Mapping[SizingReason, SizingCondition]


def conditions(outcome: Outcome) -> list[Condition]:
    reasons = {c.reason: c for c in outcome.sizing.conditions} if outcome.sizing else {}
    return [
        _ready(outcome),
        _flag(reasons, NOT_ENOUGH, SizingReason.NOT_ENOUGH_ELIGIBLE_ACTIVATORS, "EnoughEligibleActivators"),
        _flag(reasons, NO_HA, SizingReason.NO_HIGH_AVAILABILITY, "HighAvailability"),
        _invalid_spec(outcome, reasons),
        _invalid_configuration(outcome, reasons),
        _endpoints_published(outcome),
    ]


def _ready(outcome: Outcome) -> Condition:
    published = len(outcome.chosen)
    if outcome.revision_error:
        return Condition(READY, "False", "RevisionInvalid", outcome.revision_error)
    if outcome.conflict:
        return Condition(READY, "False", "OutputConflict", outcome.conflict)
    if published == 0:
        return Condition(READY, "False", "NoEligibleActivators", "no activator is eligible for this revision")
    return Condition(READY, "True", "Published", f"{published} activator(s) published in the EndpointSlice")


def _flag(reasons: Reasons, kind: str, reason: SizingReason, false_reason: str) -> Condition:
    """``kind`` is True, with the sizing's message, when sizing reported ``reason``; else False."""
    found = reasons.get(reason)
    if found is None:
        return Condition(kind, "False", false_reason)
    return Condition(kind, "True", str(reason), found.message, str(found.severity))


def _invalid_spec(outcome: Outcome, reasons: Reasons) -> Condition:
    if outcome.revision_error:
        return Condition(INVALID_SPEC, "True", "RevisionInvalid", outcome.revision_error, Severity.ERROR)
    if outcome.spec_error:
        return Condition(INVALID_SPEC, "True", str(SizingReason.INVALID_SPEC), outcome.spec_error, Severity.ERROR)
    return _flag(reasons, INVALID_SPEC, SizingReason.INVALID_SPEC, "SpecValid")


def _invalid_configuration(outcome: Outcome, reasons: Reasons) -> Condition:
    if outcome.autoscaler_error:
        return Condition(INVALID_CONFIGURATION, "True", str(SizingReason.INVALID_AUTOSCALER_CONFIG),
                         outcome.autoscaler_error, Severity.ERROR)  # fmt: skip
    for reason in (SizingReason.INVALID_MAX_NODE_SELECTION, SizingReason.INVALID_AUTOSCALER_CONFIG):
        if reason in reasons:
            found = reasons[reason]
            return Condition(INVALID_CONFIGURATION, "True", str(found.reason), found.message, Severity.ERROR)
    return Condition(INVALID_CONFIGURATION, "False", "ConfigurationValid")


def _endpoints_published(outcome: Outcome) -> Condition:
    if outcome.revision_error or outcome.conflict:
        return Condition(ENDPOINTS_PUBLISHED, "Unknown", "NotAttempted")
    if outcome.endpoints_rejected:
        return Condition(ENDPOINTS_PUBLISHED, "False", "AddressesRejected", outcome.endpoints_rejected,
                         Severity.WARNING)  # fmt: skip
    return Condition(ENDPOINTS_PUBLISHED, "True", "Published")


def status(name: str, outcome: Outcome, previous: Mapping[str, Any] | None, now: str) -> Obj:
    """The full status for ActivationEndpoints ``name``; ``previous`` is the status it has (or None)."""
    before = {
        c.get("type"): c
        for c in ((previous or {}).get("conditions") or [])
        if isinstance(c, Mapping) and isinstance(c.get("type"), str)
    }
    rendered = []
    for condition in conditions(outcome):
        old = before.get(condition.type)
        keep = old is not None and old.get("status") == condition.status and old.get("lastTransitionTime")
        rendered.append(condition.to_dict(str(old["lastTransitionTime"]) if keep and old else now))
    chosen = sorted(outcome.chosen, key=lambda a: a.name)
    sizing = outcome.sizing
    output = knative.activation_endpoints_name(name)
    activators = [
        compact({"name": a.name, "node": a.activator.node, "zone": a.activator.zone, "ip": a.activator.ip,
                 "ready": a.activator.ready})
        for a in chosen
    ]  # fmt: skip
    result = {
        "observedGeneration": outcome.generation,
        "algorithm": outcome.algorithm,
        "desiredActivators": sizing.desired if sizing else outcome.previous_desired,
        "actualActivators": len(chosen),
        "readyActivators": sum(1 for a in chosen if a.activator.ready),
        "sizingSource": str(sizing.source) if sizing else "",
        "endpointSlice": output,
        "service": output,
        "activators": activators,
        "conditions": rendered,
    }
    return compact(result)
