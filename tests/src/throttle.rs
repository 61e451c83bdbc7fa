//! A DynamoDB that throttles like the real one, for capacity simulations on moto (which has no
//! throughput limits at all).
//!
//! [`Throttle::wrap`] gives an SDK configuration whose HTTP client holds every DynamoDB request
//! until the partitions it touches have the capacity for it, then sends it to moto unchanged.
//! Nothing in the SDK is mocked: the adapters run their real requests against moto.
//!
//! The model is DynamoDB's published per-partition limits:
//!
//! - a partition key takes at most [`Limits::write_units`] write units per second (1,000 on
//!   DynamoDB) and [`Limits::read_units`] read units per second (3,000);
//! - a write costs one unit per KB of item, rounded up (an update or a delete costs at least
//!   one); inside `TransactWriteItems` every action costs double, condition checks included;
//! - a strongly consistent read costs one unit per 4 KB, an eventually consistent one half;
//! - unused capacity is kept for [`Limits::burst`] (DynamoDB keeps up to 300 s; a simulation keeps
//!   little, so that a short run measures the sustained rate);
//! - every request also takes [`Limits::latency`] of service time, as DynamoDB's single-digit
//!   milliseconds do.
//!
//! A request that touches several partitions waits until all of them have capacity and then
//! charges each its share. Where DynamoDB would refuse a request over the limit and the SDK
//! would retry it, the throttle holds it until the capacity is there: the same sustained rate,
//! without the retries' jitter. A Query is charged to its partition key when the key condition names
//! it as `#x = :v`; a Scan is not throttled. Item sizes are approximated as the sum of attribute
//! names and values, as DynamoDB counts them. The partition key of each table is read once with
//! DescribeTable ([`Throttle::learn_tables`]).
//!
//! The limits can be scaled down together ([`Limits::scaled`]): the ratios a simulation measures
//! stay the same while the emulator stays far from its own ceiling.

use aws_sdk_dynamodb::config::http::HttpRequest;
use aws_sdk_dynamodb::config::{HttpClient, RuntimeComponents, SharedHttpClient};
use aws_smithy_runtime_api::client::http::{
    HttpConnector, HttpConnectorFuture, HttpConnectorSettings, SharedHttpConnector,
};
use serde_json::Value;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Per-partition limits.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub write_units: f64,
    pub read_units: f64,
    pub burst: Duration,
    pub latency: Duration,
}

impl Limits {
    /// DynamoDB's published per-partition limits, a 1 s burst and 10 ms of service time.
    pub fn dynamodb() -> Self {
        Self {
            write_units: 1_000.0,
            read_units: 3_000.0,
            burst: Duration::from_secs(1),
            latency: Duration::from_millis(10),
        }
    }

    /// Both unit rates divided by `factor` (the burst and the latency stay).
    pub fn scaled(self, factor: f64) -> Self {
        Self {
            write_units: self.write_units / factor,
            read_units: self.read_units / factor,
            ..self
        }
    }
}

/// What one partition key took during a run.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Usage {
    pub write_units: f64,
    pub read_units: f64,
    pub requests: u64,
}

#[derive(Debug, Default)]
struct Bucket {
    /// When the partition's write (read) capacity is next free: the theoretical arrival time of
    /// the generic cell rate algorithm.
    write_free: Option<Instant>,
    read_free: Option<Instant>,
    usage: Usage,
}

/// The partitions touched by one request, and what it costs in each.
#[derive(Debug, Default, PartialEq)]
struct Charge {
    /// (table, partition key value) → (write units, read units).
    parts: HashMap<(String, String), (f64, f64)>,
}

impl Charge {
    fn write(&mut self, table: &str, pk: String, units: f64) {
        self.parts.entry((table.to_owned(), pk)).or_default().0 += units;
    }

    fn read(&mut self, table: &str, pk: String, units: f64) {
        self.parts.entry((table.to_owned(), pk)).or_default().1 += units;
    }
}

/// The shared throttling state of one simulation.
#[derive(Debug)]
pub struct Throttle {
    limits: Limits,
    /// table name → its partition key attribute.
    keys: Mutex<HashMap<String, String>>,
    buckets: Mutex<HashMap<(String, String), Bucket>>,
    waited: Mutex<Duration>,
}

impl Throttle {
    pub fn new(limits: Limits) -> Arc<Self> {
        Arc::new(Self {
            limits,
            keys: Mutex::new(HashMap::new()),
            buckets: Mutex::new(HashMap::new()),
            waited: Mutex::new(Duration::ZERO),
        })
    }

