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
from endpointsctl.sizing import Severity, Sizing, SizingReason
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


def conditions(outcome: Outcome) -> list[Condition]:
    sizing = outcome.sizing
    reasons = {c.reason: c for c in sizing.conditions} if sizing else {}
    published = len(outcome.chosen)
    slice_name = "the EndpointSlice"

    if outcome.revision_error:
        ready = Condition(READY, "False", "RevisionInvalid", outcome.revision_error)
    elif outcome.conflict:
        ready = Condition(READY, "False", "OutputConflict", outcome.conflict)
    elif published == 0:
        ready = Condition(READY, "False", "NoEligibleActivators", "no activator is eligible for this revision")
    else:
        ready = Condition(READY, "True", "Published", f"{published} activator(s) published in {slice_name}")

    def flag(kind: str, reason: SizingReason, false_reason: str) -> Condition:
        found = reasons.get(reason)
        if found is None:
            return Condition(kind, "False", false_reason)
        return Condition(kind, "True", str(reason), found.message, str(found.severity))

    invalid_spec: Condition
    if outcome.revision_error:
        invalid_spec = Condition(INVALID_SPEC, "True", "RevisionInvalid", outcome.revision_error, Severity.ERROR)
    elif outcome.spec_error:
        invalid_spec = Condition(INVALID_SPEC, "True", str(SizingReason.INVALID_SPEC), outcome.spec_error,
                                 Severity.ERROR)  # fmt: skip
    else:
        invalid_spec = flag(INVALID_SPEC, SizingReason.INVALID_SPEC, "SpecValid")

    config_problems = [reasons[r] for r in (SizingReason.INVALID_MAX_NODE_SELECTION,
                                            SizingReason.INVALID_AUTOSCALER_CONFIG) if r in reasons]  # fmt: skip
    if outcome.autoscaler_error:
        invalid_config = Condition(INVALID_CONFIGURATION, "True", str(SizingReason.INVALID_AUTOSCALER_CONFIG),
                                   outcome.autoscaler_error, Severity.ERROR)  # fmt: skip
    elif config_problems:
        first = config_problems[0]
        invalid_config = Condition(INVALID_CONFIGURATION, "True", str(first.reason), first.message, Severity.ERROR)
    else:
        invalid_config = Condition(INVALID_CONFIGURATION, "False", "ConfigurationValid")

    if outcome.revision_error or outcome.conflict:
        endpoints = Condition(ENDPOINTS_PUBLISHED, "Unknown", "NotAttempted")
    elif outcome.endpoints_rejected:
        endpoints = Condition(ENDPOINTS_PUBLISHED, "False", "AddressesRejected", outcome.endpoints_rejected,
                              Severity.WARNING)  # fmt: skip
    else:
        endpoints = Condition(ENDPOINTS_PUBLISHED, "True", "Published")

    return [
        ready,
        flag(NOT_ENOUGH, SizingReason.NOT_ENOUGH_ELIGIBLE_ACTIVATORS, "EnoughEligibleActivators"),
        flag(NO_HA, SizingReason.NO_HIGH_AVAILABILITY, "HighAvailability"),
        invalid_spec,
        invalid_config,
        endpoints,
    ]


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
