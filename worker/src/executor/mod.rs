//! The executor: one execution at a time on the supervised interpreter, others waiting in a bounded
//! queue; cancellation, timeouts, interpreter restarts and the output pump of each execution.

mod execution;
mod final_event;
mod handle;
mod output;
mod stop;
mod task;
mod work;

pub use handle::{ExecutorHandle, ResetError, SubmitError};
pub use task::run;
pub use work::{CheckpointWork, JobBox, Work};