    /// Reads the partition key attribute of every table with DescribeTable (through an
    /// unthrottled client).
    pub async fn learn_tables(&self, client: &aws_sdk_dynamodb::Client) {
        let tables = client
            .list_tables()
            .send()
            .await
            .expect("listing tables on moto");
        for table in tables.table_names() {
            let described = crate::aws::moto::describe_table(client, table).await;
            let hash = described
                .key_schema()
                .iter()
                .find(|k| k.key_type() == &aws_sdk_dynamodb::types::KeyType::Hash)
                .map(|k| k.attribute_name().to_owned())
                .expect("every table has a partition key");
            self.keys.lock().expect("keys").insert(table.clone(), hash);
        }
    }

    /// `sdk` with its HTTP client behind this throttle.
    pub fn wrap(self: &Arc<Self>, sdk: &aws_config::SdkConfig) -> aws_config::SdkConfig {
        let inner = sdk
            .http_client()
            .expect("the SDK config has an HTTP client");
        sdk.to_builder()
            .http_client(SharedHttpClient::new(ThrottledClient {
                inner,
                throttle: self.clone(),
            }))
            // A request held for capacity sends nothing meanwhile, which the stalled-stream
            // guard would take for a dead connection.
            .stalled_stream_protection(
                aws_sdk_dynamodb::config::StalledStreamProtectionConfig::disabled(),
            )
            .build()
    }

    /// What each partition key of `table` took so far, hottest first.
    pub fn usage(&self, table: &str) -> Vec<(String, Usage)> {
        let buckets = self.buckets.lock().expect("buckets");
        let mut out: Vec<(String, Usage)> = buckets
            .iter()
            .filter(|((t, _), _)| t == table)
            .map(|((_, pk), b)| (pk.clone(), b.usage))
            .collect();
        out.sort_by(|a, b| b.1.write_units.total_cmp(&a.1.write_units));
        out
    }

    /// How long requests waited for capacity in all (summed over concurrent requests).
    pub fn waited(&self) -> Duration {
        *self.waited.lock().expect("waited")
    }

    /// Reserves the capacity `charge` needs and returns how long to wait before sending.
    ///
    /// Each partition keeps, per kind of unit, the moment its reserved capacity runs out; a
    /// request may start once that moment is at most [`Limits::burst`] ahead in every partition
    /// it touches, and then moves each of them on by its units over the rate.
    fn reserve(&self, charge: &Charge) -> Duration {
        let now = Instant::now();
        let burst = self.limits.burst;
        let rates = [self.limits.write_units, self.limits.read_units];
        let mut buckets = self.buckets.lock().expect("buckets");
        let mut start = now;
        for (part, (w, r)) in &charge.parts {
            let b = buckets.entry(part.clone()).or_default();
            for (free, units) in [(b.write_free, *w), (b.read_free, *r)] {
                if let (true, Some(free)) = (units > 0.0, free) {
                    start = start.max(free.checked_sub(burst).unwrap_or(now));
                }
            }
        }
        for (part, (w, r)) in &charge.parts {
            let b = buckets.entry(part.clone()).or_default();
            for ((free, units), rate) in [(&mut b.write_free, *w), (&mut b.read_free, *r)]
                .into_iter()
                .zip(rates)
            {
                if units > 0.0 {
                    let from = free.map_or(start, |f| f.max(start));
                    *free = Some(from + Duration::from_secs_f64(units / rate));
                }
            }
            b.usage.write_units += w;
            b.usage.read_units += r;
            b.usage.requests += 1;
        }
        let wait = start - now;
        *self.waited.lock().expect("waited") += wait;
        wait
    }

