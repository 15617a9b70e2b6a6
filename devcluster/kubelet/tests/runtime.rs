//! The process runtime with real processes: spawn, logs, probes, restarts, grace-period stop.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use capsule_kubelet::runtime::{
    Backoff, ContainerHandle, ContainerLaunch, ContainerSnapshot, ProbeAction, ProbeSpec,
    ProcessSecurity, ProcessSpec, Reaper, RestartPolicy, RunState,
};
use tokio::sync::Notify;

const WAIT: Duration = Duration::from_secs(30);

fn launch(dir: &Path, script: &str, policy: RestartPolicy) -> ContainerLaunch {
    ContainerLaunch {
        name: "main".into(),
        process: ProcessSpec {
            argv: vec!["sh".into(), "-c".into(), script.into()],
            env: vec![("GREETING".into(), "hello".into())],
            working_dir: dir.join("work"),
            security: Default::default(),
            sandbox: None,
        },
        log_dir: dir.to_path_buf(),
        max_log_bytes: 1024 * 1024,
        startup_probe: None,
        liveness_probe: None,
        readiness_probe: None,
        restart_policy: policy,
        termination_grace: Duration::from_secs(5),
        backoff: Backoff {
            initial: Duration::from_millis(100),
            max: Duration::from_millis(400),
        },
        initial_restart_count: 0,
    }
}

fn quick_probe(action: ProbeAction) -> ProbeSpec {
    ProbeSpec {
        period: Duration::from_millis(100),
        failure_threshold: 2,
        timeout: Duration::from_secs(5),
        ..ProbeSpec::new(action)
    }
}

async fn wait_for(
    handle: &ContainerHandle,
    what: &str,
    mut condition: impl FnMut(&ContainerSnapshot) -> bool,
) -> ContainerSnapshot {
    let mut updates = handle.subscribe();
    let waited = tokio::time::timeout(WAIT, async {
        loop {
            let snapshot = updates.borrow_and_update().clone();
            if condition(&snapshot) {
                return snapshot;
            }
            if updates.changed().await.is_err() {
                return updates.borrow().clone();
            }
        }
    })
    .await;
    let snapshot =
        waited.unwrap_or_else(|_| panic!("timed out waiting for {what}: {:?}", handle.snapshot()));
    assert!(condition(&snapshot), "{what} never happened: {snapshot:?}");
    snapshot
}

fn process_alive(pid: i32) -> bool {
    // A zombie is dead for our purposes.
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .split_whitespace()
            .nth(2)
            .is_none_or(|state| state != "Z"),
        Err(_) => false,
    }
}

#[tokio::test]
async fn output_goes_to_the_log_and_a_clean_exit_completes() {
    let dir = tempfile::tempdir().unwrap();
    let reaper = Reaper::start().unwrap();
    let handle = ContainerHandle::start(
        launch(
            dir.path(),
            "echo \"$GREETING out\"; echo err >&2; pwd",
            RestartPolicy::Never,
        ),
        reaper,
        Arc::new(Notify::new()),
        None,
    );
    let done = wait_for(&handle, "completion", |s| {
        matches!(s.state, RunState::Terminated(_))
    })
    .await;
    let RunState::Terminated(terminated) = done.state else {
        unreachable!()
    };
    assert_eq!(
        (terminated.exit_code, terminated.reason.as_str()),
        (0, "Completed")
    );
    let log = std::fs::read_to_string(dir.path().join("main.log")).unwrap();
    // stdout and stderr share one stream, in the order they were written.
    let expected = format!("hello out\nerr\n{}\n", dir.path().join("work").display());
    assert_eq!(log, expected);
}

