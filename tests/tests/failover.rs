//! Two operator replicas with leader election on a Lease: only the leader writes status and ingests
//! heartbeats; when it is SIGKILLed the follower takes over within 15 s and status keeps moving.
//!
//! The devcluster has no kube-proxy, so a small TCP proxy in this test stands in for the heartbeat
//! Service: it forwards to the replica whose pod carries the `capsule.dev/leader=true` label, the
//! selector the chart's heartbeat Service uses. The replicas' pods are API objects bound to another
//! node (the devcluster's kubelet leaves them alone); the replicas run as processes of this test.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU16, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use capsule_e2e::{free_port, metric_samples, wait_for, DevCluster, OperatorRun, Process};

const POOL: &str = r#"
apiVersion: capsule.dev/v1alpha1
kind: CapsulePool
metadata:
  name: ha
  namespace: default
spec:
  replicas: 2
  maxWorkers: 3
  template:
    image: capsule-worker:dev
  heartbeat:
    intervalSeconds: 1
    stalenessSeconds: 6
"#;

fn replica_pod(name: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\n  namespace: default\n  labels:\n    app.kubernetes.io/name: capsule-operator\nspec:\n  nodeName: another-node\n  containers:\n  - name: operator\n    image: capsule-operator:dev\n"
    )
}

fn start_replica(
    cluster: &DevCluster,
    pod: &str,
    port: u16,
    heartbeat_port: u16,
    log: &Path,
) -> Process {
    let mut run = OperatorRun::on_port(port);
    run.heartbeat_port = Some(heartbeat_port);
    run.extra_args = vec!["--leader-election".into()];
    run.env = vec![
        ("POD_NAME".into(), pod.into()),
        ("POD_NAMESPACE".into(), "default".into()),
    ];
    let mut process = run.start(cluster, log);
    process.name = format!("capsule-operator {pod}");
    process
}

/// The value of an unlabelled-or-pool-labelled counter or gauge in a replica's /metrics, summed
/// over its series; 0 when absent.
fn metric(port: u16, name: &str) -> f64 {
    let Ok(response) = reqwest::blocking::get(format!("http://127.0.0.1:{port}/metrics")) else {
        return f64::NAN;
    };
    let text = response.text().unwrap_or_default();
    metric_samples(&text, name).map(|(_, value)| value).sum()
}

fn lease_holder(cluster: &DevCluster) -> String {
    cluster.jsonpath(
        &["lease", "capsule-operator", "-n", "default"],
        "{.spec.holderIdentity}",
    )
}

/// Forwards each connection to the port of the pod that has the leader label now.
fn start_heartbeat_service(
    cluster: &DevCluster,
    ports: HashMap<String, u16>,
    stop: Arc<AtomicBool>,
) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let target = Arc::new(AtomicU16::new(0));
    let kubeconfig = cluster.kubeconfig.clone();
    let (watch_target, watch_stop) = (target.clone(), stop.clone());
    std::thread::spawn(move || {
        while !watch_stop.load(Ordering::Relaxed) {
            let out = Command::new(capsule_e2e::tool("kubectl"))
                .args([
                    "get",
                    "pods",
                    "-n",
                    "default",
                    "-l",
                    "capsule.dev/leader=true",
                    "-o",
                    "jsonpath={.items[*].metadata.name}",
                ])
                .env("KUBECONFIG", &kubeconfig)
                .output();
            if let Ok(out) = out {
                let names = String::from_utf8_lossy(&out.stdout).into_owned();
                let port = names
                    .split_whitespace()
                    .find_map(|name| ports.get(name).copied())
                    .unwrap_or(0);
                watch_target.store(port, Ordering::Relaxed);
            }
            std::thread::sleep(Duration::from_millis(300));
        }
    });
    std::thread::spawn(move || {
        for client in listener.incoming() {
            if stop.load(Ordering::Relaxed) {
                return;
            }
            let Ok(client) = client else { continue };
            let port = target.load(Ordering::Relaxed);
            std::thread::spawn(move || {
                // No endpoint: the connection is refused, as a Service without ready endpoints does.
                let Ok(upstream) = TcpStream::connect(("127.0.0.1", port)) else {
                    return;
                };
                pipe(client, upstream);
            });
        }
    });
    port
}

fn pipe(client: TcpStream, upstream: TcpStream) {
    let (mut client_read, mut upstream_write) =
        (client.try_clone().unwrap(), upstream.try_clone().unwrap());
    let forward = std::thread::spawn(move || {
        copy(&mut client_read, &mut upstream_write);
        let _ = upstream_write.shutdown(std::net::Shutdown::Write);
    });
    let (mut upstream_read, mut client_write) = (upstream, client);
    copy(&mut upstream_read, &mut client_write);
    let _ = client_write.shutdown(std::net::Shutdown::Write);
    let _ = forward.join();
}

fn copy(from: &mut TcpStream, to: &mut TcpStream) {
    let mut buf = [0u8; 16 * 1024];
    loop {
        match from.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                if to.write_all(&buf[..n]).is_err() {
                    return;
                }
            }
        }
    }
}

fn pool_pods(cluster: &DevCluster) -> usize {
    cluster
        .kubectl(&[
            "get",
            "pods",
            "-n",
            "default",
            "-l",
            "capsule.dev/pool=ha",
            "-o",
            "name",
        ])
        .lines()
        .count()
}

