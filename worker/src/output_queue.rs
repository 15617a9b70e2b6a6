//! The output pump of one execution: a bounded queue between the interpreter and the HTTP client.
//!
//! Output chunks obey the pool's backpressure policy and move the process-wide executor counters.
//! Stream-control events (`accepted`, `started`, `inputRequest`) are never dropped; they may exceed
//! the capacity by the few the executor emits per execution (the code is paused while an input
//! request waits). The final event sits apart from the queue and is handed out only after every
//! queued event, so all output is delivered before it.

use std::collections::VecDeque;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::config::Backpressure;
use crate::interpreter::JsonString;
use crate::stats::Stats;

use capsule_protocol::execute::{EventBody, ExecutionEvent, OutputStream};

/// Most events handed to the client in one batch (one HTTP chunk).
pub const MAX_BATCH_EVENTS: usize = 256;

/// Why an output chunk was not queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PushRefused {
    /// The queue is full and the policy is `Error`.
    Full,
    /// The client went away.
    ConsumerGone,
}

/// An event waiting for the client.
#[derive(Debug, Clone)]
pub enum Queued {
    Event(ExecutionEvent),
    /// An output chunk whose text is still the driver's JSON string, passed through unparsed.
    RawOutput {
        stream: OutputStream,
        text: JsonString,
    },
}

impl From<ExecutionEvent> for Queued {
    fn from(event: ExecutionEvent) -> Self {
        Queued::Event(event)
    }
}

impl Queued {
    fn is_output(&self) -> bool {
        matches!(
            self,
            Queued::RawOutput { .. }
                | Queued::Event(ExecutionEvent {
                    body: EventBody::Output { .. },
                    ..
                })
        )
    }

    /// About the bytes of this event's NDJSON line: enough for an output chunk's line, so a batch's
    /// buffer is allocated once rather than regrown (and copied) by doubling.
    pub fn ndjson_len_hint(&self, execution_id: &str) -> usize {
        const FIELDS: usize = 96;
        match self {
            Queued::RawOutput { text, .. } => text.get().len() + execution_id.len() + FIELDS,
            Queued::Event(_) => 2 * FIELDS,
        }
    }

