"""The routing policy: a strict YAML loader and a pure decision function (no I/O)."""

from gateway.catalog import Deployment
from gateway.policy.engine import RequestFacts, RoutePlan, decide
from gateway.policy.loader import PolicyError, load_policy, load_policy_text
from gateway.policy.model import Policy, Step

__all__ = [
    "Deployment",
    "Policy",
    "PolicyError",
    "RequestFacts",
    "RoutePlan",
    "Step",
    "decide",
    "load_policy",
    "load_policy_text",
]
