//! Transactions (`transaction: rollbackOnError`) against a real worker and python3: a failed,
//! cancelled or timed-out transaction leaves the namespace as it was; a successful one keeps its
//! changes; without `transaction` nothing changes in behaviour.

mod common;

use capsule_protocol::execute::{EventBody, ExecuteRequest, ExecutionEvent, Transaction};
use common::{final_event, result_repr, Worker, WAIT};

/// Names of every kind the tests change: rebinding, deletion, in-place list/dict/set changes,
/// instance and class attributes, a global changed by a function, an alias.
const SETUP: &str = r#"
class Counter:
    kind = 'orig'
    items = [1]
    def bump(self):
        Counter.kind = 'bumped'
        self.value += 1
lst = [1, 2, [3]]
alias = lst
d = {'a': 1, 'nested': {'b': 2}}
s = {1, 2}
ba = bytearray(b'ab')
t = ([0],)
rebound = 'old'
doomed = 10
obj = Counter()
obj.value = 5
def mutate_global():
    d['via_function'] = True
    lst[2].append('deep')
def state():
    user = sorted(k for k in globals() if not k.startswith('__'))
    return repr((user, lst, alias is lst, d, sorted(s), ba, t, rebound, obj.__dict__,
                 {k: v for k, v in vars(Counter).items() if not k.startswith('__') and not callable(v)},
                 id(lst), id(d), id(obj)))
"#;

/// Changes every name of [`SETUP`] one way or another.
const CHANGES: &str = r#"
lst.append(4)
d['a'] = 99
del d['nested']['b']
mutate_global()
s.add(3)
ba.extend(b'cd')
t[0].append(1)
rebound = 'new'
del doomed
brand_new = 1
obj.extra = 1
obj.bump()
Counter.added = 1
Counter.items.append(2)
"#;

fn transaction(code: &str) -> ExecuteRequest {
    ExecuteRequest {
        code: code.into(),
        transaction: Some(Transaction::RollbackOnError),
        ..Default::default()
    }
}

fn last(events: &[ExecutionEvent]) -> &ExecutionEvent {
    final_event(events);
    events.last().unwrap()
}

async fn state(worker: &Worker) -> String {
    result_repr(&worker.run("state()").await).expect("state() has a repr")
}

#[tokio::test]
async fn a_failing_transaction_leaves_the_namespace_exactly_as_before() {
    let worker = Worker::start(&[]).await;
    worker.run(SETUP).await;
    let before = state(&worker).await;
    let code = format!("{CHANGES}\nraise ValueError('boom')");
    let events = worker.run_request(&transaction(&code)).await;
    match &last(&events).body {
        EventBody::Error { ename, .. } => assert_eq!(ename, "ValueError"),
        other => panic!("expected the code's error, got {other:?}"),
    }
    assert!(
        last(&events).rolled_back,
        "the error says it was rolled back"
    );
    assert_eq!(state(&worker).await, before);
    // A syntax error runs nothing: still reported as rolled back, namespace as before.
    let events = worker.run_request(&transaction("x = (")).await;
    assert!(last(&events).rolled_back);
    assert_eq!(state(&worker).await, before);
    let stats = worker.stats().await;
    assert_eq!(stats.transactions_rolled_back, 2);
    assert_eq!(stats.executions.error, 2);
}

#[tokio::test]
async fn a_successful_transaction_keeps_its_changes() {
    let worker = Worker::start(&[]).await;
    worker.run(SETUP).await;
    let events = worker
        .run_request(&transaction(&format!("{CHANGES}\nlen(lst)")))
        .await;
    assert_eq!(result_repr(&events).as_deref(), Some("4"));
    assert!(!last(&events).rolled_back);
    let events = worker
        .run("(brand_new, 'doomed' in dir(), rebound, d['a'], Counter.kind, obj.value, lst[2])")
        .await;
    assert_eq!(
        result_repr(&events).as_deref(),
        Some("(1, False, 'new', 99, 'bumped', 6, [3, 'deep'])")
    );
    assert_eq!(worker.stats().await.transactions_rolled_back, 0);
}