#[test]
fn the_follower_takes_over_within_15_seconds_and_only_the_leader_writes() {
    let state = tempfile::tempdir().unwrap();
    let cluster = DevCluster::start_with_crds(state.path());
    cluster.apply(&replica_pod("operator-a"));
    cluster.apply(&replica_pod("operator-b"));
    let (port_a, port_b) = (free_port(), free_port());
    let ports = HashMap::from([
        ("operator-a".to_string(), port_a),
        ("operator-b".to_string(), port_b),
    ]);
    let stop = Arc::new(AtomicBool::new(false));
    let heartbeat_port = start_heartbeat_service(&cluster, ports, stop.clone());

    let log_a = state.path().join("operator-a.log");
    let mut a = start_replica(&cluster, "operator-a", port_a, heartbeat_port, &log_a);
    wait_for(
        "operator-a leads",
        Duration::from_secs(60),
        || match lease_holder(&cluster).as_str() {
            "operator-a" => Ok(()),
            other => Err(format!("holder {other:?}")),
        },
    );
    let log_b = state.path().join("operator-b.log");
    let _b = start_replica(&cluster, "operator-b", port_b, heartbeat_port, &log_b);
    wait_for("operator-b serves", Duration::from_secs(60), || {
        let leader = metric(port_b, "capsule_operator_leader");
        if leader == 0.0 {
            Ok(())
        } else {
            Err(format!("operator_leader {leader}"))
        }
    });

    cluster.apply(POOL);
    wait_for(
        "the pool's workers heartbeat through the leader",
        Duration::from_secs(120),
        || {
            let idle = cluster.jsonpath(&["cpool", "ha"], "{.status.idle}");
            let received = metric(port_a, "capsule_heartbeats_received_total");
            if idle == "2" && received >= 2.0 {
                Ok(())
            } else {
                Err(format!("idle={idle:?} heartbeats at a={received}"))
            }
        },
    );
    assert_eq!(
        cluster.jsonpath(
            &["pod", "operator-a"],
            "{.metadata.labels.capsule\\.dev/leader}"
        ),
        "true"
    );
    assert!(metric(port_a, "capsule_pool_status_writes_total") >= 1.0);
    // The follower wrote nothing and ingested nothing.
    assert_eq!(metric(port_b, "capsule_pool_status_writes_total"), 0.0);
    assert_eq!(metric(port_b, "capsule_heartbeats_received_total"), 0.0);
    assert_eq!(metric(port_b, "capsule_operator_leader"), 0.0);
    assert_eq!(metric(port_a, "capsule_operator_leader"), 1.0);

    // The leader dies without a chance to hand the lease back.
    a.child.kill().unwrap();
    let _ = a.child.wait();
    let killed = Instant::now();
    wait_for(
        "operator-b takes over",
        Duration::from_secs(40),
        || match lease_holder(&cluster).as_str() {
            "operator-b" => Ok(()),
            other => Err(format!("holder {other:?}")),
        },
    );
    let takeover = killed.elapsed();
    println!("takeover after the leader's SIGKILL: {takeover:?}");
    assert!(
        takeover <= Duration::from_secs(15),
        "the follower took {takeover:?} to take over"
    );

    // Status keeps moving under the new leader, fed by heartbeats routed to it.
    wait_for(
        "operator-b writes status and ingests heartbeats",
        Duration::from_secs(60),
        || {
            let writes = metric(port_b, "capsule_pool_status_writes_total");
            let received = metric(port_b, "capsule_heartbeats_received_total");
            let label_b = cluster.jsonpath(
                &["pod", "operator-b"],
                "{.metadata.labels.capsule\\.dev/leader}",
            );
            let label_a = cluster.jsonpath(
                &["pod", "operator-a"],
                "{.metadata.labels.capsule\\.dev/leader}",
            );
            if writes >= 1.0 && received >= 2.0 && label_b == "true" && label_a.is_empty() {
                Ok(())
            } else {
                Err(format!(
                    "writes={writes} received={received} label a={label_a:?} b={label_b:?}"
                ))
            }
        },
    );
    let first_age = cluster.jsonpath(&["cpool", "ha"], "{.status.conditions}");
    wait_for(
        "the pool stays Ready with 2 idle workers",
        Duration::from_secs(60),
        || {
            let idle = cluster.jsonpath(&["cpool", "ha"], "{.status.idle}");
            let pods = pool_pods(&cluster);
            if idle == "2" && pods == 2 {
                Ok(())
            } else {
                Err(format!("idle={idle:?} pods={pods} conditions={first_age}"))
            }
        },
    );

    // The killed replica comes back as a follower and writes nothing while operator-b leads.
    let log_a2 = state.path().join("operator-a-again.log");
    let _a2 = start_replica(&cluster, "operator-a", port_a, heartbeat_port, &log_a2);
    wait_for("operator-a serves again", Duration::from_secs(60), || {
        let leader = metric(port_a, "capsule_operator_leader");
        if leader == 0.0 {
            Ok(())
        } else {
            Err(format!("operator_leader {leader}"))
        }
    });
    let writes_before = metric(port_b, "capsule_pool_status_writes_total");
    std::thread::sleep(Duration::from_secs(5));
    assert_eq!(metric(port_a, "capsule_pool_status_writes_total"), 0.0);
    assert_eq!(metric(port_a, "capsule_heartbeats_received_total"), 0.0);
    assert_eq!(lease_holder(&cluster), "operator-b");
    assert!(metric(port_b, "capsule_pool_status_writes_total") >= writes_before);
    assert_eq!(pool_pods(&cluster), 2, "a takeover must not create pods");
    stop.store(true, Ordering::Relaxed);
}
