//! The `ses` notification channel: each message, encoded as for every channel
//! ([`crate::mail::encode`]), is sent raw through SES v2's `SendEmail`, so SES delivers exactly
//! the MIME the file and SMTP channels produce, `Message-ID` included.

use crate::mail::encode;
use async_trait::async_trait;
use aws_sdk_sesv2::error::SdkError;
use aws_sdk_sesv2::operation::send_email::SendEmailError;
use aws_sdk_sesv2::primitives::Blob;
use aws_sdk_sesv2::types::{EmailContent, RawMessage};
use commands::{MailError, Mailer, OutgoingEmail};
use lettre::message::Mailbox;

/// Sends messages through Amazon SES from a verified sender identity.
#[derive(Debug, Clone)]
pub struct SesMailer {
    client: aws_sdk_sesv2::Client,
    from: Mailbox,
}

impl SesMailer {
    pub fn new(client: aws_sdk_sesv2::Client, from: Mailbox) -> Self {
        Self { client, from }
    }
}

#[async_trait]
impl Mailer for SesMailer {
    fn channel(&self) -> &'static str {
        "ses"
    }

    async fn send(&self, email: &OutgoingEmail) -> Result<Option<String>, MailError> {
        let encoded = encode(email, &self.from)?;
        let raw = RawMessage::builder()
            .data(Blob::new(encoded.bytes))
            .build()
            .map_err(|e| MailError::permanent(format!("SES raw message: {e}")))?;
        let sent = self
            .client
            .send_email()
            .from_email_address(self.from.email.to_string())
            .content(EmailContent::builder().raw(raw).build())
            .send()
            .await
            .map_err(classify)?;
        Ok(sent.message_id().map(str::to_owned))
    }
}

/// A refused message or request is permanent; throttling, quotas, 5xx and transport failures
/// are retried.
fn classify(err: SdkError<SendEmailError>) -> MailError {
    let reason = format!("SES: {}", aws_sdk_sesv2::error::DisplayErrorContext(&err));
    match err.as_service_error() {
        Some(
            SendEmailError::MessageRejected(_)
            | SendEmailError::BadRequestException(_)
            | SendEmailError::MailFromDomainNotVerifiedException(_)
            | SendEmailError::AccountSuspendedException(_),
        ) => MailError::permanent(reason),
        _ => MailError::transient(reason),
    }
}
