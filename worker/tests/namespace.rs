//! `GET /v1/namespace` on the real worker and interpreter: worker credential only, names with type and
//! size (largest first), bounded in count and name length, never values.

mod common;

use capsule_protocol::execute::{
    NamespaceListing, MAX_NAMESPACE_ENTRIES, MAX_NAMESPACE_NAME_BYTES,
};
use common::{Worker, SESSION_TOKEN, WORKER_TOKEN};

async fn listing(worker: &Worker, token: &str) -> reqwest::Response {
    worker
        .client
        .get(worker.url("/v1/namespace"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn lists_names_types_and_sizes_never_values() {
    let worker = Worker::start(&[]).await;
    let long_name = "n".repeat(300);
    worker
        .run(&format!(
            "import json\n\
             secret = 'SUPERSECRETVALUE' * 1000\n\
             count = 3\n\
             def helper():\n    pass\n\
             class Thing:\n    pass\n\
             {long_name} = 1\n\
             globals()[7] = 'non-str key'\n"
        ))
        .await;

    // The session's own token is not enough: this view is for the sidecar (worker credential).
    assert_eq!(listing(&worker, SESSION_TOKEN).await.status(), 401);

    let response = listing(&worker, WORKER_TOKEN).await;
    assert_eq!(response.status(), 200);
    let text = response.text().await.unwrap();
    assert!(!text.contains("SUPERSECRETVALUE"), "values never listed");
    assert!(!text.contains("non-str key"));
    let listing: NamespaceListing = serde_json::from_str(&text).unwrap();
    assert_eq!(listing.counts.names, 6, "{listing:?}");
    assert_eq!(listing.entries.len(), 6);
    assert!(!listing.truncated);
    // Largest first: the 16 kB string leads.
    assert_eq!(listing.entries[0].name, "secret");
    assert_eq!(listing.entries[0].type_name, "str");
    assert!(listing.entries[0].size_bytes >= 16_000);
    assert!(listing
        .entries
        .windows(2)
        .all(|w| w[0].size_bytes >= w[1].size_bytes));
    let kind = |name: &str| {
        listing
            .entries
            .iter()
            .find(|e| e.name == name)
            .map(|e| e.type_name.as_str())
    };
    assert_eq!(kind("json"), Some("module"));
    assert_eq!(kind("helper"), Some("function"));
    assert_eq!(kind("Thing"), Some("type"));
    assert_eq!(kind("count"), Some("int"));
    let cut = &long_name[..MAX_NAMESPACE_NAME_BYTES];
    assert_eq!(kind(cut), Some("int"), "long names are cut to the bound");
}

#[tokio::test]
async fn the_listing_is_bounded() {
    let worker = Worker::start(&[]).await;
    worker
        .run("for i in range(1500):\n    globals()['name_%d' % i] = i")
        .await;
    let listing: NamespaceListing = listing(&worker, WORKER_TOKEN).await.json().await.unwrap();
    assert_eq!(listing.counts.names, 1501, "the loop variable counts too");
    assert_eq!(listing.entries.len(), MAX_NAMESPACE_ENTRIES);
    assert!(listing.truncated);
}
