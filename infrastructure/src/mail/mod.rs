//! The mail channels of the notification delivery worker ([`commands::Mailer`]):
//!
//! - [`FileMailer`] (`--notify file`, the embedded default): one RFC 5322 `.eml` file per
//!   message, named after the notification, in an outbox directory;
//! - [`SmtpMailer`] (`--notify smtp`): an SMTP server, through lettre;
//! - `aws::SesMailer` (`--notify ses`): Amazon SES, sending the same raw message.
//!
//! All three send the message [`encode`] builds, so a message looks the same whichever channel
//! carries it: a `multipart/alternative` with the plain-text and the HTML part, and a
//! `Message-ID` derived from the notification id alone (a resend is the same message).

use async_trait::async_trait;
use commands::{MailError, Mailer, OutgoingEmail};
use lettre::message::{Mailbox, Message, MultiPart};
use lettre::{AsyncSmtpTransport, AsyncTransport, Tokio1Executor};
use std::path::PathBuf;

/// The encoded message and its `Message-ID` (with the angle brackets).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Encoded {
    pub message_id: String,
    pub bytes: Vec<u8>,
}

/// Parses a sender address such as `Shop <orders@shop.example>`.
pub fn parse_sender(from: &str) -> Result<Mailbox, String> {
    from.parse::<Mailbox>()
        .map_err(|e| format!("the sender address {from:?} is not a valid mailbox: {e}"))
}

/// Builds the RFC 5322 message of `email` from `from`. A recipient address that is not one is a
/// permanent failure: no retry fixes it.
pub fn encode(email: &OutgoingEmail, from: &Mailbox) -> Result<Encoded, MailError> {
    let to = email.to.parse::<Mailbox>().map_err(|e| {
        MailError::permanent(format!("invalid recipient address {:?}: {e}", email.to))
    })?;
    let message_id = format!("<{}@{}>", email.notification_id, from.email.domain());
    let message = Message::builder()
        .message_id(Some(message_id.clone()))
        .from(from.clone())
        .to(to)
        .subject(email.subject.clone())
        .multipart(MultiPart::alternative_plain_html(
            email.text.clone(),
            email.html.clone(),
        ))
        .map_err(|e| MailError::permanent(format!("the message could not be built: {e}")))?;
    Ok(Encoded {
        message_id,
        bytes: message.formatted(),
    })
}

/// Writes each message to `<dir>/<notification id>.eml`.
///
/// The file appears whole or not at all (written beside it, flushed, then renamed), and a resend
/// replaces it with the same message, so the outbox holds one file per notification.
#[derive(Debug, Clone)]
pub struct FileMailer {
    dir: PathBuf,
    from: Mailbox,
}

impl FileMailer {
    pub fn new(dir: impl Into<PathBuf>, from: Mailbox) -> Self {
        Self {
            dir: dir.into(),
            from,
        }
    }

    /// Where the message of notification `notification_id` is written.
    pub fn path_of(&self, notification_id: &str) -> PathBuf {
        self.dir.join(format!("{notification_id}.eml"))
    }
}

#[async_trait]
impl Mailer for FileMailer {
    fn channel(&self) -> &'static str {
        "file"
    }

    async fn send(&self, email: &OutgoingEmail) -> Result<Option<String>, MailError> {
        let Encoded { message_id, bytes } = encode(email, &self.from)?;
        let path = self.path_of(&email.notification_id);
        let partial = self
            .dir
            // Each write has its own partial file: two workers sending the same message at
            // once each rename a whole file into place.
            .join(format!(
                ".{}.{}.eml.partial",
                email.notification_id,
                uuid::Uuid::new_v4().simple()
            ));
        let dir = self.dir.clone();
        tokio::task::spawn_blocking(move || write_durably(&dir, &partial, &path, &bytes))
            .await
            .map_err(|e| MailError::transient(format!("the outbox writer: {e}")))?
            .map_err(|e| MailError::transient(format!("the outbox: {e}")))?;
        Ok(Some(message_id))
    }
}

/// Writes `bytes` to `partial`, flushes it to disk, renames it to `path` and flushes the
/// directory: once the delivery is recorded, the file survives a power loss.
fn write_durably(
    dir: &std::path::Path,
    partial: &std::path::Path,
    path: &std::path::Path,
    bytes: &[u8],
) -> std::io::Result<()> {
    use std::io::Write;
    std::fs::create_dir_all(dir)?;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    // A message names its recipient: readable by the server's user only.
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(partial)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    std::fs::rename(partial, path)?;
    std::fs::File::open(dir)?.sync_all()
}

/// Sends each message to an SMTP server.
///
/// The server is given as a URL: `smtp://host:port` (plain, as a local relay), with
/// `?tls=required` for STARTTLS, or `smtps://host:port` for implicit TLS; credentials go in the
/// URL's user part. A 5xx answer is a permanent failure, anything else (4xx, a connection that
/// fails) is retried.
#[derive(Clone)]
pub struct SmtpMailer {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
}

