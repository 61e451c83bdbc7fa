//! The API keeps the contract its OpenAPI document states: schemathesis (from the test venv)
//! generates requests from `/openapi.json` of a real `backbone serve`, once per role with that
//! role's token, and checks every answer against the document: no server error, only documented
//! statuses, content types and response schemas, and every schema-valid request accepted.
//!
//! Before the runs a customer fills a cart and pays an order, so that half of the generated ids
//! exist. The run is bounded (a fixed seed, 20 examples per operation and phase, one worker) and
//! its output goes to the test log.

#[path = "../../infrastructure/tests/support/moto.rs"]
mod moto;

#[path = "support/process.rs"]
mod process;

use api::auth::{mint_hs256, Role};
use process::{embedded_serve_args, until_ok, Process};
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

const SECRET: &str = "contract-test-secret";

const CHECKS: &str = "not_a_server_error,status_code_conformance,content_type_conformance,\
response_schema_conformance,positive_data_acceptance";

/// What a schema-valid request may be answered with. Besides schemathesis' defaults (2xx,
/// 401, 403, 404, 409), 422: generated commands reuse an `Idempotency-Key` with another body,
/// which the API refuses as the idempotency draft says. No signature a schema can describe
/// verifies, so the Stripe webhook refuses every generated event with 400. Two fields depend on
/// what no schema can know, and a value that does not fit is a 400 naming it: a refund's
/// `amount` may have no more decimals than the order's currency, and the simulated payment
/// provider knows only its test `payment_method`s.
const CONFIG: &str = r#"
[checks.positive_data_acceptance]
expected-statuses = ["2xx", "401", "403", "404", "409", "422"]

[[operations]]
include-path = "/v1/webhooks/stripe"
checks.positive_data_acceptance.expected-statuses = ["2xx", "400"]

[[operations]]
include-path-regex = "^/v1/(support/orders/[{]id[}]/refunds|payments/[{]payment_id[}]/confirm)$"
checks.positive_data_acceptance.expected-statuses = ["2xx", "400", "401", "403", "404", "409", "422"]
"#;

/// The parameters that draw half of their values from the dictionaries of ids that exist, which
/// [`Shop::dictionaries`] writes, by the operations whose path matches the regex, so that
/// commands reach their rules: `(regex, [(parameter, dictionary)])`.
const FROM_DICTIONARIES: &[(&str, &[(&str, &str)])] = &[
    (
        "^/v1/carts/[{]id[}]",
        &[
            ("path.id", "carts"),
            ("path.product_id", "products"),
            ("body.product_id", "products"),
        ],
    ),
    (
        "^/v1/(orders|support/orders|admin/orders)/[{]id[}]",
        &[("path.id", "orders")],
    ),
    (
        "^/v1/(admin|catalog)/products/[{]id[}]",
        &[("path.id", "products")],
    ),
    ("^/v1/payments/", &[("path.payment_id", "payments")]),
    ("^/v1/admin/customers/", &[("path.id", "customers")]),
    ("^/v1/streams/", &[("path.id", "streams")]),
];

/// [`FROM_DICTIONARIES`] as schemathesis configuration.
fn dictionary_operations() -> String {
    let operation = |(regex, parameters): &(&str, &[(&str, &str)])| {
        let parameters: Vec<String> = parameters
            .iter()
            .map(|(name, dictionary)| {
                format!("{name:?} = {{ dictionary = {dictionary:?}, probability = 0.5 }}")
            })
            .collect();
        format!(
            "\n[[operations]]\ninclude-path-regex = {regex:?}\nparameters = {{ {} }}\n",
            parameters.join(", ")
        )
    };
    FROM_DICTIONARIES.iter().map(operation).collect()
}

/// A customer's checked-out and paid order, and an open cart with an item, made over HTTP
/// before the runs.
struct Shop {
    customer: String,
    product: String,
    open_cart: String,
    paid_cart: String,
    order: String,
    payment: String,
}

