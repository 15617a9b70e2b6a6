//! The execute API against a real python3: namespace, output order, errors, await, cancel, restart.

mod common;

use capsule_protocol::execute::{EventBody, ExecuteRequest, ExecutionMode};
use common::{final_event, outputs, result_repr, Worker, WAIT};

#[tokio::test]
async fn namespace_persists_and_results_carry_repr() {
    let worker = Worker::start(&[]).await;
    let events = worker.run("x = 40\ndef add(a, b):\n    return a + b").await;
    assert_eq!(result_repr(&events), None);
    assert!(matches!(events[0].body, EventBody::Accepted { .. }));
    assert!(matches!(
        events[1].body,
        EventBody::Started {
            namespace_lost: false
        }
    ));
    let events = worker.run("add(x, 2)").await;
    assert_eq!(result_repr(&events).as_deref(), Some("42"));
    let events = worker.run("'a' * 3").await;
    assert_eq!(result_repr(&events).as_deref(), Some("'aaa'"));
    let stats = worker.stats().await;
    assert_eq!(stats.executions.ok, 3);
    assert_eq!(stats.modes.plain, 3);
    assert_eq!(stats.namespace_size, 2, "x and add");
}

#[tokio::test]
async fn stdout_and_stderr_interleave_in_order() {
    let worker = Worker::start(&[]).await;
    let code = "import sys\nfor i in range(3):\n    print('out', i)\n    print('err', i, file=sys.stderr)\nprint('end')";
    let events = worker.run(code).await;
    assert!(matches!(final_event(&events), EventBody::Result { .. }));
    let mut expected = Vec::new();
    for i in 0..3 {
        expected.push(("stdout".to_owned(), format!("out {i}\n")));
        expected.push(("stderr".to_owned(), format!("err {i}\n")));
    }
    expected.push(("stdout".to_owned(), "end\n".to_owned()));
    assert_eq!(outputs(&events), expected);
    let events = worker
        .run("print('tab\\t \"quoted\" back\\\\slash é ✓')\nprint('bad \\ud800 surrogate')")
        .await;
    assert_eq!(
        outputs(&events),
        vec![(
            "stdout".to_owned(),
            "tab\t \"quoted\" back\\slash é ✓\nbad ? surrogate\n".to_owned()
        )]
    );
    let stats = worker.stats().await;
    // At least one chunk per run of a stream (stderr is flushed write by write).
    assert!(stats.executor.outputs_enqueued >= 8, "{:?}", stats.executor);
    assert_eq!(stats.executor.outputs_sent, stats.executor.outputs_enqueued);
    assert_eq!(stats.executor.outputs_dropped, 0);
}

#[tokio::test]
async fn exception_returns_its_traceback() {
    let worker = Worker::start(&[]).await;
    let events = worker
        .run("def inner():\n    raise ValueError('bad value')\n\ninner()")
        .await;
    match final_event(&events) {
        EventBody::Error {
            ename,
            evalue,
            traceback,
        } => {
            assert_eq!(ename, "ValueError");
            assert_eq!(evalue, "bad value");
            let text = traceback.concat();
            assert!(
                text.starts_with("Traceback (most recent call last):"),
                "{text}"
            );
            assert!(text.contains("in inner"), "{text}");
            assert!(text.contains("raise ValueError('bad value')"), "{text}");
            assert!(
                !text.contains("capsule-driver"),
                "driver frames are hidden: {text}"
            );
        }
        other => panic!("expected an error, got {other:?}"),
    }
    let events = worker.run("def broken(:").await;
    assert!(
        matches!(final_event(&events), EventBody::Error { ename, .. } if ename == "SyntaxError")
    );
    assert_eq!(worker.stats().await.executions.error, 2);
}

#[tokio::test]
async fn top_level_await_runs_on_a_persistent_loop() {
    let worker = Worker::start(&[]).await;
    let events = worker
        .run("import asyncio\nasync def twice(v):\n    await asyncio.sleep(0.01)\n    return v * 2")
        .await;
    assert!(matches!(
        final_event(&events),
        EventBody::Result {
            mode: ExecutionMode::AsyncDef,
            ..
        }
    ));
    let events = worker
        .run("await asyncio.sleep(0)\nfirst = id(asyncio.get_running_loop())\nawait twice(21)")
        .await;
    match final_event(&events) {
        EventBody::Result { repr, mode, .. } => {
            assert_eq!(repr.as_deref(), Some("42"));
            assert_eq!(*mode, ExecutionMode::TopLevelAwait);
        }
        other => panic!("{other:?}"),
    }
    let events = worker
        .run("await asyncio.sleep(0)\nid(asyncio.get_running_loop()) == first")
        .await;
    assert_eq!(result_repr(&events).as_deref(), Some("True"));
    let stats = worker.stats().await;
    assert_eq!(stats.modes.top_level_await, 2);
    assert_eq!(stats.modes.async_def, 1);
    assert_eq!(stats.blocking_call_warnings, 0);
    let events = worker
        .run("import time\nasync def slow():\n    time.sleep(0.01)\nawait slow()")
        .await;
    assert!(matches!(final_event(&events), EventBody::Result { .. }));
    assert_eq!(worker.stats().await.blocking_call_warnings, 1);
}

