//! Choosing the notification channel of a process (`--notify file|smtp|ses` and its settings)
//! and building the delivery worker around it: the same on every backend.

use anyhow::Context;
use commands::{Clock, Mailer, Shop};
use domain::RetryPolicy;
use infrastructure::mail::{parse_sender, FileMailer, SmtpMailer};
use projections::ReadModelStore;
use std::path::PathBuf;
use std::sync::Arc;
use workers::DeliveryWorker;

/// The sender of the demo shop's messages (`--mail-from`); a real shop sets its own.
pub const DEFAULT_MAIL_FROM: &str = "Backbone demo shop <orders@backbone.localhost>";

/// Where notifications go: `--notify` (`BACKBONE_NOTIFY`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum NotifyChannel {
    /// One `.eml` file per message in the outbox directory (the embedded default).
    File,
    /// An SMTP server (`--smtp-url`).
    Smtp,
    /// Amazon SES, from a verified sender identity (the AWS default).
    Ses,
}

/// The delivery settings of a process.
#[derive(Clone)]
pub struct NotifySettings {
    pub channel: NotifyChannel,
    /// The sender mailbox, for example `Shop <orders@shop.example>`.
    pub from: String,
    /// `smtp://host:port`, `smtp://host:port?tls=required` or `smtps://user:pass@host`.
    pub smtp_url: Option<String>,
    /// The `file` channel's directory; the embedded default is `<data>/outbox`.
    pub outbox: Option<PathBuf>,
    /// Attempts before a notification is failed (`--notify-attempts`).
    pub max_attempts: u32,
    /// The wait after the first failed attempt, doubled after each next one
    /// (`--notify-backoff`).
    pub backoff: std::time::Duration,
}

impl NotifySettings {
    pub fn new(channel: NotifyChannel) -> Self {
        Self {
            channel,
            from: DEFAULT_MAIL_FROM.to_owned(),
            smtp_url: None,
            outbox: None,
            max_attempts: RetryPolicy::default().max_attempts,
            backoff: RetryPolicy::default()
                .base
                .to_std()
                .unwrap_or(std::time::Duration::from_secs(60)),
        }
    }

    /// The retry policy of these settings.
    pub fn policy(&self) -> RetryPolicy {
        let base = chrono::Duration::from_std(self.backoff)
            .unwrap_or(chrono::Duration::MAX)
            .max(chrono::Duration::milliseconds(1));
        let default = RetryPolicy::default();
        RetryPolicy {
            max_attempts: self.max_attempts.max(1),
            base,
            cap: default.cap.max(base),
        }
    }

    /// The channel these settings name. `ses` needs the AWS configuration of the process.
    pub fn mailer(&self, aws: Option<&aws_config::SdkConfig>) -> anyhow::Result<Arc<dyn Mailer>> {
        let from = parse_sender(&self.from)
            .map_err(anyhow::Error::msg)
            .context("--mail-from")?;
        Ok(match self.channel {
            NotifyChannel::File => {
                let dir = self
                    .outbox
                    .clone()
                    .context("--notify file needs an outbox directory (--outbox)")?;
                Arc::new(FileMailer::new(dir, from))
            }
            NotifyChannel::Smtp => {
                let url = self
                    .smtp_url
                    .as_deref()
                    .filter(|u| !u.trim().is_empty())
                    .context("--notify smtp needs the server's URL (--smtp-url)")?;
                Arc::new(
                    SmtpMailer::new(url, from)
                        .map_err(anyhow::Error::msg)
                        .context("--smtp-url")?,
                )
            }
            NotifyChannel::Ses => {
                let sdk = aws.context(
                    "--notify ses needs the AWS backend (the embedded one sends with file or smtp)",
                )?;
                Arc::new(infrastructure::aws::SesMailer::new(
                    aws_sdk_sesv2::Client::new(sdk),
                    from,
                ))
            }
        })
    }

    /// The delivery worker sending through these settings' channel.
    pub fn worker(
        &self,
        shop: Arc<Shop>,
        models: Arc<dyn ReadModelStore>,
        clock: Arc<dyn Clock>,
        aws: Option<&aws_config::SdkConfig>,
    ) -> anyhow::Result<DeliveryWorker> {
        Ok(DeliveryWorker::new(shop, models, self.mailer(aws)?, clock).with_policy(self.policy()))
    }
}

impl std::fmt::Debug for NotifySettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // An SMTP URL may carry credentials: only whether one is set is shown.
        f.debug_struct("NotifySettings")
            .field("channel", &self.channel)
            .field("from", &self.from)
            .field("smtp_url", &self.smtp_url.as_ref().map(|_| "<set>"))
            .field("outbox", &self.outbox)
            .field("max_attempts", &self.max_attempts)
            .field("backoff", &self.backoff)
            .finish()
    }
}
