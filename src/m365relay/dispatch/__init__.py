"""Dispatch: moving mail from the outbox to Graph within Microsoft's limits, with retries and pauses."""

from __future__ import annotations

from .budget import BudgetLimits, Budgets
from .gate import AdvisoryGate, LocalGate
from .retry import RetryDecision, RetryPolicy
from .worker import Dispatcher, DispatchStats

__all__ = [
    "AdvisoryGate",
    "BudgetLimits",
    "Budgets",
    "DispatchStats",
    "Dispatcher",
    "LocalGate",
    "RetryDecision",
    "RetryPolicy",
]