impl Shop {
    async fn open(api: &str, customer: &str) -> Shop {
        let token = token(Role::Customer, customer);
        let client = reqwest::Client::new();
        let call = |method: reqwest::Method, path: String, body: serde_json::Value| {
            let request = client
                .request(method, format!("{api}{path}"))
                .bearer_auth(&token)
                .json(&body);
            async move {
                let answer = request.send().await.expect("request");
                let status = answer.status();
                let json: serde_json::Value = answer.json().await.expect("json");
                assert!(status.is_success(), "{path}: {status} {json}");
                json
            }
        };
        let get = reqwest::Method::GET;
        let post = reqwest::Method::POST;
        let none = serde_json::json!({});
        let catalog = call(get, "/v1/catalog/products?limit=1".into(), none.clone()).await;
        let product = catalog["products"][0]["product_id"]
            .as_str()
            .expect("the demo catalog has a product")
            .to_owned();
        let mut carts = Vec::new();
        for _ in 0..2 {
            let cart = call(post.clone(), "/v1/carts".into(), none.clone()).await;
            let cart = cart["cart_id"].as_str().expect("cart id").to_owned();
            let item = serde_json::json!({ "product_id": product, "quantity": 1 });
            call(post.clone(), format!("/v1/carts/{cart}/items"), item).await;
            carts.push(cart);
        }
        let address = serde_json::json!({
            "email": "contract@example.com",
            "shipping_address": {
                "name": "Ada", "line1": "1 Main St", "city": "Berlin",
                "postal_code": "10115", "country": "DE"
            }
        });
        let placed = call(
            post.clone(),
            format!("/v1/carts/{}/checkout", carts[1]),
            address,
        )
        .await;
        let order = placed["order_id"].as_str().expect("order id").to_owned();
        let payment = placed["payment_id"]
            .as_str()
            .expect("payment id")
            .to_owned();
        let card = serde_json::json!({ "payment_method": "pm_card_visa" });
        call(post, format!("/v1/payments/{payment}/confirm"), card).await;
        Shop {
            customer: customer.to_owned(),
            product,
            paid_cart: carts.pop().expect("paid cart"),
            open_cart: carts.pop().expect("open cart"),
            order,
            payment,
        }
    }

    /// The schemathesis dictionaries of these ids.
    fn dictionaries(&self) -> String {
        let list = |name: &str, values: &[&str]| {
            let quoted: Vec<String> = values.iter().map(|v| format!("{v:?}")).collect();
            format!("[dictionaries.{name}]\nvalues = [{}]\n", quoted.join(", "))
        };
        [
            list("carts", &[&self.open_cart, &self.paid_cart]),
            list("products", &[&self.product]),
            list("orders", &[&self.order]),
            list("payments", &[&self.payment]),
            list("customers", &[&self.customer]),
            list(
                "streams",
                &[
                    &self.open_cart,
                    &self.order,
                    &self.payment,
                    &self.product,
                    &self.customer,
                ],
            ),
        ]
        .concat()
    }
}

/// A token of `role` for `subject`.
fn token(role: Role, subject: &str) -> String {
    mint_hs256(SECRET.as_bytes(), subject, role, Duration::from_secs(900)).expect("token")
}

/// The schemathesis CLI of the test venv (`scripts/test.sh` installs it).
fn schemathesis() -> PathBuf {
    let venv = std::env::var_os("BACKBONE_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../.venv"));
    let st = venv.join("bin/st");
    assert!(
        st.is_file(),
        "schemathesis is not installed at {}: run scripts/test.sh, which installs it into the \
         test venv (BACKBONE_VENV)",
        st.display()
    );
    st
}

/// How many operations schemathesis tests: those of the document but the one serving it, which
/// schemathesis leaves out.
fn operations() -> usize {
    api::openapi::document()
        .paths
        .paths
        .iter()
        .filter(|(path, _)| *path != "/openapi.json")
        .map(|(_, item)| {
            [&item.get, &item.put, &item.post, &item.delete, &item.patch]
                .into_iter()
                .filter(|op| op.is_some())
                .count()
        })
        .sum()
}

/// The number after `label` on the summary line that starts with it, for example
/// `Tested: 37`.
fn count_after(output: &str, label: &str) -> Option<usize> {
    output
        .lines()
        .map(str::trim)
        .find_map(|line| line.strip_prefix(label))
        .and_then(|rest| rest.trim().split(['/', ' ']).next()?.parse().ok())
}

