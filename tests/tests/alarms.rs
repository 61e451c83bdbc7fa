//! Every metric a CloudWatch alarm of the template watches is one the processes emit: the EMF
//! line built from this process's own metric registry (an embedded app that answered a request,
//! and a relay that stepped on moto) names each of them.

use backbone_tests::aws::{drain_relay, fresh_stage};
use backbone_tests::spawn_app;
use std::collections::BTreeSet;

/// The metric names of the template's alarms in the `Backbone` namespace.
fn alarm_metrics() -> BTreeSet<String> {
    let template = include_str!("../../infrastructure/cloudformation/backbone.yaml");
    let mut names = BTreeSet::new();
    let mut ours = false;
    for line in template.lines().map(str::trim) {
        if line.starts_with("Type:") {
            ours = false;
        }
        if line == format!("Namespace: {}", api::emf::NAMESPACE) {
            ours = true;
        }
        if let Some(name) = line.strip_prefix("MetricName:") {
            if ours {
                names.insert(name.trim().to_owned());
            }
        }
    }
    names
}

#[tokio::test(flavor = "multi_thread")]
async fn every_metric_an_alarm_watches_is_emitted() {
    let alarms = alarm_metrics();
    assert!(alarms.len() >= 5, "{alarms:?}");
    let declared: BTreeSet<String> = api::emf::METRICS
        .iter()
        .map(|m| m.name.to_owned())
        .collect();
    let unknown: Vec<_> = alarms.difference(&declared).collect();
    assert!(
        unknown.is_empty(),
        "alarms on metrics nothing declares: {unknown:?}"
    );

    // What the code really records: a relay step, an app's request (into the registry every
    // process installs first).
    let handle = api::metrics::prometheus();
    let stage = fresh_stage().await;
    let relay = stage.relay(workers::RelayConfig::default());
    drain_relay(&relay).await;
    let app = spawn_app().await;
    let answer = app
        .send(
            reqwest::Method::GET,
            "/v1/catalog/products",
            None,
            None,
            &[],
        )
        .await;
    assert_eq!(answer.status.as_u16(), 200);
    let text =
        api::metrics::render(&handle, Some(app.state.store.as_ref()), &app.state.health).await;
    let line = api::emf::Emitter::new("test")
        .line(&text, chrono::Utc::now().timestamp_millis())
        .expect("an EMF line");
    let line: serde_json::Value = serde_json::from_str(&line).expect("JSON");
    let emitted: BTreeSet<String> = line["_aws"]["CloudWatchMetrics"][0]["Metrics"]
        .as_array()
        .expect("metrics")
        .iter()
        .map(|m| m["Name"].as_str().expect("name").to_owned())
        .collect();
    let missing: Vec<_> = alarms.difference(&emitted).collect();
    assert!(
        missing.is_empty(),
        "alarms on metrics nothing emits: {missing:?}\n{line}"
    );
    for name in &alarms {
        assert!(line[name].is_number(), "{name} has a value: {line}");
    }
    app.shutdown().await;
}
