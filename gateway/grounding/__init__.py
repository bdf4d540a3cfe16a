"""Post-hoc grounding checks: does an answer rest on the documents it was given?"""

from gateway.grounding.checker import Checker, ClaimResult, GroundingResult

__all__ = ["Checker", "ClaimResult", "GroundingResult"]