impl std::fmt::Debug for SmtpMailer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The URL may hold credentials: the transport is not printed.
        f.debug_struct("SmtpMailer")
            .field("from", &self.from)
            .finish_non_exhaustive()
    }
}

impl SmtpMailer {
    pub fn new(url: &str, from: Mailbox) -> Result<Self, String> {
        let transport = AsyncSmtpTransport::<Tokio1Executor>::from_url(url)
            .map_err(|e| format!("the SMTP URL is not usable: {e}"))?
            .timeout(Some(std::time::Duration::from_secs(30)))
            .build();
        Ok(Self { transport, from })
    }
}

#[async_trait]
impl Mailer for SmtpMailer {
    fn channel(&self) -> &'static str {
        "smtp"
    }

    async fn send(&self, email: &OutgoingEmail) -> Result<Option<String>, MailError> {
        let encoded = encode(email, &self.from)?;
        let to = email
            .to
            .parse::<lettre::Address>()
            .map_err(|e| MailError::permanent(format!("invalid recipient address: {e}")))?;
        let envelope = lettre::address::Envelope::new(Some(self.from.email.clone()), vec![to])
            .map_err(|e| MailError::permanent(format!("the envelope: {e}")))?;
        match self.transport.send_raw(&envelope, &encoded.bytes).await {
            Ok(_) => Ok(Some(encoded.message_id)),
            Err(e) if e.is_permanent() => Err(MailError::permanent(format!("SMTP: {e}"))),
            Err(e) => Err(MailError::transient(format!("SMTP: {e}"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn email(to: &str) -> OutgoingEmail {
        OutgoingEmail {
            notification_id: "0190a0b0-0000-7000-8000-000000000001".into(),
            to: to.into(),
            subject: "Order ord_1 confirmed — merci".into(),
            text: "Thank you.\n".into(),
            html: "<p>Thank you.</p>".into(),
        }
    }

    fn shop() -> Mailbox {
        parse_sender("Shop <orders@shop.example>").unwrap()
    }

    #[test]
    fn a_message_is_multipart_with_a_message_id_from_the_notification_alone() {
        let first = encode(&email("alice@example.com"), &shop()).unwrap();
        let again = encode(&email("alice@example.com"), &shop()).unwrap();
        assert_eq!(
            first.message_id,
            "<0190a0b0-0000-7000-8000-000000000001@shop.example>"
        );
        assert_eq!(first.message_id, again.message_id);
        let text = String::from_utf8(first.bytes).unwrap();
        assert!(
            text.contains("Message-ID: <0190a0b0-0000-7000-8000-000000000001@shop.example>\r\n")
        );
        assert!(text.contains("To: alice@example.com\r\n"), "{text}");
        assert!(text.contains("Content-Type: multipart/alternative;"));
        assert!(text.contains("Content-Type: text/plain; charset=utf-8"));
        assert!(text.contains("Content-Type: text/html; charset=utf-8"));
        // A non-ASCII subject is encoded (RFC 2047), never sent raw.
        assert!(text.contains("Subject: Order ord_1 confirmed =?utf-8?b?4oCU?= merci\r\n"));
    }

    #[test]
    fn a_bad_recipient_is_a_permanent_failure() {
        let err = encode(&email("not an address"), &shop()).unwrap_err();
        assert!(err.permanent, "{err:?}");
        assert!(err.reason.contains("invalid recipient"));
        assert!(parse_sender("nobody").is_err());
    }

    #[tokio::test]
    async fn the_file_channel_writes_one_file_per_notification_and_a_resend_replaces_it() {
        let dir = tempfile::tempdir().unwrap();
        let mailer = FileMailer::new(dir.path().join("outbox"), shop());
        let sent = mailer.send(&email("alice@example.com")).await.unwrap();
        let again = mailer.send(&email("alice@example.com")).await.unwrap();
        assert_eq!(sent, again);
        let files: Vec<_> = std::fs::read_dir(dir.path().join("outbox"))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(files, ["0190a0b0-0000-7000-8000-000000000001.eml"]);
        let text = std::fs::read_to_string(mailer.path_of(&email("x").notification_id)).unwrap();
        assert!(
            text.contains("From: Shop <orders@shop.example>\r\n"),
            "{text}"
        );
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let path = mailer.path_of(&email("x").notification_id);
            let mode = std::fs::metadata(path).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600, "a message is readable by its owner only");
        }
    }

    #[tokio::test]
    async fn an_unreachable_smtp_server_is_a_transient_failure() {
        // A port that was just free: nothing listens there.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mailer = SmtpMailer::new(&format!("smtp://127.0.0.1:{port}"), shop()).unwrap();
        let err = mailer.send(&email("alice@example.com")).await.unwrap_err();
        assert!(!err.permanent, "{err:?}");
        assert!(SmtpMailer::new("http://nope", shop()).is_err());
    }
}
