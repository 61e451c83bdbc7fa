//! The router without a socket: `app(state)` driven with `tower::ServiceExt::oneshot`.

use api::{app, start_embedded, ApiSettings, EmbeddedConfig};
use axum::body::Body;
use axum::http::{Request, StatusCode};
use tower::ServiceExt;

async fn body_json(resp: axum::response::Response) -> serde_json::Value {
    let bytes = axum::body::to_bytes(resp.into_body(), 1 << 20)
        .await
        .unwrap();
    serde_json::from_slice(&bytes).unwrap()
}

#[tokio::test]
async fn the_router_answers_without_a_socket() {
    let dir = tempfile::tempdir().unwrap();
    let config = EmbeddedConfig {
        synchronous_normal: true,
        api: ApiSettings {
            demo_catalog: false,
            jwt_secret: Some("router-test".into()),
            ..ApiSettings::default()
        },
        ..EmbeddedConfig::new(dir.path())
    };
    let embedded = start_embedded(config).await.unwrap();
    let router = app(embedded.state.clone());

    let health = router
        .clone()
        .oneshot(Request::get("/healthz").body(Body::empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(health.status(), StatusCode::OK);
    assert!(health.headers().contains_key("x-request-id"));

    let refused = router
        .clone()
        .oneshot(
            Request::post("/v1/carts")
                .header("x-correlation-id", "corr-1")
                .body(Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(refused.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(refused.headers()["x-correlation-id"], "corr-1");
    let body = body_json(refused).await;
    assert_eq!(body["error"]["code"], "unauthorized");

    let token = api::auth::mint_hs256(
        b"router-test",
        "carol",
        api::auth::Role::Customer,
        std::time::Duration::from_secs(60),
    )
    .unwrap();
    let opened = router
        .oneshot(
            Request::post("/v1/carts")
                .header("authorization", format!("Bearer {token}"))
                .body(Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(opened.status(), StatusCode::CREATED);
    let body = body_json(opened).await;
    assert_eq!(body["customer_id"], "carol");
    assert!(body["position"].as_u64().is_some());
    embedded.shutdown().await;
}