#[tokio::test]
async fn busy_loop_is_cancelled_and_the_worker_stays_usable() {
    let worker = Worker::start(&[]).await;
    worker.run("kept = 'still here'").await;
    let mut stream = worker
        .stream(&ExecuteRequest {
            code: "print('looping', flush=True)\nwhile True:\n    pass".into(),
            ..Default::default()
        })
        .await;
    let id = stream
        .id_once(|body| matches!(body, EventBody::Output { .. }))
        .await;
    let reply = worker.cancel(&id).await;
    assert_eq!(reply["status"], "cancelling");
    let rest = tokio::time::timeout(WAIT, stream.collect()).await.unwrap();
    assert_eq!(
        final_event(&rest),
        &EventBody::Cancelled {
            namespace_lost: false
        }
    );
    let events = worker.run("kept").await;
    assert_eq!(result_repr(&events).as_deref(), Some("'still here'"));

    let reply = worker.cancel(&id).await;
    assert_eq!(reply["status"], "notRunning");
    let stats = worker.stats().await;
    assert_eq!(stats.cancels.requested, 2);
    assert_eq!(stats.cancels.effective, 1);
    assert_eq!(stats.cancels.noop, 1);
    assert_eq!(stats.cancels.interrupted, 1);
    assert_eq!(stats.cancels.killed, 0);
    assert_eq!(stats.executions.cancelled, 1);
}

/// A namespace listing and a cancel sent the moment the code started reach the running code, and
/// the executions after it run as usual.
#[tokio::test]
async fn a_listing_and_a_cancel_sent_as_the_code_starts_reach_it() {
    let worker = Worker::start(&[]).await;
    worker.run("kept = 1").await;
    let mut stream = worker
        .stream(&ExecuteRequest {
            code: "import time\ntime.sleep(60)".into(),
            ..Default::default()
        })
        .await;
    let id = stream
        .id_once(|body| matches!(body, EventBody::Started { .. }))
        .await;
    let listing = tokio::time::timeout(
        WAIT,
        worker
            .client
            .get(worker.url("/v1/checkpoint"))
            .bearer_auth(common::SESSION_TOKEN)
            .send(),
    )
    .await
    .unwrap()
    .unwrap();
    assert_eq!(listing.status(), 200);
    let reply = worker.cancel(&id).await;
    assert_eq!(reply["status"], "cancelling");
    let rest = tokio::time::timeout(WAIT, stream.collect()).await.unwrap();
    assert_eq!(
        final_event(&rest),
        &EventBody::Cancelled {
            namespace_lost: false
        }
    );
    for n in 0..20 {
        let events = worker.run(&format!("kept + {n}")).await;
        assert_eq!(result_repr(&events), Some((n + 1).to_string()));
    }
    assert_eq!(worker.stats().await.cancels.killed, 0);
}

#[tokio::test]
async fn code_that_ignores_the_interrupt_is_killed_after_the_grace_period() {
    let worker = Worker::start(&[("CAPSULE_CANCEL_GRACE_MS", "300")]).await;
    worker.run("before = 1").await;
    let code = "while True:\n    try:\n        while True:\n            pass\n    except KeyboardInterrupt:\n        pass";
    let events = worker
        .run_request(&ExecuteRequest {
            code: code.into(),
            timeout_ms: Some(300),
            ..Default::default()
        })
        .await;
    assert_eq!(
        final_event(&events),
        &EventBody::TimedOut {
            timeout_ms: 300,
            namespace_lost: true
        }
    );
    let events = worker.run("'before' in dir()").await;
    assert_eq!(result_repr(&events).as_deref(), Some("False"));
    let stats = worker.stats().await;
    assert_eq!(stats.cancels.killed, 1);
    assert_eq!(stats.interpreter_restarts, 1);
    assert_eq!(stats.executions.timed_out, 1);
}

#[tokio::test]
async fn timeout_interrupts_blocking_sleep() {
    let worker = Worker::start(&[]).await;
    let events = worker
        .run_request(&ExecuteRequest {
            code: "import time\ntime.sleep(60)".into(),
            timeout_ms: Some(200),
            ..Default::default()
        })
        .await;
    assert_eq!(
        final_event(&events),
        &EventBody::TimedOut {
            timeout_ms: 200,
            namespace_lost: false
        }
    );
    let stats = worker.stats().await;
    assert_eq!(stats.executions.timed_out, 1);
    assert_eq!(stats.cancels.interrupted, 1);
}