    /// The partitions a DynamoDB request touches and its cost in each.
    fn charge(&self, target: &str, body: &Value) -> Charge {
        let keys = self.keys.lock().expect("keys");
        let pk_of = |table: &str, item: &Value| -> Option<String> {
            let attr = keys.get(table)?;
            Some(attribute_text(item.get(attr)?))
        };
        let mut charge = Charge::default();
        let table = body["TableName"].as_str().unwrap_or_default();
        match target {
            "PutItem" => {
                if let Some(pk) = pk_of(table, &body["Item"]) {
                    charge.write(table, pk, write_units(&body["Item"]));
                }
            }
            "UpdateItem" | "DeleteItem" => {
                if let Some(pk) = pk_of(table, &body["Key"]) {
                    charge.write(table, pk, update_units(body));
                }
            }
            "GetItem" => {
                if let Some(pk) = pk_of(table, &body["Key"]) {
                    charge.read(table, pk, read_units(body, 1.0));
                }
            }
            "TransactWriteItems" => {
                for action in body["TransactItems"].as_array().into_iter().flatten() {
                    let Some((kind, spec)) = action.as_object().and_then(|o| o.iter().next())
                    else {
                        continue;
                    };
                    let table = spec["TableName"].as_str().unwrap_or_default();
                    let (key, units) = match kind.as_str() {
                        "Put" => (&spec["Item"], write_units(&spec["Item"])),
                        _ => (&spec["Key"], update_units(spec)),
                    };
                    if let Some(pk) = pk_of(table, key) {
                        charge.write(table, pk, 2.0 * units);
                    }
                }
            }
            "BatchWriteItem" => {
                for (table, requests) in body["RequestItems"].as_object().into_iter().flatten() {
                    for request in requests.as_array().into_iter().flatten() {
                        let (key, units) = if let Some(put) = request.get("PutRequest") {
                            (&put["Item"], write_units(&put["Item"]))
                        } else {
                            (&request["DeleteRequest"]["Key"], 1.0)
                        };
                        if let Some(pk) = pk_of(table, key) {
                            charge.write(table, pk, units);
                        }
                    }
                }
            }
            "BatchGetItem" => {
                for (table, spec) in body["RequestItems"].as_object().into_iter().flatten() {
                    let consistent = spec["ConsistentRead"].as_bool().unwrap_or(false);
                    for key in spec["Keys"].as_array().into_iter().flatten() {
                        if let Some(pk) = pk_of(table, key) {
                            charge.read(table, pk, if consistent { 1.0 } else { 0.5 });
                        }
                    }
                }
            }
            "Query" => {
                if let Some(pk) = query_partition(&keys, table, body) {
                    charge.read(table, pk, read_units(body, 1.0));
                }
            }
            _ => {}
        }
        charge
    }
}

