"""Demand-charge domain (being split by job; see core/demand/tracker.py)."""

from core.demand.tracker import *  # noqa: F403