#[tokio::test]
async fn crashes_restart_with_a_rising_count_and_keep_the_last_state() {
    let dir = tempfile::tempdir().unwrap();
    let handle = ContainerHandle::start(
        launch(dir.path(), "echo run; exit 3", RestartPolicy::Always),
        Reaper::start().unwrap(),
        Arc::new(Notify::new()),
        None,
    );
    let snapshot = wait_for(&handle, "three restarts", |s| s.restart_count >= 3).await;
    let last = snapshot.last_terminated.expect("last state after a crash");
    assert_eq!((last.exit_code, last.reason.as_str()), (3, "Error"));
    assert!(dir.path().join("main.previous.log").exists());
    handle.stop(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn on_failure_does_not_restart_a_success() {
    let dir = tempfile::tempdir().unwrap();
    let handle = ContainerHandle::start(
        launch(dir.path(), "exit 0", RestartPolicy::OnFailure),
        Reaper::start().unwrap(),
        Arc::new(Notify::new()),
        None,
    );
    let done = wait_for(&handle, "completion", |s| {
        s.is_finished(RestartPolicy::OnFailure)
    })
    .await;
    assert_eq!(done.restart_count, 0);
}

#[tokio::test]
async fn readiness_follows_an_exec_probe() {
    let dir = tempfile::tempdir().unwrap();
    let mut container = launch(
        dir.path(),
        "sleep 0.5; touch ready; exec sleep 60",
        RestartPolicy::Always,
    );
    container.readiness_probe = Some(quick_probe(ProbeAction::Exec {
        argv: vec!["test".into(), "-f".into(), "ready".into()],
    }));
    let handle = ContainerHandle::start(
        container,
        Reaper::start().unwrap(),
        Arc::new(Notify::new()),
        None,
    );
    let running = wait_for(&handle, "running", |s| {
        matches!(s.state, RunState::Running { .. })
    })
    .await;
    assert!(!running.ready, "ready before the probe passed");
    wait_for(&handle, "ready", |s| s.ready).await;
    std::fs::remove_file(dir.path().join("work/ready")).unwrap();
    wait_for(&handle, "not ready again", |s| !s.ready).await;
    handle.stop(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn readiness_follows_an_http_probe() {
    let dir = tempfile::tempdir().unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    // The probe's target is served by the test, and only after a while: readiness must wait for it.
    let mut container = launch(dir.path(), "exec sleep 60", RestartPolicy::Always);
    container.readiness_probe = Some(quick_probe(ProbeAction::HttpGet {
        host: "127.0.0.1".into(),
        port,
        path: "/healthz".into(),
        headers: vec![],
    }));
    let handle = ContainerHandle::start(
        container,
        Reaper::start().unwrap(),
        Arc::new(Notify::new()),
        None,
    );
    wait_for(&handle, "running", |s| {
        matches!(s.state, RunState::Running { .. })
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!handle.snapshot().ready, "ready with nothing listening");
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .unwrap();
    let server = tokio::spawn(async move {
        loop {
            let (mut stream, _) = listener.accept().await.unwrap();
            tokio::spawn(async move {
                use tokio::io::{AsyncReadExt, AsyncWriteExt};
                let mut buffer = [0u8; 1024];
                let _ = stream.read(&mut buffer).await;
                let _ = stream
                    .write_all(
                        b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok",
                    )
                    .await;
            });
        }
    });
    wait_for(&handle, "ready", |s| s.ready).await;
    server.abort();
    handle.stop(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn a_failing_liveness_probe_restarts_the_container() {
    let dir = tempfile::tempdir().unwrap();
    let mut container = launch(dir.path(), "exec sleep 60", RestartPolicy::Always);
    container.termination_grace = Duration::from_secs(1);
    container.liveness_probe = Some(quick_probe(ProbeAction::TcpSocket {
        host: "127.0.0.1".into(),
        port: 1,
    }));
    let handle = ContainerHandle::start(
        container,
        Reaper::start().unwrap(),
        Arc::new(Notify::new()),
        None,
    );
    let snapshot = wait_for(&handle, "a restart", |s| s.restart_count >= 1).await;
    let last = snapshot.last_terminated.unwrap();
    assert!(last
        .message
        .unwrap_or_default()
        .contains("Liveness probe failed"));
    handle.stop(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn stop_sends_sigterm_and_waits_for_a_graceful_exit() {
    let dir = tempfile::tempdir().unwrap();
    let script = "trap 'echo got-term; exit 7' TERM; while true; do sleep 0.1; done";
    let handle = ContainerHandle::start(
        launch(dir.path(), script, RestartPolicy::Always),
        Reaper::start().unwrap(),
        Arc::new(Notify::new()),
        None,
    );
    wait_for(&handle, "running", |s| {
        matches!(s.state, RunState::Running { .. })
    })
    .await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let last = handle.stop(Duration::from_secs(20)).await;
    let RunState::Terminated(terminated) = last.state else {
        panic!("{last:?}")
    };
    assert_eq!(terminated.exit_code, 7);
    let log = std::fs::read_to_string(dir.path().join("main.log")).unwrap();
    assert!(log.contains("got-term"), "{log}");
}

#[tokio::test]
async fn stop_kills_a_process_that_ignores_sigterm_after_the_grace_period() {
    let dir = tempfile::tempdir().unwrap();
    let script = "trap '' TERM; echo $$ > pid; sleep 60 & echo $! > child; wait";
    let handle = ContainerHandle::start(
        launch(dir.path(), script, RestartPolicy::Always),
        Reaper::start().unwrap(),
        Arc::new(Notify::new()),
        None,
    );
    wait_for(&handle, "running", |s| {
        matches!(s.state, RunState::Running { .. })
    })
    .await;
    let child_file = dir.path().join("work/child");
    tokio::time::timeout(WAIT, async {
        while std::fs::read_to_string(&child_file)
            .map(|s| s.trim().is_empty())
            .unwrap_or(true)
        {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("container wrote its child's pid");
    let child: i32 = std::fs::read_to_string(&child_file)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let started = std::time::Instant::now();
    let last = handle.stop(Duration::from_millis(500)).await;
    assert!(
        started.elapsed() >= Duration::from_millis(500),
        "killed before the grace period"
    );
    let RunState::Terminated(terminated) = last.state else {
        panic!("{last:?}")
    };
    assert_eq!(terminated.signal, Some(9));
    assert_eq!(terminated.exit_code, 137);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        !process_alive(child),
        "the container's background child outlived it"
    );
}

#[tokio::test]
async fn a_missing_executable_is_a_start_error_that_backs_off() {
    let dir = tempfile::tempdir().unwrap();
    let mut container = launch(dir.path(), "", RestartPolicy::Always);
    container.process.argv = vec!["/nonexistent/capsule-binary".into()];
    let handle = ContainerHandle::start(
        container,
        Reaper::start().unwrap(),
        Arc::new(Notify::new()),
        None,
    );
    let snapshot = wait_for(&handle, "a failed restart", |s| s.restart_count >= 1).await;
    assert_eq!(snapshot.last_terminated.unwrap().reason, "StartError");
    handle.stop(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn the_watchdog_kills_the_groups_it_still_knows_when_its_pipe_closes() {
    let reaper = Reaper::start().unwrap();
    let spawn_group = || {
        std::process::Command::new("sh")
            .args(["-c", "sleep 60 & wait"])
            .process_group(0)
            .spawn()
            .unwrap()
    };
    use std::os::unix::process::CommandExt;
    let mut known = spawn_group();
    let mut forgotten = spawn_group();
    reaper.watch_group(known.id() as i32).await;
    reaper.watch_group(forgotten.id() as i32).await;
    reaper.forget_group(forgotten.id() as i32).await;
    reaper.shutdown().await;
    let status = tokio::task::spawn_blocking(move || known.wait().unwrap())
        .await
        .unwrap();
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(status.signal(), Some(9), "the known group was not killed");
    assert!(
        forgotten.try_wait().unwrap().is_none(),
        "a forgotten group was killed"
    );
    forgotten.kill().unwrap();
    forgotten.wait().unwrap();
}

#[tokio::test]
async fn run_as_user_and_no_privilege_escalation_hold_for_the_process() {
    assert_eq!(
        unsafe { libc::geteuid() },
        0,
        "the kubelet drops privileges only when it has them: run the tests as root (CI does)"
    );
    let dir = tempfile::tempdir().unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let mut spec = launch(
        dir.path(),
        "id -u; id -g; id -G; grep NoNewPrivs /proc/self/status",
        RestartPolicy::Never,
    );
    spec.process.security = ProcessSecurity {
        user: Some((65534, 65533)),
        no_new_privileges: true,
    };
    let handle = ContainerHandle::start(
        spec,
        Reaper::start().unwrap(),
        Arc::new(Notify::new()),
        None,
    );
    wait_for(&handle, "completion", |s| {
        matches!(s.state, RunState::Terminated(_))
    })
    .await;
    let log = std::fs::read_to_string(dir.path().join("main.log")).unwrap();
    assert_eq!(log, "65534\n65533\n65533\nNoNewPrivs:\t1\n");
}