/// An attribute value as text (`{"S": "feed"}` → `feed`).
fn attribute_text(value: &Value) -> String {
    match value.as_object().and_then(|o| o.values().next()) {
        Some(Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
        None => value.to_string(),
    }
}

/// The bytes DynamoDB counts for an attribute value.
fn value_size(value: &Value) -> usize {
    match value {
        Value::String(s) => s.len(),
        Value::Bool(_) | Value::Null => 1,
        Value::Number(n) => n.to_string().len(),
        Value::Array(items) => 3 + items.iter().map(value_size).sum::<usize>(),
        Value::Object(map) => {
            // A typed value ({"S": ...}) counts its content; a map counts names and values.
            if map.len() == 1
                && map
                    .keys()
                    .all(|k| k.len() <= 4 && k.chars().all(|c| c.is_ascii_uppercase()))
            {
                map.values().map(value_size).sum()
            } else {
                3 + map
                    .iter()
                    .map(|(k, v)| k.len() + value_size(v))
                    .sum::<usize>()
            }
        }
    }
}

fn item_size(item: &Value) -> usize {
    item.as_object()
        .map(|o| o.iter().map(|(k, v)| k.len() + value_size(v)).sum())
        .unwrap_or(0)
}

fn write_units(item: &Value) -> f64 {
    (item_size(item).div_ceil(1024)).max(1) as f64
}

/// An update or delete: at least one unit, more when the values it sets are larger.
fn update_units(spec: &Value) -> f64 {
    let values = spec["ExpressionAttributeValues"]
        .as_object()
        .map(|o| o.values().map(value_size).sum::<usize>())
        .unwrap_or(0);
    (values.div_ceil(1024)).max(1) as f64
}

fn read_units(spec: &Value, items: f64) -> f64 {
    let consistent = spec["ConsistentRead"].as_bool().unwrap_or(false);
    if consistent {
        items
    } else {
        items / 2.0
    }
}

/// The partition key value a Query's key condition names (`#p = :p` or `pk = :v`).
fn query_partition(keys: &HashMap<String, String>, table: &str, body: &Value) -> Option<String> {
    let attr = keys.get(table)?;
    let condition = body["KeyConditionExpression"].as_str()?;
    let names = body["ExpressionAttributeNames"].as_object();
    let values = body["ExpressionAttributeValues"].as_object()?;
    condition.split(" AND ").find_map(|clause| {
        let (left, right) = clause.split_once('=')?;
        let (left, right) = (left.trim(), right.trim());
        let named = names
            .and_then(|n| n.get(left))
            .and_then(Value::as_str)
            .unwrap_or(left);
        (named == attr)
            .then(|| values.get(right).map(attribute_text))
            .flatten()
    })
}

#[derive(Debug)]
struct ThrottledClient {
    inner: SharedHttpClient,
    throttle: Arc<Throttle>,
}

impl HttpClient for ThrottledClient {
    fn http_connector(
        &self,
        settings: &HttpConnectorSettings,
        components: &RuntimeComponents,
    ) -> SharedHttpConnector {
        SharedHttpConnector::new(ThrottledConnector {
            inner: self.inner.http_connector(settings, components),
            throttle: self.throttle.clone(),
        })
    }
}

#[derive(Debug)]
struct ThrottledConnector {
    inner: SharedHttpConnector,
    throttle: Arc<Throttle>,
}

impl HttpConnector for ThrottledConnector {
    fn call(&self, request: HttpRequest) -> HttpConnectorFuture {
        let target = request
            .headers()
            .get("x-amz-target")
            .and_then(|t| t.strip_prefix("DynamoDB_20120810."))
            .map(str::to_owned);
        let wait = target.and_then(|target| {
            let body: Value = serde_json::from_slice(request.body().bytes()?).ok()?;
            Some(self.throttle.reserve(&self.throttle.charge(&target, &body)))
        });
        let latency = self.throttle.limits.latency;
        let inner = self.inner.clone();
        HttpConnectorFuture::new(async move {
            tokio::time::sleep(wait.unwrap_or_default() + latency).await;
            inner.call(request).await
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn throttle(limits: Limits) -> Arc<Throttle> {
        let t = Throttle::new(limits);
        t.keys.lock().unwrap().extend([
            ("feed".to_owned(), "part".to_owned()),
            ("docs".to_owned(), "id".to_owned()),
        ]);
        t
    }

    fn limits(write_units: f64) -> Limits {
        Limits {
            write_units,
            read_units: 3.0 * write_units,
            burst: Duration::ZERO,
            latency: Duration::ZERO,
        }
    }

    #[test]
    fn a_transaction_costs_double_per_action_by_partition_key_and_kilobyte() {
        let t = throttle(limits(1_000.0));
        let big = "x".repeat(1_500);
        let body = json!({"TransactItems": [
            {"Put": {"TableName": "feed", "Item": {"part": {"S": "head"}, "pos": {"N": "0"}}}},
            {"Put": {"TableName": "feed", "Item": {"part": {"S": "feed"}, "pos": {"N": "1"}, "body": {"S": big}}}},
            {"Update": {"TableName": "docs", "Key": {"id": {"S": "a#1"}}, "ExpressionAttributeValues": {":v": {"N": "1"}}}},
            {"ConditionCheck": {"TableName": "docs", "Key": {"id": {"S": "a#2"}}}},
        ]});
        let charge = t.charge("TransactWriteItems", &body);
        let units = |table: &str, pk: &str| charge.parts[&(table.to_owned(), pk.to_owned())].0;
        assert_eq!(units("feed", "head"), 2.0);
        assert_eq!(
            units("feed", "feed"),
            4.0,
            "1.5 KB rounds up to 2 units, doubled"
        );
        assert_eq!(units("docs", "a#1"), 2.0);
        assert_eq!(units("docs", "a#2"), 2.0);
        // A Query is charged to the partition its key condition names; a Scan to none.
        let query = json!({"TableName": "feed", "KeyConditionExpression": "#p = :p AND #q BETWEEN :a AND :b",
            "ExpressionAttributeNames": {"#p": "part", "#q": "pos"},
            "ExpressionAttributeValues": {":p": {"S": "feed"}, ":a": {"N": "1"}, ":b": {"N": "9"}},
            "ConsistentRead": true});
        let charge = t.charge("Query", &query);
        assert_eq!(
            charge.parts[&("feed".to_owned(), "feed".to_owned())],
            (0.0, 1.0)
        );
        assert!(t
            .charge("Scan", &json!({"TableName": "feed"}))
            .parts
            .is_empty());
    }

    #[test]
    fn a_partition_admits_its_rate_and_other_partitions_are_independent() {
        let t = throttle(limits(100.0));
        let put = |pk: &str| {
            let mut c = Charge::default();
            c.write("docs", pk.to_owned(), 10.0);
            c
        };
        // 10 units at 100/s: each request on the same key starts 100 ms after the previous.
        let waits: Vec<Duration> = (0..5).map(|_| t.reserve(&put("hot"))).collect();
        for (i, wait) in waits.iter().enumerate() {
            let expected = Duration::from_millis(100 * i as u64);
            assert!(
                wait.abs_diff(expected) < Duration::from_millis(20),
                "request {i} waited {wait:?}, expected about {expected:?}"
            );
        }
        // Another key is not held up by the hot one.
        assert!(t.reserve(&put("cold")) < Duration::from_millis(20));
        // A request touching both waits for the hot one.
        let mut both = put("hot");
        both.write("docs", "cold".to_owned(), 10.0);
        assert!(t.reserve(&both) >= Duration::from_millis(450));
        let usage = t.usage("docs");
        assert_eq!(usage[0].0, "hot");
        assert_eq!(usage[0].1.write_units, 60.0);
        assert_eq!(usage[0].1.requests, 6);
    }
}
