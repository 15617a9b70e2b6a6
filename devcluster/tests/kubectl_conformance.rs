//! The devcluster driven by a real `kubectl`, the way a user or the Helm chart drives a cluster.

mod common;

use common::{fixture, TestCluster, WAIT};
use tokio::io::{AsyncBufReadExt, BufReader};

const WIDGET_CRD: &str = "widget-crd.yaml";

fn widget(name: &str, body: &str) -> String {
    format!("apiVersion: test.capsule.dev/v1\nkind: Widget\nmetadata:\n  name: {name}\n{body}")
}

async fn with_widgets(label: &str) -> TestCluster {
    let t = TestCluster::start(label).await;
    let crd = fixture(WIDGET_CRD);
    let out = t.ok(&["apply", "-f", crd.to_str().unwrap()]).await;
    assert!(
        out.contains(
            "customresourcedefinition.apiextensions.k8s.io/widgets.test.capsule.dev created"
        ),
        "{out}"
    );
    t
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crd_then_custom_resource_with_printer_columns_explain_status_and_scale() {
    let t = with_widgets("crd").await;
    let out = t
        .apply(
            &widget("w1", "  labels: {tier: front}\nspec:\n  size: 3\n"),
            &[],
        )
        .await;
    assert!(out.success, "{}", out.stderr);
    assert!(
        out.stdout.contains("widget.test.capsule.dev/w1 created"),
        "{}",
        out.stdout
    );

    let table = t.ok(&["get", "widgets"]).await;
    let header: Vec<&str> = table.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(header, ["NAME", "SIZE", "PHASE", "AGE"], "{table}");
    assert!(table.lines().nth(1).unwrap().starts_with("w1 "), "{table}");

    // Defaults from the schema were applied on write.
    let max = t
        .ok(&["get", "wdg", "w1", "-o", "jsonpath={.spec.maxSize}"])
        .await;
    assert_eq!(max, "100");

    let explained = t.ok(&["explain", "widget.spec"]).await;
    assert!(
        explained.contains("What the widget should be."),
        "{explained}"
    );
    assert!(explained.contains("How big the widget is."), "{explained}");

    t.ok(&[
        "patch",
        "widget",
        "w1",
        "--subresource=status",
        "--type=merge",
        "-p",
        r#"{"status":{"phase":"Ready"},"spec":{"size":9}}"#,
    ])
    .await;
    let state = t
        .ok(&[
            "get",
            "widget",
            "w1",
            "-o",
            "jsonpath={.status.phase} {.spec.size} {.metadata.generation}",
        ])
        .await;
    assert_eq!(
        state, "Ready 3 1",
        "a status write changes status only, and not generation"
    );
    let row = t.ok(&["get", "widget", "w1", "--no-headers"]).await;
    assert!(
        row.split_whitespace().collect::<Vec<_>>()[..3] == ["w1", "3", "Ready"],
        "{row}"
    );

    t.ok(&[
        "patch",
        "widget",
        "w1",
        "--type=merge",
        "-p",
        r#"{"spec":{"size":4},"status":{"phase":"Lost"}}"#,
    ])
    .await;
    let state = t
        .ok(&[
            "get",
            "widget",
            "w1",
            "-o",
            "jsonpath={.status.phase} {.spec.size} {.metadata.generation}",
        ])
        .await;
    assert_eq!(
        state, "Ready 4 2",
        "a spec write changes spec only, and moves generation"
    );

    let scaled = t.ok(&["scale", "widget", "w1", "--replicas=5"]).await;
    assert!(scaled.contains("scaled"), "{scaled}");
    let replicas = t
        .ok(&["get", "widget", "w1", "-o", "jsonpath={.spec.replicas}"])
        .await;
    assert_eq!(replicas, "5");
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_watch_sees_changes() {
    let t = with_widgets("watch").await;
    assert!(
        t.apply(&widget("w1", "spec:\n  size: 3\n"), &[])
            .await
            .success
    );
    let mut child = t
        .kubectl_command(&[
            "get",
            "widget",
            "w1",
            "-w",
            "-o",
            "jsonpath={.spec.size}{\"\\n\"}",
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("kubectl get -w runs");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let first = tokio::time::timeout(WAIT, lines.next_line())
        .await
        .expect("first line")
        .unwrap();
    assert_eq!(first.as_deref(), Some("3"));
    t.ok(&[
        "patch",
        "widget",
        "w1",
        "--type=merge",
        "-p",
        r#"{"spec":{"size":7}}"#,
    ])
    .await;
    let next = tokio::time::timeout(WAIT, lines.next_line())
        .await
        .expect("watch event")
        .unwrap();
    assert_eq!(next.as_deref(), Some("7"));
    child.kill().await.ok();
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_side_apply_conflicts_between_field_managers() {
    let t = with_widgets("ssa").await;
    let alice = t
        .apply(
            &widget("w2", "spec:\n  size: 5\n"),
            &["--server-side", "--field-manager=alice"],
        )
        .await;
    assert!(alice.success, "{}", alice.stderr);
    let bob = t
        .apply(
            &widget("w2", "spec:\n  size: 6\n"),
            &["--server-side", "--field-manager=bob"],
        )
        .await;
    assert!(!bob.success);
    assert!(
        bob.stderr
            .contains("Apply failed with 1 conflict: conflict with \"alice\": .spec.size"),
        "{}",
        bob.stderr
    );
    let forced = t
        .apply(
            &widget("w2", "spec:\n  size: 6\n"),
            &["--server-side", "--field-manager=bob", "--force-conflicts"],
        )
        .await;
    assert!(forced.success, "{}", forced.stderr);
    let managers = t
        .ok(&[
            "get",
            "widget",
            "w2",
            "--show-managed-fields",
            "-o",
            "jsonpath={.spec.size} {.metadata.managedFields[*].manager}",
        ])
        .await;
    assert_eq!(
        managers, "6 bob",
        "bob took .spec.size, alice owned nothing else"
    );
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_update_is_a_409_conflict() {
    let t = with_widgets("stale").await;
    assert!(
        t.apply(&widget("w1", "spec:\n  size: 3\n"), &[])
            .await
            .success
    );
    let stale = t.ok(&["get", "widget", "w1", "-o", "json"]).await;
    t.ok(&[
        "patch",
        "widget",
        "w1",
        "--type=merge",
        "-p",
        r#"{"spec":{"size":4}}"#,
    ])
    .await;
    let out = t.kubectl_in(&["replace", "-f", "-"], Some(&stale)).await;
    assert!(!out.success);
    assert!(
        out.stderr.contains("Operation cannot be fulfilled on widgets.test.capsule.dev \"w1\": the object has been modified; please apply your changes to the latest version and try again"),
        "{}",
        out.stderr
    );
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn label_selectors_filter_lists() {
    let t = TestCluster::start("labels").await;
    for (name, tier) in [("a", "front"), ("b", "back"), ("c", "front")] {
        let yaml = format!("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {name}\n  labels: {{tier: {tier}}}\ndata: {{k: v}}\n");
        assert!(t.apply(&yaml, &[]).await.success);
    }
    assert_eq!(
        t.ok(&["get", "cm", "-l", "tier=front", "-o", "name"]).await,
        "configmap/a\nconfigmap/c\n"
    );
    assert_eq!(
        t.ok(&["get", "cm", "-l", "tier notin (front)", "-o", "name"])
            .await,
        "configmap/b\n"
    );
    assert_eq!(
        t.ok(&[
            "get",
            "cm",
            "--field-selector",
            "metadata.name=b",
            "-o",
            "name"
        ])
        .await,
        "configmap/b\n"
    );
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_waits_for_finalizers() {
    let t = with_widgets("finalizers").await;
    let yaml = widget(
        "held",
        "  finalizers: [test.capsule.dev/hold]\nspec:\n  size: 1\n",
    );
    assert!(t.apply(&yaml, &[]).await.success);
    t.ok(&["delete", "widget", "held", "--wait=false"]).await;
    let deleting = t
        .ok(&[
            "get",
            "widget",
            "held",
            "-o",
            "jsonpath={.metadata.deletionTimestamp}",
        ])
        .await;
    assert!(
        !deleting.is_empty(),
        "deletionTimestamp is set while the finalizer is pending"
    );
    t.ok(&[
        "patch",
        "widget",
        "held",
        "--type=merge",
        "-p",
        r#"{"metadata":{"finalizers":null}}"#,
    ])
    .await;
    let gone = t.kubectl(&["get", "widget", "held"]).await;
    assert!(
        !gone.success && gone.stderr.contains("NotFound"),
        "{}",
        gone.stderr
    );
    t.stop().await;
}

async fn uid_of(t: &TestCluster, kind: &str, name: &str) -> String {
    t.ok(&["get", kind, name, "-o", "jsonpath={.metadata.uid}"])
        .await
}

fn owned_config_map(name: &str, owner: &str, owner_uid: &str) -> String {
    format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {name}\n  ownerReferences:\n  - apiVersion: v1\n    kind: ConfigMap\n    name: {owner}\n    uid: {owner_uid}\n    blockOwnerDeletion: true\ndata: {{k: v}}\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn owner_references_are_garbage_collected_in_background_and_foreground() {
    let t = TestCluster::start("gc").await;
    for owner in ["parent", "fore"] {
        assert!(
            t.apply(
                &format!("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {owner}\n"),
                &[]
            )
            .await
            .success
        );
        let uid = uid_of(&t, "cm", owner).await;
        assert!(
            t.apply(
                &owned_config_map(&format!("{owner}-child"), owner, &uid),
                &[]
            )
            .await
            .success
        );
    }
    t.ok(&["delete", "cm", "parent"]).await;
    t.eventually("the background dependent to go", || async {
        !t.kubectl(&["get", "cm", "parent-child"]).await.success
    })
    .await;

    t.ok(&[
        "delete",
        "cm",
        "fore",
        "--cascade=foreground",
        "--wait=true",
        "--timeout=30s",
    ])
    .await;
    assert!(
        !t.kubectl(&["get", "cm", "fore-child"]).await.success,
        "foreground deletion removed the dependent first"
    );
    assert!(!t.kubectl(&["get", "cm", "fore"]).await.success);
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_custom_resources_are_rejected_with_the_real_servers_wording() {
    let t = with_widgets("invalid").await;
    let cel = t.apply(&widget("bad", "spec:\n  size: 300\n"), &[]).await;
    assert!(!cel.success);
    assert!(cel.stderr.contains("The Widget \"bad\" is invalid: spec: Invalid value: \"object\": size must not exceed maxSize"), "{}", cel.stderr);
    let schema = t
        .apply(&widget("bad", "spec:\n  size: \"x\"\n  color: pink\n"), &[])
        .await;
    assert!(!schema.success);
    assert!(schema.stderr.contains("* spec.color: Unsupported value: \"pink\": supported values: \"red\", \"green\", \"blue\""), "{}", schema.stderr);
    assert!(schema.stderr.contains("* spec.size: Invalid value: \"string\": spec.size in body must be of type integer: \"string\""), "{}", schema.stderr);
    let unknown = t
        .apply(&widget("bad", "spec:\n  size: 1\n  bogus: 1\n"), &[])
        .await;
    assert!(
        unknown
            .stderr
            .contains("strict decoding error: unknown field \"spec.bogus\""),
        "{}",
        unknown.stderr
    );
    let missing = t.apply(&widget("bad", "spec:\n  color: red\n"), &[]).await;
    assert!(
        missing.stderr.contains("spec.size: Required value"),
        "{}",
        missing.stderr
    );
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn capsule_crds_apply_cleanly_and_explain() {
    let crds =
        std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../crds/capsule.dev_crds.yaml");
    assert!(
        crds.exists(),
        "the project's CRDs are generated into {}",
        crds.display()
    );
    let t = TestCluster::start("capsule-crds").await;
    let out = t.ok(&["apply", "-f", crds.to_str().unwrap()]).await;
    assert!(out.contains("capsulepools.capsule.dev created"), "{out}");
    // kubectl's discovery cache predates the CRDs; `get` refreshes it (explain alone does not).
    t.ok(&["get", "cpool"]).await;
    let explained = t.ok(&["explain", "cpool.spec"]).await;
    assert!(explained.contains("KIND:       CapsulePool"), "{explained}");
    assert!(explained.contains("FIELDS:"), "{explained}");
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn imperative_commands_that_send_protobuf_work() {
    let t = TestCluster::start("imperative").await;
    t.ok(&["create", "configmap", "c1", "--from-literal=a=b"])
        .await;
    assert_eq!(
        t.ok(&["get", "cm", "c1", "-o", "jsonpath={.data.a}"]).await,
        "b"
    );
    t.ok(&[
        "create",
        "secret",
        "generic",
        "s1",
        "--from-literal=pw=hunter2",
    ])
    .await;
    assert_eq!(
        t.ok(&["get", "secret", "s1", "-o", "jsonpath={.data.pw}"])
            .await,
        "aHVudGVyMg=="
    );
    t.ok(&["create", "namespace", "team-a"]).await;
    assert!(t
        .ok(&["get", "sa", "default", "-n", "team-a", "-o", "name"])
        .await
        .contains("serviceaccount/default"));
    t.ok(&["create", "serviceaccount", "robot"]).await;
    let token = t.ok(&["create", "token", "robot"]).await;
    assert_eq!(token.trim().len(), 64, "{token}");
    assert_eq!(t.ok(&["auth", "can-i", "list", "pods"]).await.trim(), "yes");
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crd_with_a_broken_cel_rule_is_rejected() {
    let t = TestCluster::start("bad-crd").await;
    let crd = std::fs::read_to_string(fixture(WIDGET_CRD))
        .unwrap()
        .replace("self.size <= self.maxSize", "self.size <=");
    let out = t.apply(&crd, &[]).await;
    assert!(!out.success);
    assert!(
        out.stderr
            .contains("The CustomResourceDefinition \"widgets.test.capsule.dev\" is invalid"),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr.contains(
            "x-kubernetes-validations[0].rule: Invalid value: \"self.size <=\": compilation failed"
        ),
        "{}",
        out.stderr
    );
    t.stop().await;
}
