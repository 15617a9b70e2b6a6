//! Watches: replay from a resourceVersion out of the bounded history (or the current state as
//! ADDED events), then live events; bookmarks; `sendInitialEvents`; 410 Gone as an ERROR event for
//! versions older than the history; selector transitions (an object leaving a selector is DELETED).

use crate::api::{Ctx, Shared};
use crate::error::{Error, Result};
use crate::handlers::{present, Selectors};
use crate::resources::ResourceInfo;
use crate::store::{object_key, EventType, ObjectKey, Store, StoredEvent};
use crate::table;
use axum::body::{Body, Bytes};
use axum::http::StatusCode;
use axum::response::Response;
use serde_json::{json, Value};
use std::collections::HashSet;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{broadcast, mpsc};

/// How often an idle watch with `allowWatchBookmarks` gets a BOOKMARK.
pub const BOOKMARK_INTERVAL: Duration = Duration::from_secs(5);
/// Server-side cap on a watch's life when the client sets no timeout (the real server uses 30–60 min).
const DEFAULT_WATCH_TIMEOUT: Duration = Duration::from_secs(1800);
/// Encoded events buffered towards one slow client.
const WATCH_OUTPUT_BUFFER: usize = 256;

struct Watcher {
    info: ResourceInfo,
    namespace: Option<String>,
    selectors: Selectors,
    as_table: bool,
    include_object: Option<String>,
    /// Objects this watcher has been told about, so selector transitions become ADDED / DELETED.
    visible: HashSet<ObjectKey>,
}

impl Watcher {
    fn in_scope(&self, event: &StoredEvent) -> bool {
        event.storage_key == self.info.storage_key()
            && self.namespace.as_ref().is_none_or(|ns| {
                event.object["metadata"]["namespace"].as_str() == Some(ns.as_str())
            })
    }

    /// The event type this watcher sees for a change, if any.
    fn translate(&mut self, event: &StoredEvent) -> Option<EventType> {
        if !self.in_scope(event) {
            return None;
        }
        let key = object_key(&event.object);
        let was = self.visible.contains(&key);
        let now = event.event_type != EventType::Deleted && self.selectors.matches(&event.object);
        let seen = match (was, now) {
            (false, true) => Some(EventType::Added),
            (true, true) => Some(event.event_type),
            (true, false) => Some(EventType::Deleted),
            (false, false) => None,
        };
        if now {
            self.visible.insert(key);
        } else {
            self.visible.remove(&key);
        }
        seen
    }

    fn encode(&self, event_type: &str, object: &Value) -> Bytes {
        let object = if self.as_table {
            let rv = object["metadata"]["resourceVersion"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            table::table(
                &self.info,
                &[Arc::new(object.clone())],
                &rv,
                self.include_object.as_deref(),
            )
        } else {
            present(&self.info, object)
        };
        let mut line =
            serde_json::to_vec(&json!({"type": event_type, "object": object})).unwrap_or_default();
        line.push(b'\n');
        Bytes::from(line)
    }

    /// Like [`Watcher::encode`], reusing the event's shared encoding when no rewrite is needed.
    fn encode_event(&self, event_type: &str, event: &StoredEvent) -> Bytes {
        let same_version =
            event.object["apiVersion"].as_str() == Some(self.info.api_version().as_str());
        if self.as_table || !same_version {
            return self.encode(event_type, &event.object);
        }
        let object = event.encoded_object();
        let mut line = Vec::with_capacity(object.len() + 32);
        line.extend_from_slice(b"{\"type\":\"");
        line.extend_from_slice(event_type.as_bytes());
        line.extend_from_slice(b"\",\"object\":");
        line.extend_from_slice(object);
        line.extend_from_slice(b"}\n");
        Bytes::from(line)
    }

    fn bookmark(&self, rv: u64, initial_events_end: bool) -> Bytes {
        let mut metadata = json!({"resourceVersion": rv.to_string()});
        if initial_events_end {
            metadata["annotations"] = json!({"k8s.io/initial-events-end": "true"});
        }
        let object = json!({"kind": self.info.kind, "apiVersion": self.info.api_version(), "metadata": metadata});
        let mut line =
            serde_json::to_vec(&json!({"type": "BOOKMARK", "object": object})).unwrap_or_default();
        line.push(b'\n');
        Bytes::from(line)
    }
}

fn gone(requested: u64, oldest: u64) -> Value {
    json!({"type": "ERROR", "object": {
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": format!("too old resource version: {requested} ({oldest})"),
        "reason": "Expired", "code": 410,
    }})
}

impl Watcher {
    /// A watcher for the request's selectors (a named watch is a field selector on the name).
    fn for_request(
        ctx: &Ctx,
        info: &ResourceInfo,
        namespace: &str,
        name: Option<&str>,
    ) -> Result<Watcher> {
        let mut selectors = Selectors::from_ctx(ctx)?;
        if let Some(name) = name {
            let by_name = crate::selectors::FieldSelector::parse(&format!("metadata.name={name}"))?;
            selectors.fields = Some(by_name);
        }
        Ok(Watcher {
            info: info.clone(),
            namespace: Some(namespace.to_string()).filter(|n| !n.is_empty() && info.namespaced),
            selectors,
            as_table: ctx.wants_table(),
            include_object: ctx.param("includeObject").map(str::to_string),
            visible: HashSet::new(),
        })
    }

