//! Where the tests read delivered messages back: a local SMTP server ([`SmtpSink`], aiosmtpd
//! from the test venv) and moto's record of the messages SES sent ([`ses_messages`]).

use std::path::PathBuf;
use std::process::Stdio;
use tokio::io::AsyncBufReadExt;
use tokio::process::{Child, Command};

/// The sender every test stage and app sends from (verified on moto by [`verify_sender`]).
pub const TEST_SENDER: &str = "orders@backbone.localhost";

/// An SMTP server on 127.0.0.1 (port chosen by the system) that keeps every message it
/// accepts in a Maildir. Stopped when dropped: its stdin closes and it exits.
pub struct SmtpSink {
    /// `smtp://127.0.0.1:<port>`.
    pub url: String,
    maildir: tempfile::TempDir,
    _child: Child,
}

impl SmtpSink {
    /// Starts a sink; `refuse` is a recipient it refuses with a permanent 550. Panics when the
    /// venv's Python or aiosmtpd is missing: SMTP tests never skip.
    pub async fn start(refuse: Option<&str>) -> SmtpSink {
        let maildir = tempfile::tempdir().expect("maildir");
        let python = venv_python();
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/support/smtp_sink.py");
        let mut command = Command::new(&python);
        command
            .arg(script)
            .arg(maildir.path().join("mail"))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .kill_on_drop(true);
        if let Some(refuse) = refuse {
            command.arg(refuse);
        }
        let mut child = command.spawn().unwrap_or_else(|e| {
            panic!(
                "starting the SMTP sink with {} failed ({e}); run scripts/test.sh, which installs \
                 aiosmtpd into the test venv",
                python.display()
            )
        });
        let stdout = child.stdout.take().expect("sink stdout");
        let mut line = String::new();
        tokio::time::timeout(
            std::time::Duration::from_secs(20),
            tokio::io::BufReader::new(stdout).read_line(&mut line),
        )
        .await
        .expect("the SMTP sink did not start in 20 s (is aiosmtpd installed in the venv?)")
        .expect("reading the SMTP sink's port");
        let port: u16 = line
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("the SMTP sink printed {line:?}, not its port"));
        SmtpSink {
            url: format!("smtp://127.0.0.1:{port}"),
            maildir,
            _child: child,
        }
    }

    /// Every message received so far, as raw text.
    pub fn messages(&self) -> Vec<String> {
        let new = self.maildir.path().join("mail").join("new");
        let Ok(entries) = std::fs::read_dir(new) else {
            return Vec::new();
        };
        let mut messages: Vec<String> = entries
            .filter_map(|e| std::fs::read_to_string(e.ok()?.path()).ok())
            .collect();
        messages.sort();
        messages
    }
}

/// The venv's Python (`BACKBONE_VENV`, set by scripts/test.sh; `.venv` otherwise).
fn venv_python() -> PathBuf {
    let venv = std::env::var_os("BACKBONE_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../.venv")));
    venv.join("bin").join("python")
}

/// Makes [`TEST_SENDER`] a verified SES identity on moto (which refuses to send from anything
/// else, as SES does). Idempotent.
pub async fn verify_sender(sdk: &aws_config::SdkConfig) {
    let ses = aws_sdk_sesv2::Client::new(sdk);
    if let Err(e) = ses
        .create_email_identity()
        .email_identity(TEST_SENDER)
        .send()
        .await
    {
        let already = e
            .as_service_error()
            .is_some_and(|e| e.is_already_exists_exception());
        assert!(
            already,
            "verifying the test sender on moto: {}",
            aws_sdk_sesv2::error::DisplayErrorContext(&e)
        );
    }
}

/// The raw messages SES has sent on moto so far, read back from moto's state
/// (`/moto-api/data.json`, `ses.RawMessage`).
pub async fn ses_messages(moto_endpoint: &str) -> Vec<String> {
    let data: serde_json::Value = reqwest::get(format!("{moto_endpoint}/moto-api/data.json"))
        .await
        .expect("moto's data")
        .json()
        .await
        .expect("moto's data as JSON");
    data["ses"]["RawMessage"]
        .as_array()
        .map(|messages| {
            messages
                .iter()
                .filter_map(|m| m["raw_data"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}
