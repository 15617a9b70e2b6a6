//! kube-rs clients against the devcluster: `watcher` and `Controller` without relists, 410 Gone for
//! compacted versions, the TokenRequest / TokenReview / SubjectAccessReview APIs with RBAC, and
//! `pods/log` served from the kubelet's log files.

mod common;

use common::{TestCluster, WAIT};
use futures::StreamExt;
use k8s_openapi::api::authentication::v1::{
    TokenRequest, TokenRequestSpec, TokenReview, TokenReviewSpec,
};
use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec,
};
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Secret, ServiceAccount};
use k8s_openapi::api::rbac::v1::{PolicyRule, Role, RoleBinding, RoleRef, Subject};
use kube::api::{
    Api, ListParams, LogParams, Patch, PatchParams, PostParams, WatchEvent, WatchParams,
};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::watcher;
use serde_json::json;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

fn config_map(name: &str) -> ConfigMap {
    serde_json::from_value(json!({"metadata": {"name": name}, "data": {"n": "0"}})).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watcher_and_controller_run_without_relists() {
    let t = TestCluster::start("relist").await;
    let client = t.cluster.client().await.unwrap();
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    // Short server-side timeouts make both clients re-watch several times during the test.
    let config = watcher::Config::default().timeout(2);

    let reconciled = Arc::new(AtomicUsize::new(0));
    let counter = reconciled.clone();
    let controller_api = api.clone();
    let controller = tokio::spawn(
        Controller::new(api.clone(), config.clone())
            .run(
                move |cm: Arc<ConfigMap>, _ctx: Arc<()>| {
                    let api = controller_api.clone();
                    let counter = counter.clone();
                    async move {
                        counter.fetch_add(1, Ordering::Relaxed);
                        let name = cm.metadata.name.clone().unwrap_or_default();
                        let patch = json!({"metadata": {"annotations": {"seen": "yes"}}});
                        api.patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                            .await?;
                        Ok::<_, kube::Error>(Action::await_change())
                    }
                },
                |_cm, _error: &kube::Error, _ctx| Action::requeue(Duration::from_secs(1)),
                Arc::new(()),
            )
            .for_each(|_| async {}),
    );
    let events = Arc::new(AtomicUsize::new(0));
    let seen = events.clone();
    let plain_watcher = tokio::spawn(watcher(api.clone(), config).for_each(move |event| {
        if event.is_ok() {
            seen.fetch_add(1, Ordering::Relaxed);
        }
        async {}
    }));

    for i in 0..5 {
        api.create(&PostParams::default(), &config_map(&format!("cm-{i}")))
            .await
            .unwrap();
    }
    // Keep changing objects across several watch timeouts.
    for round in 1..=4 {
        tokio::time::sleep(Duration::from_millis(1500)).await;
        for i in 0..5 {
            let patch = json!({"data": {"n": round.to_string()}});
            api.patch(
                &format!("cm-{i}"),
                &PatchParams::default(),
                &Patch::Merge(&patch),
            )
            .await
            .unwrap();
        }
    }
    let own_lists = Arc::new(AtomicUsize::new(0));
    t.eventually("every object to be reconciled", || {
        let api = api.clone();
        let own_lists = own_lists.clone();
        async move {
            own_lists.fetch_add(1, Ordering::Relaxed);
            let list = api.list(&ListParams::default()).await.unwrap();
            list.items.len() == 5
                && list.items.iter().all(|cm| {
                    cm.metadata
                        .annotations
                        .as_ref()
                        .is_some_and(|a| a.contains_key("seen"))
                })
        }
    })
    .await;
    // Let both clients pass at least one more watch timeout after the last change.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let (lists, watches, _) = t.cluster.request_counts();
    controller.abort();
    plain_watcher.abort();
    assert!(reconciled.load(Ordering::Relaxed) >= 5);
    assert!(events.load(Ordering::Relaxed) > 5);
    assert!(
        watches >= 4,
        "both clients re-watched after timeouts ({watches} watches)"
    );
    let own = own_lists.load(Ordering::Relaxed) as u64;
    assert_eq!(
        lists,
        2 + own,
        "one initial list per client (controller, plain watcher), none after"
    );
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_relist_across_watch_restarts_counted_exactly() {
    let t = TestCluster::start("relist-exact").await;
    let client = t.cluster.client().await.unwrap();
    let api: Api<ConfigMap> = Api::namespaced(client, "default");
    let events = Arc::new(AtomicUsize::new(0));
    let seen = events.clone();
    let stream =
        watcher(api.clone(), watcher::Config::default().timeout(1)).for_each(move |event| {
            // Under load the initial list can come after the first create: that object then
            // arrives as InitApply, not Apply; either way the watcher has seen it.
            if let Ok(watcher::Event::Apply(_) | watcher::Event::InitApply(_)) = event {
                seen.fetch_add(1, Ordering::Relaxed);
            }
            async {}
        });
    let handle = tokio::spawn(stream);
    for i in 0..3 {
        api.create(&PostParams::default(), &config_map(&format!("c{i}")))
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(1200)).await;
    }
    t.eventually("the watcher to see all three", || {
        let events = events.clone();
        async move { events.load(Ordering::Relaxed) >= 3 }
    })
    .await;
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let (lists, watches, _) = t.cluster.request_counts();
    handle.abort();
    assert_eq!(lists, 1, "exactly one list: the initial one");
    assert!(
        watches >= 3,
        "the watch was restarted from its last version ({watches} watches)"
    );
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_from_a_compacted_version_is_gone() {
    let t = TestCluster::start_with("gone", |c| c.history_capacity = 5).await;
    let api: Api<ConfigMap> = Api::namespaced(t.cluster.client().await.unwrap(), "default");
    for i in 0..10 {
        api.create(&PostParams::default(), &config_map(&format!("g{i}")))
            .await
            .unwrap();
    }
    let mut stream = api
        .watch(&WatchParams::default(), "2")
        .await
        .unwrap()
        .boxed();
    let first = tokio::time::timeout(WAIT, stream.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    match first {
        WatchEvent::Error(e) => assert_eq!(e.code, 410, "{e:?}"),
        other => panic!("expected 410 Gone, got {other:?}"),
    }
    let recent = api
        .list(&ListParams::default())
        .await
        .unwrap()
        .metadata
        .resource_version
        .unwrap();
    let mut stream = api
        .watch(&WatchParams::default().timeout(2), &recent)
        .await
        .unwrap()
        .boxed();
    api.create(&PostParams::default(), &config_map("fresh"))
        .await
        .unwrap();
    let event = tokio::time::timeout(WAIT, stream.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(matches!(event, WatchEvent::Added(cm) if cm.metadata.name.as_deref() == Some("fresh")));
    t.stop().await;
}

async fn client_with_token(t: &TestCluster, token: &str) -> kube::Client {
    let admin = std::fs::read_to_string(&t.cluster.kubeconfig).unwrap();
    let path = t.dir.join("robot-kubeconfig");
    std::fs::write(&path, admin.replace(&t.cluster.admin_token, token)).unwrap();
    capsule_devcluster::client_from_kubeconfig(&path)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn service_account_tokens_reviews_and_rbac() {
    let t = TestCluster::start("auth").await;
    let client = t.cluster.client().await.unwrap();
    let accounts: Api<ServiceAccount> = Api::namespaced(client.clone(), "default");
    accounts
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": "robot"}})).unwrap(),
        )
        .await
        .unwrap();
    let request = TokenRequest {
        spec: TokenRequestSpec {
            audiences: vec![],
            ..Default::default()
        },
        ..Default::default()
    };
    let issued = accounts
        .create_token_request("robot", &PostParams::default(), &request)
        .await
        .unwrap();
    let token = issued.status.unwrap().token;

    let reviews: Api<TokenReview> = Api::all(client.clone());
    let review = |token: String| TokenReview {
        spec: TokenReviewSpec {
            token: Some(token),
            audiences: None,
        },
        ..Default::default()
    };
    let good = reviews
        .create(&PostParams::default(), &review(token.clone()))
        .await
        .unwrap()
        .status
        .unwrap();
    assert_eq!(good.authenticated, Some(true));
    let user = good.user.unwrap();
    assert_eq!(
        user.username.as_deref(),
        Some("system:serviceaccount:default:robot")
    );
    assert!(user
        .groups
        .unwrap()
        .contains(&"system:serviceaccounts".to_string()));
    let forged = reviews
        .create(&PostParams::default(), &review(format!("{token}0")))
        .await
        .unwrap()
        .status
        .unwrap();
    assert_eq!(forged.authenticated, Some(false));

    let roles: Api<Role> = Api::namespaced(client.clone(), "default");
    roles
        .create(
            &PostParams::default(),
            &Role {
                metadata: kube::api::ObjectMeta {
                    name: Some("pod-reader".into()),
                    ..Default::default()
                },
                rules: Some(vec![PolicyRule {
                    api_groups: Some(vec!["".into()]),
                    resources: Some(vec!["pods".into(), "pods/log".into()]),
                    verbs: vec!["get".into(), "list".into()],
                    ..Default::default()
                }]),
            },
        )
        .await
        .unwrap();
    let bindings: Api<RoleBinding> = Api::namespaced(client.clone(), "default");
    bindings
        .create(
            &PostParams::default(),
            &RoleBinding {
                metadata: kube::api::ObjectMeta {
                    name: Some("robot-reads-pods".into()),
                    ..Default::default()
                },
                role_ref: RoleRef {
                    api_group: "rbac.authorization.k8s.io".into(),
                    kind: "Role".into(),
                    name: "pod-reader".into(),
                },
                subjects: Some(vec![Subject {
                    kind: "ServiceAccount".into(),
                    name: "robot".into(),
                    namespace: Some("default".into()),
                    ..Default::default()
                }]),
            },
        )
        .await
        .unwrap();
    let access: Api<SubjectAccessReview> = Api::all(client.clone());
    let ask = |verb: &str, resource: &str, subresource: Option<&str>| SubjectAccessReview {
        spec: SubjectAccessReviewSpec {
            user: Some("system:serviceaccount:default:robot".into()),
            groups: Some(vec![
                "system:serviceaccounts".into(),
                "system:serviceaccounts:default".into(),
            ]),
            resource_attributes: Some(ResourceAttributes {
                namespace: Some("default".into()),
                verb: Some(verb.into()),
                resource: Some(resource.into()),
                subresource: subresource.map(str::to_string),
                ..Default::default()
            }),
            ..Default::default()
        },
        ..Default::default()
    };
    for (verb, resource, sub, allowed) in [
        ("list", "pods", None, true),
        ("get", "pods", Some("log"), true),
        ("delete", "pods", None, false),
        ("list", "secrets", None, false),
    ] {
        let status = access
            .create(&PostParams::default(), &ask(verb, resource, sub))
            .await
            .unwrap()
            .status
            .unwrap();
        assert_eq!(status.allowed, allowed, "{verb} {resource} {sub:?}");
    }

    let robot = client_with_token(&t, &token).await;
    Api::<Pod>::namespaced(robot.clone(), "default")
        .list(&ListParams::default())
        .await
        .expect("robot may list pods");
    let denied = Api::<Secret>::namespaced(robot.clone(), "default")
        .list(&ListParams::default())
        .await
        .unwrap_err();
    match denied {
        kube::Error::Api(status) => {
            assert_eq!(status.code, 403);
            assert_eq!(status.message, "secrets is forbidden: User \"system:serviceaccount:default:robot\" cannot list resource \"secrets\" in API group \"\" in the namespace \"default\"");
        }
        other => panic!("expected 403, got {other:?}"),
    }
    let forged = client_with_token(&t, "not-a-token").await;
    let unauthorized = Api::<Pod>::namespaced(forged, "default")
        .list(&ListParams::default())
        .await
        .unwrap_err();
    assert!(
        matches!(unauthorized, kube::Error::Api(ref s) if s.code == 401),
        "{unauthorized:?}"
    );
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pod_logs_are_served_from_the_kubelet_files() {
    let t = TestCluster::start("logs").await;
    let pods: Api<Pod> = Api::namespaced(t.cluster.client().await.unwrap(), "default");
    let pod: Pod = serde_json::from_value(json!({"metadata": {"name": "p"}, "spec": {"containers": [{"name": "main", "image": "busybox"}]}})).unwrap();
    let pod = pods.create(&PostParams::default(), &pod).await.unwrap();
    let uid = pod.metadata.uid.unwrap();
    let dir = t
        .cluster
        .state_dir()
        .join("pods")
        .join(format!("default_p_{uid}"));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("main.log"), "one\ntwo\nthree\n").unwrap();
    assert_eq!(
        pods.logs("p", &LogParams::default()).await.unwrap(),
        "one\ntwo\nthree\n"
    );
    let tail = LogParams {
        tail_lines: Some(1),
        container: Some("main".into()),
        ..Default::default()
    };
    assert_eq!(pods.logs("p", &tail).await.unwrap(), "three\n");
    let missing = LogParams {
        container: Some("nope".into()),
        ..Default::default()
    };
    assert!(pods.logs("p", &missing).await.is_err());
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streaming_lists_use_initial_events_instead_of_a_list() {
    let t = TestCluster::start("streaming").await;
    let api: Api<ConfigMap> = Api::namespaced(t.cluster.client().await.unwrap(), "default");
    for i in 0..3 {
        api.create(&PostParams::default(), &config_map(&format!("s{i}")))
            .await
            .unwrap();
    }
    let mut stream = watcher(api.clone(), watcher::Config::default().streaming_lists()).boxed();
    let mut initial = 0;
    loop {
        match tokio::time::timeout(WAIT, stream.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap()
        {
            watcher::Event::InitApply(_) => initial += 1,
            watcher::Event::InitDone => break,
            _ => {}
        }
    }
    assert_eq!(initial, 3);
    let (lists, watches, _) = t.cluster.request_counts();
    assert_eq!(
        (lists, watches),
        (0, 1),
        "the initial state came over the watch"
    );
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshot_keeps_objects_across_restarts() {
    let t = TestCluster::start("snapshot-a").await;
    let snapshot = t.dir.join("snapshot.json");
    let state_dir = t.dir.join("restarted");
    let start = |snapshot: std::path::PathBuf, state_dir: std::path::PathBuf| async move {
        let mut config = capsule_devcluster::DevClusterConfig::new(state_dir);
        config.snapshot = Some(snapshot);
        capsule_devcluster::DevCluster::start(config).await.unwrap()
    };
    let first = start(snapshot.clone(), state_dir.clone()).await;
    let api: Api<ConfigMap> = Api::namespaced(first.client().await.unwrap(), "default");
    let created = api
        .create(&PostParams::default(), &config_map("kept"))
        .await
        .unwrap();
    first.shutdown().await.unwrap();

    let second = start(snapshot, state_dir).await;
    let api: Api<ConfigMap> = Api::namespaced(second.client().await.unwrap(), "default");
    let restored = api.get("kept").await.unwrap();
    assert_eq!(restored.metadata.uid, created.metadata.uid);
    let newer = api
        .create(&PostParams::default(), &config_map("newer"))
        .await
        .unwrap();
    let rv = |cm: &ConfigMap| {
        cm.metadata
            .resource_version
            .clone()
            .unwrap()
            .parse::<u64>()
            .unwrap()
    };
    assert!(
        rv(&newer) > rv(&restored),
        "resourceVersions keep increasing after a restore"
    );
    second.shutdown().await.unwrap();
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_namespace_removes_its_content_then_itself() {
    let t = TestCluster::start("namespace").await;
    let client = t.cluster.client().await.unwrap();
    let namespaces: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(client.clone());
    namespaces
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": "scratch"}})).unwrap(),
        )
        .await
        .unwrap();
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), "scratch");
    api.create(&PostParams::default(), &config_map("inside"))
        .await
        .unwrap();
    // A finalizer keeps the namespace terminating until the test releases it.
    let held: ConfigMap = serde_json::from_value(
        json!({"metadata": {"name": "held", "finalizers": ["test.capsule.dev/hold"]}}),
    )
    .unwrap();
    api.create(&PostParams::default(), &held).await.unwrap();
    namespaces
        .delete("scratch", &Default::default())
        .await
        .unwrap();
    let refused = api
        .create(&PostParams::default(), &config_map("late"))
        .await
        .unwrap_err();
    assert!(
        matches!(refused, kube::Error::Api(ref s) if s.code == 403),
        "{refused:?}"
    );
    t.eventually("the held object to be marked for deletion", || {
        let api = api.clone();
        async move {
            api.get("held")
                .await
                .unwrap()
                .metadata
                .deletion_timestamp
                .is_some()
        }
    })
    .await;
    let release = json!({"metadata": {"finalizers": null}});
    api.patch("held", &PatchParams::default(), &Patch::Merge(&release))
        .await
        .unwrap();
    t.eventually("the namespace to go", || {
        let namespaces = namespaces.clone();
        async move { namespaces.get_opt("scratch").await.unwrap().is_none() }
    })
    .await;
    assert!(api.get_opt("inside").await.unwrap().is_none());
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_resumed_from_a_version_replays_adds_changes_and_deletes() {
    let t = TestCluster::start("resume").await;
    let api: Api<ConfigMap> = Api::namespaced(t.cluster.client().await.unwrap(), "default");
    api.create(&PostParams::default(), &config_map("old"))
        .await
        .unwrap();
    api.create(&PostParams::default(), &config_map("changed"))
        .await
        .unwrap();
    let since = api
        .list(&ListParams::default())
        .await
        .unwrap()
        .metadata
        .resource_version
        .unwrap();
    api.delete("old", &Default::default()).await.unwrap();
    let patch = json!({"data": {"n": "1"}});
    api.patch("changed", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
    api.create(&PostParams::default(), &config_map("new"))
        .await
        .unwrap();
    let mut stream = api
        .watch(&WatchParams::default().timeout(5), &since)
        .await
        .unwrap()
        .boxed();
    let mut seen = Vec::new();
    while seen.len() < 3 {
        let event = tokio::time::timeout(WAIT, stream.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        match event {
            WatchEvent::Added(cm) => seen.push(format!("ADDED {}", cm.metadata.name.unwrap())),
            WatchEvent::Modified(cm) => {
                seen.push(format!("MODIFIED {}", cm.metadata.name.unwrap()))
            }
            WatchEvent::Deleted(cm) => seen.push(format!("DELETED {}", cm.metadata.name.unwrap())),
            WatchEvent::Bookmark(_) => {}
            WatchEvent::Error(e) => panic!("{e:?}"),
        }
    }
    assert_eq!(seen, ["DELETED old", "MODIFIED changed", "ADDED new"]);
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_written_in_one_api_group_are_read_in_the_other() {
    let t = TestCluster::start("events").await;
    let client = t.cluster.client().await.unwrap();
    let new_api: Api<k8s_openapi::api::events::v1::Event> =
        Api::namespaced(client.clone(), "default");
    let event = serde_json::from_value(json!({
        "metadata": {"name": "e1"},
        "eventTime": "2026-01-01T00:00:00.000000Z",
        "reportingController": "capsule.dev/operator", "reportingInstance": "op-1",
        "action": "Scale", "type": "Normal", "reason": "Scaled", "note": "pool scaled",
        "regarding": {"kind": "CapsulePool", "name": "p1", "namespace": "default"},
    }))
    .unwrap();
    new_api
        .create(&PostParams::default(), &event)
        .await
        .unwrap();
    let core: Api<k8s_openapi::api::core::v1::Event> = Api::namespaced(client, "default");
    let read = core.get("e1").await.unwrap();
    assert_eq!(read.message.as_deref(), Some("pool scaled"));
    assert_eq!(read.involved_object.name.as_deref(), Some("p1"));
    assert_eq!(
        read.reporting_component.as_deref(),
        Some("capsule.dev/operator")
    );
    let back = new_api.get("e1").await.unwrap();
    assert_eq!(back.note.as_deref(), Some("pool scaled"));
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_written_with_server_side_apply_leaves_spec_and_generation_alone() {
    use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
    use kube::api::{ApiResource, DynamicObject, GroupVersionKind};
    let t = TestCluster::start("status-apply").await;
    let client = t.cluster.client().await.unwrap();
    let crd: CustomResourceDefinition =
        serde_yaml::from_str(&std::fs::read_to_string(common::fixture("widget-crd.yaml")).unwrap())
            .unwrap();
    Api::<CustomResourceDefinition>::all(client.clone())
        .create(&PostParams::default(), &crd)
        .await
        .unwrap();
    let resource = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("test.capsule.dev", "v1", "Widget"),
        "widgets",
    );
    let widgets: Api<DynamicObject> = Api::namespaced_with(client, "default", &resource);
    let widget: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "test.capsule.dev/v1", "kind": "Widget", "metadata": {"name": "w"}, "spec": {"size": 2},
    }))
    .unwrap();
    widgets
        .create(&PostParams::default(), &widget)
        .await
        .unwrap();
    for (manager, phase, replicas) in [("operator", "Ready", 1), ("other-operator", "Degraded", 2)]
    {
        let status = json!({"apiVersion": "test.capsule.dev/v1", "kind": "Widget", "metadata": {"name": "w"}, "status": {"phase": phase, "replicas": replicas}, "spec": {"size": 9}});
        widgets
            .patch_status(
                "w",
                &PatchParams::apply(manager).force(),
                &Patch::Apply(&status),
            )
            .await
            .unwrap();
    }
    let stored = widgets.get("w").await.unwrap();
    assert_eq!(stored.data["status"]["phase"], "Degraded");
    assert_eq!(
        stored.data["spec"]["size"], 2,
        "a status apply does not touch spec"
    );
    assert_eq!(stored.metadata.generation, Some(1));
    let managers: Vec<(String, Option<String>)> = stored
        .metadata
        .managed_fields
        .unwrap_or_default()
        .into_iter()
        .map(|m| (m.manager.unwrap_or_default(), m.subresource))
        .collect();
    assert!(
        managers.contains(&("other-operator".into(), Some("status".into()))),
        "{managers:?}"
    );
    assert!(
        !managers.iter().any(|(m, _)| m == "operator"),
        "the forced apply took every field: {managers:?}"
    );
    let conflict = json!({"apiVersion": "test.capsule.dev/v1", "kind": "Widget", "metadata": {"name": "w"}, "status": {"phase": "Lost"}});
    let err = widgets
        .patch_status(
            "w",
            &PatchParams::apply("operator"),
            &Patch::Apply(&conflict),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(err, kube::Error::Api(ref s) if s.code == 409),
        "{err:?}"
    );
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lists_page_with_limit_and_continue() {
    let t = TestCluster::start("paging").await;
    let api: Api<ConfigMap> = Api::namespaced(t.cluster.client().await.unwrap(), "default");
    for i in 0..7 {
        api.create(&PostParams::default(), &config_map(&format!("p{i}")))
            .await
            .unwrap();
    }
    let mut names = Vec::new();
    let mut params = ListParams::default().limit(3);
    let mut pages = 0;
    loop {
        let page = api.list(&params).await.unwrap();
        pages += 1;
        names.extend(
            page.items
                .iter()
                .map(|cm| cm.metadata.name.clone().unwrap()),
        );
        match page.metadata.continue_.filter(|c| !c.is_empty()) {
            Some(token) => {
                assert_eq!(page.items.len(), 3);
                params = params.continue_token(&token);
            }
            None => break,
        }
    }
    assert_eq!(pages, 3);
    assert_eq!(names, ["p0", "p1", "p2", "p3", "p4", "p5", "p6"]);
    // kube's watcher pages its initial list the same way.
    let all = watcher(api, watcher::Config::default().page_size(2))
        .boxed()
        .take_while(|e| futures::future::ready(!matches!(e, Ok(watcher::Event::InitDone))))
        .filter(|e| futures::future::ready(matches!(e, Ok(watcher::Event::InitApply(_)))))
        .count();
    assert_eq!(tokio::time::timeout(WAIT, all).await.unwrap(), 7);
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pods_are_bound_once_through_the_binding_subresource() {
    let t = TestCluster::start("binding").await;
    let pods: Api<Pod> = Api::namespaced(t.cluster.client().await.unwrap(), "default");
    let pod: Pod = serde_json::from_value(json!({"metadata": {"name": "b"}, "spec": {"containers": [{"name": "main", "image": "busybox"}]}})).unwrap();
    pods.create(&PostParams::default(), &pod).await.unwrap();
    let binding = k8s_openapi::api::core::v1::Binding {
        metadata: kube::api::ObjectMeta {
            name: Some("b".into()),
            ..Default::default()
        },
        target: k8s_openapi::api::core::v1::ObjectReference {
            kind: Some("Node".into()),
            name: Some("devcluster".into()),
            ..Default::default()
        },
    };
    let _: serde_json::Value = pods
        .create_subresource("binding", "b", &PostParams::default(), &binding)
        .await
        .unwrap();
    assert_eq!(
        pods.get("b")
            .await
            .unwrap()
            .spec
            .unwrap()
            .node_name
            .as_deref(),
        Some("devcluster")
    );
    let again = pods
        .create_subresource::<_, serde_json::Value>(
            "binding",
            "b",
            &PostParams::default(),
            &binding,
        )
        .await
        .unwrap_err();
    assert!(
        matches!(again, kube::Error::Api(ref s) if s.code == 409),
        "{again:?}"
    );
    t.stop().await;
}
