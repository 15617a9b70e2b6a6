//! `make demo` runs to completion non-interactively (CAPSULE_DEMO_EXIT=1): the devcluster and the
//! operator start, the examples apply, Python runs on the session, and everything stops cleanly.

use std::process::Command;

use capsule_e2e::{bin, free_port, workspace};

#[test]
fn the_demo_runs_python_on_a_warm_worker_and_stops_cleanly() {
    let state = tempfile::tempdir().unwrap();
    let bin_dir = bin("capsule-operator").parent().unwrap().to_path_buf();
    let out = Command::new(workspace().join("scripts/demo.sh"))
        .env("CAPSULE_DEMO_EXIT", "1")
        .env("CAPSULE_DEMO_SKIP_BUILD", "1")
        .env("CAPSULE_DEMO_BIN_DIR", &bin_dir)
        .env("CAPSULE_DEMO_STATE", state.path().join("cluster"))
        .env("CAPSULE_DEMO_PORT", free_port().to_string())
        .output()
        .expect("demo runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "demo failed:\n{stdout}\n{stderr}");
    assert!(
        stdout.contains("hello from a warm Capsule worker on Python"),
        "{stdout}"
    );
    assert!(stdout.contains("=> 42"), "{stdout}");
    assert!(stdout.contains("demo-session   Bound"), "{stdout}");
    assert!(
        stdout.contains("capsule_pool_hits_total{namespace=\"default\",pool=\"demo\"} 1"),
        "{stdout}"
    );
    assert!(stdout.contains("demo complete"), "{stdout}");
    // No process of the demo outlives it.
    let leftovers = Command::new("pgrep")
        .args(["-f", &state.path().display().to_string()])
        .output()
        .unwrap();
    assert!(
        leftovers.stdout.is_empty(),
        "processes left behind: {}",
        String::from_utf8_lossy(&leftovers.stdout)
    );
}
