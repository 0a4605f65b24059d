"""Dispatch: moving mail from the outbox to Graph within Microsoft's limits, with retries and pauses."""

from __future__ import annotations

from .budget import BudgetLimits, Budgets
from .gate import Gate, LocalGate, SharedGate
from .retry import RetryDecision, RetryPolicy
from .worker import Dispatcher, DispatchStats

__all__ = [
    "BudgetLimits",
    "Budgets",
    "DispatchStats",
    "Dispatcher",
    "Gate",
    "LocalGate",
    "RetryDecision",
    "RetryPolicy",
    "SharedGate",
]
