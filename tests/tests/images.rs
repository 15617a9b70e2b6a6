//! The images (#22): `scripts/images.sh` builds the operator, worker, sidecar and gateway images with buildah
//! from the debug binaries `make test` built and Debian bases made here from Debian packages
//! (`scripts/base-image.sh`, cached under `.tools/images`), and each entrypoint runs from its image
//! with `buildah run --isolation chroot` as the image's own user, in its declared directories:
//! `capsule-operator --help`, `capsule-gateway --help`, `capsule-worker` running `1+1` through its API after a session is
//! bound, `capsule-sidecar` answering `/healthz`. Chroot isolation shares the host's network, so
//! the test reaches the servers on 127.0.0.1. buildah is installed by `scripts/install-tools.sh`
//! (as root) or the test fails saying how to install it.

use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use capsule_e2e::images::{build_images, image, install_tools, run, script, BINARIES};
use capsule_e2e::{free_port, http};
use serde_json::{json, Value};

const USER: &str = "65532:65532";
const WORKER_TOKEN: &str = "images-test-worker-credential";
const SESSION_TOKEN: &str = "images-test-session-token";
/// sha256 of [`SESSION_TOKEN`] (`printf %s images-test-session-token | sha256sum`), as the
/// operator sends it when binding.
const SESSION_TOKEN_SHA256: &str =
    "c3449b19fd8cfc25e1712752e4a6e97ba035c07a761ac4582b451f24fb18ac8f";

fn buildah(args: &[&str]) -> String {
    let output = run(
        Command::new(script("buildah.sh")).args(args),
        &format!("buildah {}", args.join(" ")),
    );
    String::from_utf8(output.stdout).unwrap().trim().to_string()
}

/// A working container of an image, removed when dropped.
struct Container(String);

impl Container {
    fn of(image: &str) -> Container {
        Container(buildah(&["from", "--quiet", image]))
    }

    /// `buildah run` of `command` with `env`, as the image's user, in its own process group so the
    /// whole tree (buildah, the entrypoint, its children) is stopped together.
    fn spawn(&self, env: &[String], command: &[&str]) -> Group {
        let mut cmd = Command::new(script("buildah.sh"));
        cmd.args(["run", "--isolation", "chroot"]);
        for e in env {
            cmd.args(["--env", e]);
        }
        cmd.arg(&self.0).arg("--").args(command);
        cmd.stdout(Stdio::null()).process_group(0);
        Group(cmd.spawn().expect("buildah run"))
    }

    /// The image's OCI config (User, WorkingDir, Labels, ...).
    fn config(&self) -> Value {
        let inspect: Value = serde_json::from_str(&buildah(&["inspect", &self.0])).unwrap();
        inspect["OCIv1"]["config"].clone()
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        let _ = Command::new(script("buildah.sh"))
            .args(["rm", &self.0])
            .output();
    }
}

/// A process group, SIGTERMed then SIGKILLed when dropped.
struct Group(Child);

