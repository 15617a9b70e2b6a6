//! Wire contracts between Capsule processes (heartbeat, trace event, frames) and the worker runtime.