/// One role's run: its summary line and whether it passed.
struct Run {
    role: Role,
    passed: bool,
    tested: Option<usize>,
    summary: String,
}

fn run_as(st: &PathBuf, work: &std::path::Path, api: &str, role: Role, shop: &Shop) -> Run {
    // The customer is the one whose order and carts the dictionaries name.
    let token = match role {
        Role::Customer => token(role, &shop.customer),
        _ => token(role, &format!("contract-{}", role.as_str())),
    };
    let config = work.join("schemathesis.toml");
    let toml = [
        shop.dictionaries(),
        CONFIG.to_owned(),
        dictionary_operations(),
    ]
    .concat();
    std::fs::write(&config, toml).expect("write the schemathesis config");
    let started = Instant::now();
    let out = Command::new(st)
        .current_dir(work)
        .env("NO_COLOR", "1")
        .arg("--config-file")
        .arg(&config)
        .args(["run", &format!("{api}/openapi.json")])
        .args(["--header", &format!("Authorization: Bearer {token}")])
        .args(["--checks", CHECKS])
        .args(["--max-examples", "20", "--seed", "22", "--workers", "1"])
        .args([
            "--generation-database",
            "none",
            "--generation-allow-x00",
            "false",
        ])
        .args(["--request-timeout", "10", "--no-color"])
        .output()
        .unwrap_or_else(|e| panic!("run {}: {e}", st.display()));
    let output = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!(
        "==== schemathesis as {} ({:.0?}) ====\n{output}",
        role.as_str(),
        started.elapsed()
    );
    let cases = output
        .lines()
        .map(str::trim)
        .skip_while(|l| !l.starts_with("Test cases:"))
        .nth(1)
        .unwrap_or("no test case summary")
        .to_string();
    Run {
        role,
        passed: out.status.success(),
        tested: count_after(&output, "Tested:"),
        summary: cases,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_role_gets_only_the_answers_the_document_promises() {
    let st = schemathesis();
    let data = tempfile::tempdir().expect("temp dir");
    let work = tempfile::tempdir().expect("work dir");
    let dir = data.path().to_str().expect("utf-8 path");
    let mut args = embedded_serve_args(dir);
    args.extend(["--synchronous", "normal", "--jwt-secret", SECRET]);
    // Generated consistency tokens name writes that never happen: don't wait for them.
    args.extend(["--consistency-wait", "0s"]);
    let server = Process::spawn(&args);
    let api = server.address("serving the HTTP API");
    until_ok(&format!("{api}/readyz")).await;

    let shop = std::sync::Arc::new(Shop::open(&api, "contract-customer").await);

    let mut runs = Vec::new();
    for role in [Role::Customer, Role::Support, Role::Admin, Role::Analyst] {
        let (st, work, api, shop) = (
            st.clone(),
            work.path().to_owned(),
            api.clone(),
            shop.clone(),
        );
        let run = tokio::task::spawn_blocking(move || run_as(&st, &work, &api, role, &shop))
            .await
            .expect("schemathesis run");
        runs.push(run);
    }
    let logs = server.logs();
    assert!(server.stop().success(), "the server stops cleanly");

    let expected = operations();
    let report: Vec<String> = runs
        .iter()
        .map(|r| {
            format!(
                "{:8} {} ({:?}/{expected} operations tested): {}",
                r.role.as_str(),
                if r.passed { "passed" } else { "FAILED" },
                r.tested,
                r.summary
            )
        })
        .collect();
    eprintln!("==== schemathesis per role ====\n{}", report.join("\n"));
    for run in &runs {
        assert!(
            run.passed,
            "schemathesis found failures as {} (its output is above): {}",
            run.role.as_str(),
            run.summary
        );
        assert_eq!(
            run.tested,
            Some(expected),
            "schemathesis tested every operation as {}",
            run.role.as_str()
        );
        assert!(
            run.summary.contains("generated") && run.summary.contains("passed"),
            "{}",
            run.summary
        );
    }
    assert!(
        !logs.contains("request failed"),
        "no request failed with a 5xx:\n{logs}"
    );
}
