//! The process runtime: what runs a container as a local process. Independent of the Kubernetes API.

pub mod container;
pub mod log_sink;
pub mod probe;
pub mod process;
pub mod reaper;
pub mod sandbox;

pub use container::{
    Backoff, ContainerEvent, ContainerHandle, ContainerLaunch, ContainerSnapshot, RestartPolicy,
    RunState, Terminated,
};
pub use probe::{ExecContext, ProbeAction, ProbeOutcome, ProbeSpec};
pub use process::{ExitOutcome, ProcessSecurity, ProcessSpec, RunningProcess};
pub use reaper::Reaper;
pub use sandbox::{BindMount, Sandbox, SandboxRequest};