#[tokio::test]
async fn interpreter_exit_restarts_and_says_the_namespace_is_lost() {
    let worker = Worker::start(&[]).await;
    worker.run("value = 7").await;
    let events = worker.run("import os\nos._exit(1)").await;
    match final_event(&events) {
        EventBody::InterpreterRestarted { exit_code, reason } => {
            assert_eq!(*exit_code, Some(1));
            assert!(reason.contains("namespace is lost"), "{reason}");
        }
        other => panic!("expected interpreterRestarted, got {other:?}"),
    }
    let events = worker.run("value").await;
    assert!(matches!(final_event(&events), EventBody::Error { ename, .. } if ename == "NameError"));
    let events = worker.run("1 + 1").await;
    assert_eq!(result_repr(&events).as_deref(), Some("2"));
    let stats = worker.stats().await;
    assert_eq!(stats.interpreter_restarts, 1);
    assert_eq!(stats.executions.error, 2);
}

#[tokio::test]
async fn executions_queue_in_order_and_overflow_gets_429() {
    let worker = Worker::start(&[("CAPSULE_EXECUTION_QUEUE_LIMIT", "1")]).await;
    let mut first = worker
        .stream(&ExecuteRequest {
            code: "import time\nprint('go', flush=True)\ntime.sleep(2)\n'first'".into(),
            ..Default::default()
        })
        .await;
    loop {
        if let EventBody::Output { .. } = first.expect_next().await.body {
            break;
        }
    }
    let mut second = worker
        .stream(&ExecuteRequest {
            code: "'second'".into(),
            ..Default::default()
        })
        .await;
    assert!(matches!(
        second.expect_next().await.body,
        EventBody::Accepted { queue_position: 1 }
    ));
    let third = worker
        .post("/v1/executions")
        .json(&ExecuteRequest {
            code: "'third'".into(),
            ..Default::default()
        })
        .send()
        .await
        .unwrap();
    assert_eq!(third.status(), 429);
    let body: serde_json::Value = third.json().await.unwrap();
    assert_eq!(body["code"], "queueFull");
    let first_events = tokio::time::timeout(WAIT, first.collect()).await.unwrap();
    assert!(
        matches!(final_event(&first_events), EventBody::Result { repr: Some(r), .. } if r == "'first'")
    );
    let second_events = tokio::time::timeout(WAIT, second.collect()).await.unwrap();
    assert!(
        matches!(final_event(&second_events), EventBody::Result { repr: Some(r), .. } if r == "'second'")
    );
}

#[tokio::test]
async fn reset_clears_the_namespace() {
    let worker = Worker::start(&[]).await;
    worker.run("a = 1\nb = 2").await;
    assert_eq!(worker.stats().await.namespace_size, 2);
    let response = worker.post("/v1/reset").send().await.unwrap();
    assert_eq!(response.status(), 200);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["namespaceSize"], 0);
    let events = worker.run("'a' in dir()").await;
    assert_eq!(result_repr(&events).as_deref(), Some("False"));
}

#[tokio::test]
async fn cancel_during_heavy_output_keeps_the_stream_intact() {
    let worker = Worker::start(&[]).await;
    let mut stream = worker
        .stream(&ExecuteRequest {
            code: "import sys\nwhile True:\n    print('z' * 200)\n    sys.stderr.write('e\\n')"
                .into(),
            ..Default::default()
        })
        .await;
    let id = stream
        .id_once(|body| matches!(body, EventBody::Output { .. }))
        .await;
    worker.cancel(&id).await;
    let rest = tokio::time::timeout(WAIT, stream.collect()).await.unwrap();
    assert_eq!(
        final_event(&rest),
        &EventBody::Cancelled {
            namespace_lost: false
        },
        "the interrupt lands between frames, no kill needed"
    );
    for (stream, text) in outputs(&rest) {
        match stream.as_str() {
            "stdout" => assert!(text.chars().all(|c| c == 'z' || c == '\n')),
            _ => assert!(text.chars().all(|c| c == 'e' || c == '\n')),
        }
    }
    let events = worker.run("'usable'").await;
    assert_eq!(result_repr(&events).as_deref(), Some("'usable'"));
    assert_eq!(worker.stats().await.cancels.killed, 0);
}

#[tokio::test]
async fn control_characters_and_raw_bytes_reach_the_client_as_valid_json() {
    let worker = Worker::start(&[]).await;
    let events = worker
        .run("import sys\nprint('bell\\x07 tab\\t cr\\r end')\nsys.stdout.flush()\nsys.stdout.buffer.write(b'raw \\xff bytes\\n')")
        .await;
    assert!(matches!(final_event(&events), EventBody::Result { .. }));
    assert_eq!(
        outputs(&events),
        vec![(
            "stdout".to_owned(),
            "bell\u{7} tab\t cr\r end\nraw \u{fffd} bytes\n".to_owned()
        )]
    );
}