#[tokio::test]
async fn a_cancelled_transaction_rolls_back() {
    let worker = Worker::start(&[]).await;
    worker.run(SETUP).await;
    let before = state(&worker).await;
    let code = format!("{CHANGES}\nprint('changed', flush=True)\nimport time\ntime.sleep(60)");
    let mut stream = worker.stream(&transaction(&code)).await;
    let id = stream
        .id_once(|body| matches!(body, EventBody::Output { .. }))
        .await;
    worker.cancel(&id).await;
    let rest = tokio::time::timeout(WAIT, stream.collect()).await.unwrap();
    assert_eq!(
        last(&rest).body,
        EventBody::Cancelled {
            namespace_lost: false
        }
    );
    assert!(last(&rest).rolled_back);
    assert_eq!(state(&worker).await, before);
}

#[tokio::test]
async fn a_timed_out_transaction_rolls_back() {
    let worker = Worker::start(&[]).await;
    worker.run(SETUP).await;
    let before = state(&worker).await;
    let mut request = transaction(&format!("{CHANGES}\nimport time\ntime.sleep(60)"));
    request.timeout_ms = Some(300);
    let events = worker.run_request(&request).await;
    assert_eq!(
        last(&events).body,
        EventBody::TimedOut {
            timeout_ms: 300,
            namespace_lost: false
        }
    );
    assert!(last(&events).rolled_back);
    assert_eq!(state(&worker).await, before);
    assert_eq!(worker.stats().await.transactions_rolled_back, 1);
}

#[tokio::test]
async fn without_a_transaction_a_failure_keeps_the_changes() {
    let worker = Worker::start(&[]).await;
    worker.run(SETUP).await;
    let before = state(&worker).await;
    let events = worker
        .run(&format!("{CHANGES}\nraise ValueError('boom')"))
        .await;
    assert!(matches!(final_event(&events), EventBody::Error { .. }));
    assert!(!last(&events).rolled_back);
    let raw = serde_json::to_value(last(&events)).unwrap();
    assert!(raw.get("rolledBack").is_none(), "{raw}");
    assert_ne!(state(&worker).await, before);
    let events = worker.run("(brand_new, rebound, d['a'])").await;
    assert_eq!(result_repr(&events).as_deref(), Some("(1, 'new', 99)"));
    assert_eq!(worker.stats().await.transactions_rolled_back, 0);
}

#[tokio::test]
async fn code_reaching_names_dynamically_is_rolled_back_too() {
    let worker = Worker::start(&[]).await;
    worker.run("hidden = [1]\nother = {'k': 1}").await;
    let code = "globals()['hidden'].append(2)\neval('other')['k'] = 2\nraise KeyError('x')";
    let events = worker.run_request(&transaction(code)).await;
    assert!(last(&events).rolled_back);
    let events = worker.run("(hidden, other)").await;
    assert_eq!(result_repr(&events).as_deref(), Some("([1], {'k': 1})"));
}

#[tokio::test]
async fn an_unknown_transaction_value_is_refused_naming_the_field() {
    let worker = Worker::start(&[]).await;
    let response = worker
        .post("/v1/executions")
        .json(&serde_json::json!({"code": "1", "transaction": "always"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    let body: serde_json::Value = response.json().await.unwrap();
    let message = body["message"].as_str().unwrap();
    assert!(
        message.contains("`transaction` must be one of: rollbackOnError"),
        "{message}"
    );
    assert_eq!(worker.stats().await.executions.ok, 0);
}

#[tokio::test]
async fn a_value_that_cannot_be_copied_keeps_its_state_but_the_rest_rolls_back() {
    let worker = Worker::start(&[]).await;
    worker
        .run("import threading\nlock = threading.Lock()\nitems = [1]")
        .await;
    let code = "lock.acquire()\nitems.append(2)\nlock = None\nraise ValueError('x')";
    let events = worker.run_request(&transaction(code)).await;
    assert!(last(&events).rolled_back);
    // A lock cannot be copied: its name comes back, its state (acquired) does not (documented).
    let events = worker
        .run("(type(lock).__name__, lock.locked(), items)")
        .await;
    assert_eq!(result_repr(&events).as_deref(), Some("('lock', True, [1])"));
}