    /// The current state as ADDED events, ended by a bookmark when `end_bookmark`
    /// (`sendInitialEvents` with bookmarks allowed).
    fn initial_events(&mut self, store: &Store, current: u64, end_bookmark: bool) -> Vec<Bytes> {
        let mut first_lines = Vec::new();
        for object in store.list(&self.info.storage_key(), self.namespace.as_deref()) {
            if self.selectors.matches(&object) {
                self.visible.insert(object_key(&object));
                first_lines.push(self.encode("ADDED", &object));
            }
        }
        if end_bookmark {
            first_lines.push(self.bookmark(current, true));
        }
        first_lines
    }

    /// The events after `since`, as this watcher sees them; None when `since` is older than
    /// the history.
    fn replay(&mut self, store: &Store, since: u64) -> Option<Vec<Bytes>> {
        for object in store.list(&self.info.storage_key(), self.namespace.as_deref()) {
            if self.selectors.matches(&object) {
                self.visible.insert(object_key(&object));
            }
        }
        let events = store.events_since(since)?;
        // What the client knew at `since`, for objects changed since: the first
        // replayed event says whether the object existed then (anything but ADDED);
        // whether it matched the selectors then is judged from that event's object.
        let mut first_seen = HashSet::new();
        for event in &events {
            if !self.in_scope(event) {
                continue;
            }
            let key = object_key(&event.object);
            if first_seen.insert(key.clone()) {
                let existed = event.event_type != EventType::Added;
                if existed && self.selectors.matches(&event.object) {
                    self.visible.insert(key);
                } else {
                    self.visible.remove(&key);
                }
            }
        }
        let mut first_lines = Vec::new();
        for event in &events {
            if let Some(kind) = self.translate(event) {
                first_lines.push(self.encode_event(kind.as_str(), event));
            }
        }
        Some(first_lines)
    }
}

/// The `resourceVersion` a watch starts after; none (or "0") means from the current state.
fn requested_version(ctx: &Ctx) -> Result<Option<u64>> {
    Ok(match ctx.param("resourceVersion") {
        None | Some("0") => None,
        Some(text) => Some(
            text.parse()
                .map_err(|_| Error::bad_request(format!("invalid resource version {text:?}")))?,
        ),
    })
}

/// A watch from a version older than the history: one 410 ERROR event, then the end.
fn gone_response(since: u64, current: u64) -> Response {
    let mut line = serde_json::to_vec(&gone(since, current)).unwrap_or_default();
    line.push(b'\n');
    streaming(futures::stream::iter(vec![Ok::<_, Infallible>(
        Bytes::from(line),
    )]))
}

pub async fn watch(
    shared: &Arc<Shared>,
    ctx: &Ctx,
    info: &ResourceInfo,
    namespace: &str,
    name: Option<&str>,
) -> Result<Response> {
    let mut watcher = Watcher::for_request(ctx, info, namespace, name)?;
    let allow_bookmarks = ctx.flag("allowWatchBookmarks");
    let send_initial = ctx.flag("sendInitialEvents");
    let timeout = ctx
        .param("timeoutSeconds")
        .and_then(|t| t.parse::<u64>().ok())
        .map(Duration::from_secs)
        .unwrap_or(DEFAULT_WATCH_TIMEOUT);
    let requested = requested_version(ctx)?;

    let (first_lines, receiver, start_rv) = {
        let state = shared.lock();
        let current = state.store.resource_version();
        let first_lines = match requested {
            Some(since) if !send_initial => match watcher.replay(&state.store, since) {
                Some(lines) => lines,
                None => return Ok(gone_response(since, current)),
            },
            _ => watcher.initial_events(&state.store, current, send_initial && allow_bookmarks),
        };
        (first_lines, state.store.subscribe(), current)
    };

    let (sender, output) = mpsc::channel::<Bytes>(WATCH_OUTPUT_BUFFER);
    let shutdown = shared.shutdown.clone();
    tokio::spawn(async move {
        for line in first_lines {
            if sender.send(line).await.is_err() {
                return;
            }
        }
        pump(
            watcher,
            receiver,
            sender,
            start_rv,
            allow_bookmarks,
            timeout,
            shutdown,
        )
        .await;
    });
    let mut output = output;
    let stream = futures::stream::poll_fn(move |cx| {
        output.poll_recv(cx).map(|o| o.map(Ok::<_, Infallible>))
    });
    Ok(streaming(stream))
}

fn streaming<S>(stream: S) -> Response
where
    S: futures::Stream<Item = std::result::Result<Bytes, Infallible>> + Send + 'static,
{
    Response::builder()
        .status(StatusCode::OK)
        .header(axum::http::header::CONTENT_TYPE, "application/json")
        .header(axum::http::header::CACHE_CONTROL, "no-cache, private")
        .body(Body::from_stream(stream))
        .expect("static headers are valid")
}

async fn pump(
    mut watcher: Watcher,
    mut receiver: broadcast::Receiver<Arc<StoredEvent>>,
    sender: mpsc::Sender<Bytes>,
    start_rv: u64,
    allow_bookmarks: bool,
    timeout: Duration,
    shutdown: tokio_util::sync::CancellationToken,
) {
    let deadline = tokio::time::sleep(timeout);
    tokio::pin!(deadline);
    let mut bookmarks = tokio::time::interval(BOOKMARK_INTERVAL);
    bookmarks.tick().await;
    let mut last_rv = start_rv;
    loop {
        tokio::select! {
            _ = &mut deadline => break,
            _ = shutdown.cancelled() => break,
            _ = sender.closed() => return,
            _ = bookmarks.tick(), if allow_bookmarks && !watcher.as_table => {
                if sender.send(watcher.bookmark(last_rv, false)).await.is_err() {
                    return;
                }
            }
            received = receiver.recv() => match received {
                Ok(event) => {
                    if event.resource_version <= start_rv {
                        continue;
                    }
                    last_rv = event.resource_version;
                    if let Some(kind) = watcher.translate(&event) {
                        if sender.send(watcher.encode_event(kind.as_str(), &event)).await.is_err() {
                            return;
                        }
                    }
                }
                // Too slow: end the stream; the client resumes from its last version.
                Err(broadcast::error::RecvError::Lagged(_)) | Err(broadcast::error::RecvError::Closed) => break,
            }
        }
    }
    if allow_bookmarks && !watcher.as_table {
        let _ = sender.send(watcher.bookmark(last_rv, false)).await;
    }
}
