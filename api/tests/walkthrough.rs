//! Runs scripts/walkthrough.sh against the real `backbone serve` binary.

use std::io::Read;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        // Best effort if the test failed before the graceful stop below.
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

#[test]
fn the_walkthrough_script_completes_against_backbone_serve() {
    let bin = env!("CARGO_BIN_EXE_backbone");
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf();
    let data = tempfile::tempdir().expect("temp dir");
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let mut server = Server(
        Command::new(bin)
            .args([
                "serve",
                "--listen",
                &format!("127.0.0.1:{port}"),
                "--synchronous",
                "normal",
            ])
            .arg("--data")
            .arg(data.path())
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start backbone serve"),
    );

    let out = Command::new("bash")
        .arg(root.join("scripts/walkthrough.sh"))
        .arg(&base)
        .arg(data.path())
        .env("BACKBONE", bin)
        .output()
        .expect("run the walkthrough");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "walkthrough failed\n--- stdout\n{stdout}\n--- stderr\n{stderr}"
    );
    for expected in [
        "order status: paid",
        "delivered: order_confirmed: Order",
        "/outbox/",
        "Message-ID: <",
        "[payment]",
        "events exported",
        "walkthrough finished",
    ] {
        assert!(stdout.contains(expected), "no {expected:?} in\n{stdout}");
    }

    // SIGTERM stops the server gracefully.
    let pid = server.0.id().to_string();
    let killed = Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("kill");
    assert!(killed.success());
    let deadline = Instant::now() + Duration::from_secs(15);
    let status = loop {
        if let Some(status) = server.0.try_wait().expect("wait") {
            break status;
        }
        assert!(Instant::now() < deadline, "the server ignored SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut log = String::new();
    if let Some(mut err) = server.0.stderr.take() {
        let _ = err.read_to_string(&mut log);
    }
    assert!(status.success(), "server exit {status:?}\n{log}");
}
