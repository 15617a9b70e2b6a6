//! Capsule worker: the runtime of the `capsule-worker` binary (one supervised Python interpreter
//! behind an HTTP execute API). The contracts it speaks live in `capsule_protocol`.
//!
//! Runtime modules: [`config`] (env vars), [`fork_server`] (the zygote every interpreter is forked
//! from), [`interpreter`] (process + frame protocol with the embedded driver), [`executor`] (one execution at a time, cancellation, restarts),
//! [`output_queue`] (the bounded output pump), [`bridge`] (pending promises), [`api`] (axum),
//! [`heartbeat`], [`trace_sender`], [`session`] (binding and token checks), [`checkpoint`]
//! (sealed namespace checkpoints and their store).

pub mod api;
pub mod bridge;
pub mod checkpoint;
pub mod config;
pub mod error;
pub mod executor;
pub mod fork_server;
pub mod frame_observer;
pub mod heartbeat;
pub mod interpreter;
pub mod logging;
pub mod output_queue;
pub mod procstat;
pub mod runtime;
pub mod session;
pub mod standby;
pub mod stats;
pub mod trace_sender;
pub mod warn_once;
pub mod workdir;

pub use error::{Error, Result};