    /// Appends this event as one NDJSON line.
    pub fn write_ndjson(&self, execution_id: &str, out: &mut Vec<u8>) {
        match self {
            Queued::Event(event) => {
                if serde_json::to_writer(&mut *out, event).is_err() {
                    return;
                }
            }
            Queued::RawOutput { stream, text } => {
                out.extend_from_slice(br#"{"executionId":"#);
                let _ = serde_json::to_writer(&mut *out, execution_id);
                out.extend_from_slice(br#","type":"output","stream":"#);
                let _ = serde_json::to_writer(&mut *out, stream);
                out.extend_from_slice(br#","text":"#);
                out.extend_from_slice(text.get().as_bytes());
                out.push(b'}');
            }
        }
        out.push(b'\n');
    }
}

#[derive(Debug, Default)]
struct QueueState {
    events: VecDeque<Queued>,
    outputs_queued: usize,
    final_event: Option<Queued>,
    finished: bool,
    sent: u64,
    dropped: u64,
}

/// Counts for an `OutputDrainTimeout` event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DrainReport {
    pub pending: u64,
    pub queue_size: u64,
    pub sent: u64,
    pub dropped: u64,
}

#[derive(Debug)]
pub struct OutputQueue {
    state: Mutex<QueueState>,
    capacity: usize,
    policy: Backpressure,
    space: Notify,
    events: Notify,
    consumer_gone: CancellationToken,
    stats: Arc<Stats>,
}

fn is_output(event: &Queued) -> bool {
    event.is_output()
}

impl OutputQueue {
    pub fn new(capacity: usize, policy: Backpressure, stats: Arc<Stats>) -> Arc<Self> {
        Arc::new(OutputQueue {
            state: Mutex::new(QueueState::default()),
            capacity: capacity.max(1),
            policy,
            space: Notify::new(),
            events: Notify::new(),
            consumer_gone: CancellationToken::new(),
            stats,
        })
    }

    fn lock(&self) -> MutexGuard<'_, QueueState> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Cancelled when the client stops reading (its response stream was dropped).
    pub fn consumer_gone(&self) -> &CancellationToken {
        &self.consumer_gone
    }

    fn enqueue(&self, state: &mut QueueState, event: Queued) {
        if is_output(&event) {
            state.outputs_queued += 1;
            self.stats.outputs_enqueued.fetch_add(1, Relaxed);
        }
        state.events.push_back(event);
        self.stats.record_queue_depth(state.events.len());
        self.events.notify_one();
    }

    fn drop_output(&self, state: &mut QueueState) {
        state.dropped += 1;
        self.stats.outputs_dropped.fetch_add(1, Relaxed);
    }

    /// Queues an output chunk under the backpressure policy. Under `Block` this waits for room;
    /// the caller bounds the wait with the drain timeout.
    pub async fn push_output(&self, event: impl Into<Queued>) -> Result<(), PushRefused> {
        let event = event.into();
        loop {
            if self.consumer_gone.is_cancelled() {
                let mut state = self.lock();
                self.drop_output(&mut state);
                return Err(PushRefused::ConsumerGone);
            }
            {
                let mut state = self.lock();
                if state.outputs_queued < self.capacity {
                    self.enqueue(&mut state, event);
                    return Ok(());
                }
                match self.policy {
                    Backpressure::Block => {}
                    Backpressure::DropNew => {
                        self.drop_output(&mut state);
                        return Ok(());
                    }
                    Backpressure::DropOldest => {
                        if let Some(index) = state.events.iter().position(is_output) {
                            state.events.remove(index);
                            state.outputs_queued -= 1;
                            self.drop_output(&mut state);
                        }
                        self.enqueue(&mut state, event);
                        return Ok(());
                    }
                    Backpressure::Error => {
                        self.drop_output(&mut state);
                        return Err(PushRefused::Full);
                    }
                }
            }
            tokio::select! {
                _ = self.space.notified() => {}
                _ = self.consumer_gone.cancelled() => {}
            }
        }
    }

    /// Queues a stream-control event regardless of capacity.
    pub fn push_control(&self, event: ExecutionEvent) -> Result<(), PushRefused> {
        let event = Queued::Event(event);
        if self.consumer_gone.is_cancelled() {
            return Err(PushRefused::ConsumerGone);
        }
        let mut state = self.lock();
        self.enqueue(&mut state, event);
        Ok(())
    }

    /// Waits until the client has taken every queued event (or has gone away).
    pub async fn drained(&self) {
        loop {
            if self.lock().events.is_empty() || self.consumer_gone.is_cancelled() {
                return;
            }
            tokio::select! {
                _ = self.space.notified() => {}
                _ = self.consumer_gone.cancelled() => {}
            }
        }
    }

    /// Discards what the client did not take and reports the counts for `OutputDrainTimeout`.
    pub fn abandon_pending(&self) -> DrainReport {
        let mut state = self.lock();
        let pending = state.outputs_queued as u64;
        let report = DrainReport {
            pending,
            // What the queue held when the wait ran out, not what it could hold.
            queue_size: state.events.len() as u64,
            sent: state.sent,
            dropped: state.dropped,
        };
        state.events.retain(|event| !is_output(event));
        state.outputs_queued = 0;
        state.dropped += pending;
        self.stats.outputs_dropped.fetch_add(pending, Relaxed);
        report
    }

    /// Sets the final event, with the count of chunks dropped so far; the client receives it
    /// after everything queued.
    pub fn finish(&self, mut event: ExecutionEvent) {
        let mut state = self.lock();
        if state.final_event.is_none() && !state.finished {
            event.output_dropped = state.dropped;
            state.final_event = Some(Queued::Event(event));
        }
        self.events.notify_one();
    }

    /// Takes the next events for the client, waiting for some; `None` once the final event was
    /// handed out.
    pub async fn next_batch(&self) -> Option<Vec<Queued>> {
        loop {
            {
                let mut state = self.lock();
                if state.finished {
                    return None;
                }
                if !state.events.is_empty() {
                    let count = state.events.len().min(MAX_BATCH_EVENTS);
                    let batch: Vec<Queued> = state.events.drain(..count).collect();
                    let outputs = batch.iter().filter(|e| is_output(e)).count();
                    state.outputs_queued -= outputs;
                    state.sent += outputs as u64;
                    self.stats.outputs_sent.fetch_add(outputs as u64, Relaxed);
                    self.space.notify_one();
                    return Some(batch);
                }
                if let Some(final_event) = state.final_event.take() {
                    state.finished = true;
                    self.space.notify_one();
                    return Some(vec![final_event]);
                }
            }
            self.events.notified().await;
        }
    }

    /// Called when the client's stream is dropped.
    pub fn close_consumer(&self) {
        self.consumer_gone.cancel();
        self.space.notify_one();
    }

    /// Whether the final event was handed to the client.
    pub fn is_finished(&self) -> bool {
        self.lock().finished
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cancelled() -> ExecutionEvent {
        ExecutionEvent {
            execution_id: "e".into(),
            rolled_back: false,
            output_dropped: 0,
            body: EventBody::Cancelled {
                namespace_lost: false,
            },
        }
    }

    fn output(n: usize) -> ExecutionEvent {
        ExecutionEvent {
            execution_id: "e".into(),
            rolled_back: false,
            output_dropped: 0,
            body: EventBody::Output {
                stream: OutputStream::Stdout,
                text: n.to_string(),
            },
        }
    }

    fn texts(batch: &[Queued]) -> Vec<String> {
        batch
            .iter()
            .filter_map(|e| match e {
                Queued::Event(ExecutionEvent {
                    body: EventBody::Output { text, .. },
                    ..
                }) => Some(text.clone()),
                Queued::RawOutput { text, .. } => serde_json::from_str(text.get()).ok(),
                _ => None,
            })
            .collect()
    }

    #[tokio::test]
    async fn raw_output_becomes_the_same_ndjson_as_a_parsed_event() {
        let raw = Queued::RawOutput {
            stream: OutputStream::Stderr,
            text: JsonString::from_contents(br#"a\n\"b\""#).unwrap(),
        };
        let mut line = Vec::new();
        raw.write_ndjson("e1", &mut line);
        assert_eq!(line.last(), Some(&b'\n'));
        assert!(
            line.len() <= raw.ndjson_len_hint("e1"),
            "the hint covers the line"
        );
        let parsed: ExecutionEvent = serde_json::from_slice(&line).unwrap();
        assert_eq!(
            parsed,
            ExecutionEvent {
                execution_id: "e1".into(),
                rolled_back: false,
                output_dropped: 0,
                body: EventBody::Output {
                    stream: OutputStream::Stderr,
                    text: "a\n\"b\"".into()
                }
            }
        );
    }

    #[tokio::test]
    async fn drop_new_keeps_the_first_and_counts() {
        let stats = Arc::new(Stats::default());
        let queue = OutputQueue::new(2, Backpressure::DropNew, stats.clone());
        for n in 0..5 {
            queue.push_output(output(n)).await.unwrap();
        }
        assert_eq!(texts(&queue.next_batch().await.unwrap()), ["0", "1"]);
        assert_eq!(stats.outputs_dropped.load(Relaxed), 3);
        assert_eq!(stats.outputs_enqueued.load(Relaxed), 2);
        assert_eq!(stats.outputs_sent.load(Relaxed), 2);
        assert_eq!(stats.max_queue_depth.load(Relaxed), 2);
        queue.finish(cancelled());
        let last = queue.next_batch().await.unwrap();
        assert!(
            matches!(&last[..], [Queued::Event(e)] if e.output_dropped == 3),
            "the final event tells the client what was dropped: {last:?}"
        );
    }

    #[tokio::test]
    async fn drop_oldest_keeps_the_last() {
        let stats = Arc::new(Stats::default());
        let queue = OutputQueue::new(2, Backpressure::DropOldest, stats.clone());
        for n in 0..5 {
            queue.push_output(output(n)).await.unwrap();
        }
        assert_eq!(texts(&queue.next_batch().await.unwrap()), ["3", "4"]);
        assert_eq!(stats.outputs_dropped.load(Relaxed), 3);
    }

    #[tokio::test]
    async fn error_policy_refuses_when_full() {
        let stats = Arc::new(Stats::default());
        let queue = OutputQueue::new(1, Backpressure::Error, stats.clone());
        queue.push_output(output(0)).await.unwrap();
        assert_eq!(queue.push_output(output(1)).await, Err(PushRefused::Full));
        assert_eq!(stats.outputs_dropped.load(Relaxed), 1);
    }

    #[tokio::test]
    async fn block_loses_nothing_and_final_comes_last() {
        let stats = Arc::new(Stats::default());
        let queue = OutputQueue::new(3, Backpressure::Block, stats.clone());
        let producer = {
            let queue = queue.clone();
            tokio::spawn(async move {
                for n in 0..1000 {
                    queue.push_output(output(n)).await.unwrap();
                }
                queue.drained().await;
                queue.finish(cancelled());
            })
        };
        let mut seen = Vec::new();
        let mut last = None;
        while let Some(batch) = queue.next_batch().await {
            seen.extend(texts(&batch));
            last = batch.last().cloned();
        }
        producer.await.unwrap();
        assert_eq!(seen, (0..1000).map(|n| n.to_string()).collect::<Vec<_>>());
        assert!(
            matches!(last, Some(Queued::Event(e)) if e.body.is_final() && e.output_dropped == 0)
        );
        assert_eq!(stats.outputs_dropped.load(Relaxed), 0);
        assert!(stats.max_queue_depth.load(Relaxed) <= 3);
    }

    #[tokio::test]
    async fn abandon_reports_pending_and_the_queues_size_not_its_capacity() {
        let stats = Arc::new(Stats::default());
        let queue = OutputQueue::new(4, Backpressure::Block, stats.clone());
        for n in 0..3 {
            queue.push_output(output(n)).await.unwrap();
        }
        let report = queue.abandon_pending();
        assert_eq!(
            report,
            DrainReport {
                pending: 3,
                queue_size: 3,
                sent: 0,
                dropped: 0
            }
        );
        assert_eq!(stats.outputs_dropped.load(Relaxed), 3);
    }
}
