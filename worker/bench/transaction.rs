//! Transaction overhead (`transaction: rollbackOnError`, issue #18): the same execution with and
//! without a transaction, on a small namespace, beside 100 MB of names the code does not touch, and
//! touching a 10 MB list; plus the rollback of a failing one. Included by `capsule-worker-bench`.

use std::time::Instant;

use capsule_protocol::execute::{EventBody, ExecuteRequest, Transaction};
use serde::Serialize;

use super::{execute_request, percentile, start_worker, Args};

/// One case: the same code timed without and with a transaction, on one worker.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Case {
    pub name: &'static str,
    pub plain_p50_ms: f64,
    pub plain_p99_ms: f64,
    pub transaction_p50_ms: f64,
    pub transaction_p99_ms: f64,
    /// `transactionP50Ms - plainP50Ms`.
    pub overhead_p50_ms: f64,
}

struct Spec {
    name: &'static str,
    setup: &'static str,
    code: &'static str,
    /// The code raises: with a transaction the namespace is rolled back each time.
    fails: bool,
}

const SPECS: &[Spec] = &[
    Spec {
        name: "small",
        setup: "a = [1, 2, 3]\nb = {'k': 'v'}",
        code: "1+1",
        fails: false,
    },
    Spec {
        name: "untouched100MB",
        // Mutable values (bytearrays), so copying them would show.
        setup: "for _i in range(100):\n    globals()['blob%d' % _i] = bytearray(1024 * 1024)",
        code: "1+1",
        fails: false,
    },
    Spec {
        name: "touches10MBList",
        // 1.25 M pointers = 10 MB of list (the ints are shared small objects or not, either way).
        setup: "big = list(range(1_250_000))",
        code: "big[0] += 0",
        fails: false,
    },
    Spec {
        name: "rollback10MBList",
        setup: "big = list(range(1_250_000))",
        code: "big.append(1)\nraise ValueError('roll back')",
        fails: true,
    },
];

async fn time(
    worker: &super::WorkerProcess,
    request: &ExecuteRequest,
    n: usize,
    fails: bool,
) -> Vec<f64> {
    let mut samples = Vec::with_capacity(n);
    for _ in 0..n {
        let started = Instant::now();
        let (_, last) = execute_request(worker, request).await;
        samples.push(started.elapsed().as_secs_f64() * 1000.0);
        let ok = if fails {
            matches!(last, EventBody::Error { .. })
        } else {
            matches!(last, EventBody::Result { .. })
        };
        assert!(ok, "unexpected final event {last:?}");
    }
    samples.sort_by(f64::total_cmp);
    samples
}

/// Runs every case on a fresh worker each, `iterations` samples per side after a short warm-up.
pub async fn bench(args: &Args) -> Vec<Case> {
    let mut cases = Vec::new();
    for spec in SPECS {
        let worker = start_worker(args).await;
        let (_, setup) = execute_request(&worker, &request(spec.setup, None)).await;
        assert!(
            matches!(setup, EventBody::Result { .. }),
            "setup: {setup:?}"
        );
        let plain = request(spec.code, None);
        let txn = request(spec.code, Some(Transaction::RollbackOnError));
        let n = args.transaction_iterations;
        time(&worker, &plain, n / 10 + 1, spec.fails).await;
        time(&worker, &txn, n / 10 + 1, spec.fails).await;
        let plain = time(&worker, &plain, n, spec.fails).await;
        let txn = time(&worker, &txn, n, spec.fails).await;
        let (p50, t50) = (percentile(&plain, 0.5), percentile(&txn, 0.5));
        cases.push(Case {
            name: spec.name,
            plain_p50_ms: p50,
            plain_p99_ms: percentile(&plain, 0.99),
            transaction_p50_ms: t50,
            transaction_p99_ms: percentile(&txn, 0.99),
            overhead_p50_ms: t50 - p50,
        });
    }
    cases
}

fn request(code: &str, transaction: Option<Transaction>) -> ExecuteRequest {
    ExecuteRequest {
        code: code.into(),
        transaction,
        ..Default::default()
    }
}

pub fn print(cases: &[Case], iterations: usize) {
    println!("transactions ({iterations} samples per side): plain vs transaction: rollbackOnError");
    println!(
        "{:<18} {:>12} {:>12} {:>12} {:>12} {:>14}",
        "case", "plain p50", "plain p99", "txn p50", "txn p99", "overhead p50"
    );
    for c in cases {
        println!(
            "{:<18} {:>12.3} {:>12.3} {:>12.3} {:>12.3} {:>14.3}",
            c.name,
            c.plain_p50_ms,
            c.plain_p99_ms,
            c.transaction_p50_ms,
            c.transaction_p99_ms,
            c.overhead_p50_ms
        );
    }
}
