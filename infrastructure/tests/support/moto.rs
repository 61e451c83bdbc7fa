//! The local AWS emulator for tests: one `moto_server` per test binary, shared by its tests,
//! which isolate themselves with fresh resource names ([`fresh_names`]).
//!
//! Include it with `#[path = "support/moto.rs"] mod moto;`.
//!
//! - `moto_server` must be on PATH (`scripts/test.sh` installs `moto[server]==5.2.5` into
//!   `./.venv` and puts `./.venv/bin` first). If it is missing or does not answer, the test
//!   PANICS with a message saying so: AWS tests never skip.
//! - The server runs under a small `sh` watchdog that kills it once this test process is gone,
//!   because a `static` is never dropped and the process may also die from a panic or a signal.
//! - moto's TransactWriteItems is not atomic under concurrent requests (it checks and writes item
//!   by item and rolls back a failed transaction by restoring a deep copy of each table taken
//!   before it started, which also erases writes other requests made meanwhile). Real DynamoDB
//!   serializes transactions, and the store's conformance suite has concurrency checks, so the
//!   server is started through a tiny launcher that runs moto's own WSGI app with one lock
//!   around DynamoDB requests (DynamoDB only: SQS long polls and everything else stay
//!   concurrent). The launcher also fixes a cost bug of the same function: it deep-copies the
//!   whole table once per ACTION, so a 100-event commit on a table of 1,000 items took ~14 s;
//!   it now copies each table once per transaction. CloudFormation requests take the same lock:
//!   a stack deployment creates DynamoDB tables. See [`LAUNCHER`].
//! - Every test starts from a stage of its own deployed from the template ([`fresh_stack`]),
//!   the way `backbone provision` deploys it.
#![allow(dead_code)]

use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_sdk_cloudformation::types::Stack;
use aws_sdk_dynamodb::config::Credentials;
use aws_sdk_dynamodb::types::TableDescription;
use infrastructure::aws::{provision, Provisioned, ResourceNames, StackSpec};
use std::io::Write;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// Runs moto's server app (the same one `moto_server` runs) with DynamoDB requests serialized.
/// Arguments: host, port.
pub const LAUNCHER: &str = r#"
import copy, sys, threading, types
from werkzeug.serving import run_simple
from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app
import moto.dynamodb.models as ddb_models
from moto.dynamodb.models.table import Table

# moto 5.2.5 backs up each table once per ACTION of a TransactWriteItems (a deep copy of the
# whole table, stream records included), which makes a 100-action transaction on a 1,000-item
# table take seconds. The copies are all taken before the first write, so one per table is the
# same backup.
_transact_write_items = ddb_models.DynamoDBBackend.transact_write_items

def _transact_copying_each_table_once(self, transact_items):
    copies = {}
    def deepcopy(obj, memo=None):
        if isinstance(obj, Table):
            if id(obj) not in copies:
                copies[id(obj)] = copy.deepcopy(obj, memo)
            return copies[id(obj)]
        return copy.deepcopy(obj, memo)
    # Safe to swap: DynamoDB requests run one at a time (see `serialized`).
    ddb_models.copy = types.SimpleNamespace(deepcopy=deepcopy)
    try:
        return _transact_write_items(self, transact_items)
    finally:
        ddb_models.copy = copy

ddb_models.DynamoDBBackend.transact_write_items = _transact_copying_each_table_once

host, port = sys.argv[1], int(sys.argv[2])
app = DomainDispatcherApplication(create_backend_app)
lock = threading.Lock()

def serialized(environ, start_response):
    target = environ.get("HTTP_X_AMZ_TARGET", "")
    # CloudFormation speaks the query protocol: its service shows in the signature's scope.
    deploys = "/cloudformation/aws4_request" in environ.get("HTTP_AUTHORIZATION", "")
    if target.startswith("DynamoDB") or deploys:
        with lock:
            # Consume the whole response inside the lock: the backend may run lazily.
            body = list(app(environ, start_response))
        return body
    return app(environ, start_response)

run_simple(host, port, serialized, threaded=True, use_reloader=False)
"#;

/// A running emulator.
pub struct Moto {
    pub endpoint: String,
    pub log: PathBuf,
    watchdog: Child,
}

static MOTO: OnceLock<Moto> = OnceLock::new();

/// The emulator of this test binary, started on first use.
pub fn moto() -> &'static Moto {
    MOTO.get_or_init(start)
}

fn find_on_path(bin: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(bin))
        .find(|p| p.is_file())
}

/// The Python interpreter `moto_server` runs with (from its shebang), so the launcher imports
/// the same moto.
fn moto_python(moto_server: &Path) -> PathBuf {
    let text = std::fs::read_to_string(moto_server).unwrap_or_default();
    let shebang = text.lines().next().unwrap_or_default();
    match shebang.strip_prefix("#!") {
        Some(interp) if !interp.contains("/env ") && !interp.trim().is_empty() => {
            PathBuf::from(interp.trim())
        }
        _ => moto_server.with_file_name("python3"),
    }
}

/// The Python interpreter a script on PATH runs with (for example `cfn-lint`'s, to use its
/// modules), or `None` when the script is not on PATH.
pub fn python_of(script: &str) -> Option<PathBuf> {
    find_on_path(script).map(|path| moto_python(&path))
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or_else(|e| panic!("cannot find a free local port for moto: {e}"))
}

