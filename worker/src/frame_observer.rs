//! Transport diagnostics: every frame between the worker and its interpreters is shown to the frame
//! observers with its direction, type and size, never its content. Each one is logged at debug
//! level under the `capsule_worker::frames` target (`RUST_LOG=capsule_worker::frames=debug`);
//! programs embedding the worker add passive interceptors with [`add`]: they see every frame and
//! cannot change or hold it up.

use std::sync::{Arc, RwLock};

/// Which way a frame went.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    ToInterpreter,
    FromInterpreter,
}

impl Direction {
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::ToInterpreter => "to_interpreter",
            Direction::FromInterpreter => "from_interpreter",
        }
    }
}

/// What an observer learns of one frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameInfo {
    pub direction: Direction,
    /// The frame's `type` (`output`, `execute`, …); `unreadable` for one that could not be read.
    pub kind: &'static str,
    /// The body's size in bytes.
    pub bytes: usize,
}

/// A passive interceptor. Called on the task that moves the frame, so it must return quickly.
pub trait FrameObserver: Send + Sync + 'static {
    fn observe(&self, frame: FrameInfo);
}

static OBSERVERS: RwLock<Vec<Arc<dyn FrameObserver>>> = RwLock::new(Vec::new());

/// Adds an interceptor for the rest of the process's life.
pub fn add(observer: Arc<dyn FrameObserver>) {
    OBSERVERS
        .write()
        .unwrap_or_else(|p| p.into_inner())
        .push(observer);
}

/// Shows one frame to the log and to every interceptor.
pub fn observe(direction: Direction, kind: &'static str, bytes: usize) {
    tracing::debug!(
        target: "capsule_worker::frames",
        direction = direction.as_str(),
        kind,
        bytes,
        "frame"
    );
    let frame = FrameInfo {
        direction,
        kind,
        bytes,
    };
    for observer in OBSERVERS.read().unwrap_or_else(|p| p.into_inner()).iter() {
        observer.observe(frame);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    #[derive(Default)]
    struct Recorder(Mutex<Vec<FrameInfo>>);

    impl FrameObserver for Recorder {
        fn observe(&self, frame: FrameInfo) {
            self.0.lock().unwrap().push(frame);
        }
    }

    #[test]
    fn an_interceptor_sees_direction_type_and_size() {
        let recorder = Arc::new(Recorder::default());
        add(recorder.clone());
        observe(Direction::ToInterpreter, "execute", 42);
        observe(Direction::FromInterpreter, "result", 7);
        let seen = recorder.0.lock().unwrap().clone();
        assert!(seen.contains(&FrameInfo {
            direction: Direction::ToInterpreter,
            kind: "execute",
            bytes: 42
        }));
        assert!(seen.contains(&FrameInfo {
            direction: Direction::FromInterpreter,
            kind: "result",
            bytes: 7
        }));
    }
}