impl Drop for Group {
    fn drop(&mut self) {
        let pgid = self.0.id() as i32;
        unsafe { libc::kill(-pgid, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline && matches!(self.0.try_wait(), Ok(None)) {
            std::thread::sleep(Duration::from_millis(50));
        }
        unsafe { libc::kill(-pgid, libc::SIGKILL) };
        let _ = self.0.wait();
    }
}

/// Waits until `url` answers 200, failing if the process exits or 60 s pass.
fn wait_healthy(process: &mut Group, url: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(response) = http().get(url).send() {
            if response.status() == 200 {
                return;
            }
        }
        if let Ok(Some(status)) = process.0.try_wait() {
            panic!("the process serving {url} exited: {status}");
        }
        assert!(
            Instant::now() < deadline,
            "{url} did not answer 200 in 60 s"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The image's user, working directory and OCI labels are what docker/README.md promises.
fn check_config(container: &Container, title: &str, workdir: &str) {
    let config = container.config();
    assert_eq!(config["User"], USER);
    assert_eq!(config["WorkingDir"], workdir);
    let label = |key: &str| config["Labels"][format!("org.opencontainers.image.{key}")].clone();
    assert_eq!(label("title"), title);
    assert_eq!(label("version"), env!("CARGO_PKG_VERSION"));
    let revision = label("revision");
    let revision = revision.as_str().expect("a revision label");
    assert!(
        revision.len() == 40 || revision == "unknown",
        "revision: {revision}"
    );
    assert!(label("source")
        .as_str()
        .is_some_and(|s| s.starts_with("http")));
}

/// `name --help` from its image (the operator and the gateway need an API server to do more).
fn help_runs(name: &str) {
    let container = Container::of(&image(name));
    check_config(&container, name, "/home/nonroot");
    let binary = format!("/usr/local/bin/{name}");
    let output = run(
        Command::new(script("buildah.sh")).args([
            "run",
            "--isolation",
            "chroot",
            &container.0,
            "--",
            &binary,
            "--help",
        ]),
        &format!("{name} --help in its image"),
    );
    let help = String::from_utf8_lossy(&output.stdout);
    assert!(help.contains(&format!("Usage: {name}")), "{help}");
}

fn sidecar_healthz() {
    let container = Container::of(&image("capsule-sidecar"));
    check_config(&container, "capsule-sidecar", "/home/nonroot");
    let port = free_port();
    let env = [
        format!("CAPSULE_LISTEN_ADDR=127.0.0.1:{port}"),
        format!("CAPSULE_WORKER_TOKEN={WORKER_TOKEN}"),
    ];
    // Its trace socket goes to the image's /var/run/capsule: the user must be able to write there.
    let mut sidecar = container.spawn(&env, &["/usr/local/bin/capsule-sidecar"]);
    let url = format!("http://127.0.0.1:{port}/healthz");
    wait_healthy(&mut sidecar, &url);
    assert_eq!(http().get(&url).send().unwrap().text().unwrap(), "ok");
}

/// Posts `code` to the worker's execute API and returns its result's repr.
fn execute(base: &str, code: &str) -> String {
    let response = http()
        .post(format!("{base}/v1/executions"))
        .bearer_auth(SESSION_TOKEN)
        .json(&json!({"code": code, "timeoutMs": 20_000}))
        .send()
        .unwrap();
    assert_eq!(response.status(), 200, "execute {code}");
    let body = response.text().unwrap();
    let events: Vec<Value> = body
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let result = events
        .iter()
        .find(|e| e["type"] == "result")
        .unwrap_or_else(|| panic!("no result event for {code}: {body}"));
    result["repr"]
        .as_str()
        .unwrap_or_else(|| panic!("{result}"))
        .to_string()
}

fn worker_runs_code() {
    let container = Container::of(&image("capsule-worker"));
    check_config(&container, "capsule-worker", "/home/capsule");
    let port = free_port();
    let env = [
        format!("CAPSULE_LISTEN_ADDR=127.0.0.1:{port}"),
        format!("CAPSULE_WORKER_TOKEN={WORKER_TOKEN}"),
    ];
    let mut worker = container.spawn(&env, &["/usr/local/bin/capsule-worker"]);
    let base = format!("http://127.0.0.1:{port}");
    wait_healthy(&mut worker, &format!("{base}/readyz"));
    let bind = http()
        .put(format!("{base}/v1/session"))
        .bearer_auth(WORKER_TOKEN)
        .json(&json!({"session": "s", "namespace": "default", "tokenSha256": SESSION_TOKEN_SHA256}))
        .send()
        .unwrap();
    assert_eq!(bind.status(), 204, "bind: {:?}", bind.text());
    assert_eq!(execute(&base, "1+1"), "2");
    // The interpreter runs as the image's user, in a folder of the image's scratch directory's
    // `sessions/`.
    // (/var/run is a link to /run in Debian, so the folder is compared resolved; the worker keeps
    // CAPSULE_* variables out of the interpreter, so the path is written out.)
    let whoami = execute(
        &base,
        "import os\n(os.getuid(), os.getgid(), \
         os.path.dirname(os.getcwd()) == os.path.realpath('/var/run/capsule-scratch/sessions'))",
    );
    assert_eq!(whoami, "(65532, 65532, True)");
}

#[test]
fn images_build_and_their_entrypoints_run() {
    install_tools();
    let started = Instant::now();
    let report = build_images();
    eprintln!("{report}built in {:?}", started.elapsed());
    for name in BINARIES {
        let line = report
            .lines()
            .find(|l| l.trim_start().starts_with(&image(name)))
            .unwrap_or_else(|| panic!("no size reported for {name}: {report}"));
        assert!(line.contains("MB") || line.contains("kB"), "{line}");
    }
    help_runs("capsule-operator");
    help_runs("capsule-gateway");
    sidecar_healthz();
    worker_runs_code();
    eprintln!("images test took {:?}", started.elapsed());
}
