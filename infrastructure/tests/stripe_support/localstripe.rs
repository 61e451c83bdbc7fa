//! A localstripe server for tests: bound to 127.0.0.1 on a free port, state in memory, killed
//! when dropped. Shared by the infrastructure and end-to-end suites (included with `#[path]`).
#![allow(dead_code)]

use infrastructure::stripe::gateway::{SecretKey, StripeConfig, StripeGateway};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

pub const KEY: &str = "sk_test_localstripe";

/// localstripe's launcher binds every interface and persists to /tmp; this one binds
/// 127.0.0.1 only and keeps its state in memory.
pub const LAUNCHER: &str = r#"
import sys
from aiohttp import web
from localstripe import server
from localstripe.resources import store
store.dump_to_disk = lambda: None
web.run_app(server.app, host='127.0.0.1', port=int(sys.argv[1]), access_log=None, print=None)
"#;

/// A running localstripe; killed (by its own pid) when dropped.
pub struct LocalStripe {
    child: Child,
    pub url: String,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Drop for LocalStripe {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn python() -> PathBuf {
    let venv = std::env::var_os("BACKBONE_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../.venv"));
    let python = venv.join("bin/python");
    assert!(
        python.exists(),
        "no python venv at {} (run scripts/test.sh, or: python3 -m venv .venv && \
         .venv/bin/pip install localstack-localstripe)",
        venv.display()
    );
    python
}

impl LocalStripe {
    pub async fn start() -> Self {
        let python = python();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("localstripe.log");
        let out = std::fs::File::create(&log).unwrap();
        let child = Command::new(&python)
            .arg("-c")
            .arg(LAUNCHER)
            .arg(port.to_string())
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start localstripe with {}: {e}", python.display()));
        let mut me = Self {
            child,
            url: format!("http://127.0.0.1:{port}"),
            log,
            _dir: dir,
        };
        let http = reqwest::Client::new();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(Some(status)) = me.child.try_wait() {
                panic!(
                    "localstripe exited ({status}); is localstack-localstripe installed in the venv? log:\n{}",
                    std::fs::read_to_string(&me.log).unwrap_or_default()
                );
            }
            let ready = http
                .get(format!("{}/v1/payment_intents", me.url))
                .bearer_auth(KEY)
                .send()
                .await
                .is_ok_and(|r| r.status().is_success());
            if ready {
                return me;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "localstripe did not answer within 30 s; log:\n{}",
                std::fs::read_to_string(&me.log).unwrap_or_default()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub fn gateway(&self) -> StripeGateway {
        let mut config = StripeConfig::new(SecretKey::new(KEY)).with_base_url(&self.url);
        config.backoff_base = Duration::from_millis(20);
        StripeGateway::new(config).unwrap()
    }

    pub async fn post(&self, path: &str, form: &[(&str, &str)]) -> (u16, serde_json::Value) {
        let r = reqwest::Client::new()
            .post(format!("{}{path}", self.url))
            .bearer_auth(KEY)
            .form(form)
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(serde_json::Value::Null))
    }

    pub async fn get(&self, path: &str) -> serde_json::Value {
        reqwest::Client::new()
            .get(format!("{}{path}", self.url))
            .bearer_auth(KEY)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    /// What Stripe.js does in the browser: attach a test payment method and confirm.
    pub async fn confirm(&self, intent_id: &str, payment_method: &str) -> u16 {
        let (status, _) = self
            .post(
                &format!("/v1/payment_intents/{intent_id}"),
                &[("payment_method", payment_method)],
            )
            .await;
        assert_eq!(status, 200, "attaching {payment_method}");
        self.post(&format!("/v1/payment_intents/{intent_id}/confirm"), &[])
            .await
            .0
    }

    /// Registers a webhook endpoint (localstripe's own config API).
    pub async fn register_webhook(&self, url: &str, secret: &str) {
        let (status, _) = self
            .post(
                "/_config/webhooks/backbone",
                &[("url", url), ("secret", secret)],
            )
            .await;
        assert_eq!(status, 200, "registering the webhook");
    }
}