fn start() -> Moto {
    let Some(moto_server) = find_on_path("moto_server") else {
        panic!(
            "moto_server is not on PATH. The AWS tests need moto[server]==5.2.5: run them through \
             scripts/test.sh, or `python3 -m venv .venv && .venv/bin/pip install \
             \"moto[server]==5.2.5\"` and put .venv/bin first on PATH"
        );
    };
    let python = moto_python(&moto_server);
    let mut last_error = String::new();
    for _ in 0..3 {
        let port = free_port();
        let log = std::env::temp_dir().join(format!("moto-{}-{port}.log", std::process::id()));
        let launcher =
            std::env::temp_dir().join(format!("moto-launcher-{}.py", std::process::id()));
        if let Err(e) =
            std::fs::File::create(&launcher).and_then(|mut f| f.write_all(LAUNCHER.as_bytes()))
        {
            panic!(
                "cannot write the moto launcher to {}: {e}",
                launcher.display()
            );
        }
        // The watchdog polls this process every second and takes moto down with it.
        let script = format!(
            "'{py}' '{launcher}' 127.0.0.1 {port} >'{log}' 2>&1 & m=$!; \
             while kill -0 {parent} 2>/dev/null && kill -0 $m 2>/dev/null; do sleep 1; done; \
             kill $m 2>/dev/null; wait $m",
            py = python.display(),
            launcher = launcher.display(),
            log = log.display(),
            parent = std::process::id(),
        );
        let mut watchdog = Command::new("sh")
            .arg("-c")
            .arg(&script)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start moto ({}): {e}", python.display()));
        let addr: SocketAddr = ([127, 0, 0, 1], port).into();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                return Moto {
                    endpoint: format!("http://127.0.0.1:{port}"),
                    log,
                    watchdog,
                };
            }
            if let Ok(Some(status)) = watchdog.try_wait() {
                last_error = format!(
                    "moto exited ({status}) before answering on port {port}; its log ({}):\n{}",
                    log.display(),
                    std::fs::read_to_string(&log).unwrap_or_default()
                );
                break;
            }
            if Instant::now() > deadline {
                let _ = watchdog.kill();
                last_error = format!(
                    "moto did not answer on port {port} within 30 s; its log ({}):\n{}",
                    log.display(),
                    std::fs::read_to_string(&log).unwrap_or_default()
                );
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    panic!("moto could not be started: {last_error}");
}

impl Moto {
    /// An SDK config for this emulator: its endpoint, us-east-1 and static test credentials.
    pub async fn sdk_config(&self) -> SdkConfig {
        aws_config::defaults(BehaviorVersion::latest())
            .http_client(infrastructure::aws::http_client())
            .endpoint_url(&self.endpoint)
            .region(Region::new("us-east-1"))
            .credentials_provider(Credentials::new("test", "test", None, None, "static"))
            .load()
            .await
    }

    /// The process id of the watchdog shell (moto runs as its child).
    pub fn watchdog_pid(&self) -> u32 {
        self.watchdog.id()
    }
}

/// Resource names no other test uses: a stage `t<12 hex digits>`.
pub fn fresh_names() -> ResourceNames {
    let id = uuid::Uuid::new_v4().simple().to_string();
    ResourceNames::for_stage(&format!("t{}", &id[..12]))
}

/// The SDK config of this binary's emulator (starting it when needed).
pub async fn sdk_config() -> SdkConfig {
    moto().sdk_config().await
}

/// A fresh stage ([`fresh_names`]) whose stack `cloudformation/backbone.yaml` was deployed
/// through [`provision`], as `backbone provision` deploys it.
pub async fn fresh_stack() -> (ResourceNames, Provisioned) {
    let names = fresh_names();
    let cfn = aws_sdk_cloudformation::Client::new(&sdk_config().await);
    let provisioned = provision(&cfn, &StackSpec::for_stage(&names.stage))
        .await
        .unwrap_or_else(|e| panic!("deploying the template into moto: {e}"));
    (names, provisioned)
}

/// The answer to an SDK request sent to the emulator; a failed request panics with `what`.
async fn answer<T, E: std::fmt::Display>(
    request: impl std::future::Future<Output = Result<T, E>>,
    what: &str,
) -> T {
    request.await.unwrap_or_else(|e| panic!("{what}: {e}"))
}

/// The stack `name` as CloudFormation describes it now.
pub async fn describe_stack(cfn: &aws_sdk_cloudformation::Client, name: &str) -> Stack {
    let request = cfn.describe_stacks().stack_name(name).send();
    let described = answer(request, &format!("describing stack {name}")).await;
    described.stacks()[0].clone()
}

/// The description of table `name`; panics when there is no such table.
pub async fn describe_table(dynamodb: &aws_sdk_dynamodb::Client, name: &str) -> TableDescription {
    let request = dynamodb.describe_table().table_name(name).send();
    let described = answer(request, &format!("table {name} missing")).await;
    described.table().expect("table description").clone()
}

/// Panics unless every table of `names` exists in the emulator.
pub async fn assert_tables_exist(dynamodb: &aws_sdk_dynamodb::Client, names: &ResourceNames) {
    for table in names.tables() {
        describe_table(dynamodb, table).await;
    }
}
