"""Capsule client: run Python on warm Capsule workers.

    from capsule_client import Session
    with Session.create("demo") as s:
        print(s.run("6 * 7").repr)
"""
from .aio import AsyncSession
from .errors import (
    APIError,
    CapsuleError,
    ConfigError,
    ExecutionCancelled,
    ExecutionError,
    ExecutionTimedOut,
    GatewayUnreachable,
    InputNotHandled,
    InterpreterRestarted,
    OutputDropped,
    OutputLost,
    PoolExhausted,
    PoolNotFound,
    SessionFailed,
    SessionNotBound,
    SessionNotFound,
    SessionTimeout,
    TokenRefused,
    WorkerLost,
    WorkerUnreachable,
)
from ._base import TRANSACTIONS
from .events import Event, Result
from .session import Session

__version__ = "0.1.0"
#: `run(..., transaction=ROLLBACK_ON_ERROR)`: a failed run leaves the namespace as it was.
ROLLBACK_ON_ERROR = "rollbackOnError"
__all__ = [
    "APIError", "AsyncSession", "CapsuleError", "ConfigError", "Event", "ExecutionCancelled",
    "ExecutionError", "ExecutionTimedOut", "GatewayUnreachable", "InputNotHandled",
    "InterpreterRestarted", "OutputDropped", "OutputLost", "PoolExhausted", "PoolNotFound", "Result", "ROLLBACK_ON_ERROR", "Session",
    "SessionFailed", "SessionNotBound", "SessionNotFound", "SessionTimeout", "TokenRefused",
    "TRANSACTIONS", "WorkerLost", "WorkerUnreachable",
]
