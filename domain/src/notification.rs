//! The notification aggregate: the delivery history of one message to a customer.
//!
//! The message itself (who, what, why) is decided by the order lifecycle and kept by the
//! notifications read model; this stream records only what happened when a delivery worker
//! tried to send it: delivered, retrying (with when to try next), or failed for good. The stream
//! id is the notification's id, the id of the event that called for it, so every worker and every
//! rebuild agrees on it.
//!
//! A delivered or failed notification is closed: a second worker that sent it too (delivery is at
//! least once) is told so and records nothing. The retry schedule is the command's
//! [`RetryPolicy`], so deciding stays pure. Support may ask to resend a failed one: it is due
//! again at once, for one more attempt.

use crate::aggregate::{aggregate, domain_events, StreamType};
use crate::ids::{NotificationId, OrderId};
use crate::text::trimmed_within;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// Longest recorded failure reason, in characters; longer reasons are cut.
pub const MAX_FAILURE_REASON_CHARS: usize = 500;
/// Longest channel name or provider message id, in characters.
pub const MAX_DELIVERY_REF_CHARS: usize = 200;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NotificationStatus {
    /// No attempt recorded yet.
    #[default]
    Pending,
    /// The last attempt failed; another is due at `next_attempt_at`.
    Retrying,
    Delivered,
    /// Given up: too many attempts, or a failure no retry can fix.
    Failed,
}

impl NotificationStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            NotificationStatus::Pending => "pending",
            NotificationStatus::Retrying => "retrying",
            NotificationStatus::Delivered => "delivered",
            NotificationStatus::Failed => "failed",
        }
    }

    /// Delivered or failed: nothing more will be attempted.
    pub fn is_closed(self) -> bool {
        matches!(
            self,
            NotificationStatus::Delivered | NotificationStatus::Failed
        )
    }
}

/// State of one notification's delivery stream.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Notification {
    pub id: Option<NotificationId>,
    pub status: NotificationStatus,
    /// Attempts recorded so far.
    pub attempts: u32,
    pub next_attempt_at: Option<DateTime<Utc>>,
    /// The order and kind every event of the stream names (absent from states saved before
    /// they were kept).
    #[serde(default)]
    pub order_id: Option<OrderId>,
    #[serde(default)]
    pub kind: Option<String>,
}

/// How often, and how far apart, deliveries are tried: attempt `n` (from 1) that fails is
/// retried after `base * 2^(n-1)`, at most `cap`, until `max_attempts` attempts have failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    pub max_attempts: u32,
    pub base: chrono::Duration,
    pub cap: chrono::Duration,
}

impl Default for RetryPolicy {
    /// Six attempts over about half an hour: 1, 2, 4, 8 and 16 minutes apart.
    fn default() -> Self {
        Self {
            max_attempts: 6,
            base: chrono::Duration::minutes(1),
            cap: chrono::Duration::hours(1),
        }
    }
}

impl RetryPolicy {
    /// The wait after failed attempt `attempt` (from 1).
    pub fn backoff(&self, attempt: u32) -> chrono::Duration {
        let doublings = attempt.saturating_sub(1).min(30);
        self.base
            .checked_mul(1_i32 << doublings)
            .map_or(self.cap, |wait| wait.min(self.cap))
    }
}

/// What one delivery attempt came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AttemptOutcome {
    /// The channel accepted the message; `message_id` is the provider's id for it, if it gives
    /// one.
    Sent { message_id: Option<String> },
    /// The channel refused or could not be reached. A `permanent` failure (a rejected address)
    /// is not retried.
    Failed { reason: String, permanent: bool },
}

#[derive(Debug, Clone, PartialEq)]
pub enum NotificationCommand {
    /// Records one attempt to send the notification through `channel`.
    RecordAttempt {
        notification_id: NotificationId,
        /// The order the message is about, and what kind of message it is (for example
        /// `order_confirmed`): recorded so that support's timeline can tell.
        order_id: OrderId,
        kind: String,
        channel: String,
        outcome: AttemptOutcome,
        at: DateTime<Utc>,
        policy: RetryPolicy,
    },
    /// Makes a failed notification due again at `at`, for one more attempt (support).
    Resend {
        notification_id: NotificationId,
        at: DateTime<Utc>,
    },
}

domain_events! {
    #[derive(Debug, Clone, PartialEq)]
    pub enum NotificationEvent in event_names {
        NOTIFICATION_DELIVERED = "NotificationDelivered", version 1 => NotificationDelivered {
            notification_id: NotificationId,
            order_id: OrderId,
            kind: String,
            channel: String,
            attempt: u32,
            message_id: Option<String>,
            at: DateTime<Utc>,
        },
        NOTIFICATION_RETRYING = "NotificationRetrying", version 1 => NotificationRetrying {
            notification_id: NotificationId,
            order_id: OrderId,
            kind: String,
            channel: String,
            attempt: u32,
            reason: String,
            at: DateTime<Utc>,
            next_attempt_at: DateTime<Utc>,
        },
        NOTIFICATION_FAILED = "NotificationFailed", version 1 => NotificationFailed {
            notification_id: NotificationId,
            order_id: OrderId,
            kind: String,
            channel: String,
            attempt: u32,
            reason: String,
            at: DateTime<Utc>,
        },
        NOTIFICATION_RESEND_REQUESTED = "NotificationResendRequested", version 1 => NotificationResendRequested {
            notification_id: NotificationId,
            order_id: OrderId,
            kind: String,
            /// Attempts made before the resend.
            attempts: u32,
            /// When it is due again.
            at: DateTime<Utc>,
        },
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NotificationError {
    #[error("the notification was already delivered")]
    AlreadyDelivered,
    #[error("the notification already failed for good")]
    AlreadyFailed,
    #[error("only a notification that failed for good can be resent")]
    NotFailed,
    #[error("a notification's {field} must be 1 to 200 characters")]
    Invalid { field: &'static str },
    #[error("a command names notification {given}, but this stream is {stream}")]
    WrongNotification {
        given: NotificationId,
        stream: NotificationId,
    },
}

impl Notification {
    /// Decides a command: pure, synchronous; `Aggregate::handle` calls it.
    pub fn decide(
        &self,
        command: NotificationCommand,
    ) -> Result<Vec<NotificationEvent>, NotificationError> {
        match command {
            NotificationCommand::Resend {
                notification_id,
                at,
            } => {
                self.check_stream(&notification_id)?;
                self.resend(notification_id, at)
            }
            NotificationCommand::RecordAttempt {
                notification_id,
                order_id,
                kind,
                channel,
                outcome,
                at,
                policy,
            } => {
                self.check_stream(&notification_id)?;
                match self.status {
                    NotificationStatus::Delivered => {
                        return Err(NotificationError::AlreadyDelivered)
                    }
                    NotificationStatus::Failed => return Err(NotificationError::AlreadyFailed),
                    NotificationStatus::Pending | NotificationStatus::Retrying => {}
                }
                let channel = trimmed_within(&channel, MAX_DELIVERY_REF_CHARS)
                    .ok_or(NotificationError::Invalid { field: "channel" })?;
                let kind = trimmed_within(&kind, MAX_DELIVERY_REF_CHARS)
                    .ok_or(NotificationError::Invalid { field: "kind" })?;
                let attempt = self.attempts.saturating_add(1);
                let event = match outcome {
                    AttemptOutcome::Sent { message_id } => {
                        NotificationEvent::NotificationDelivered {
                            notification_id,
                            order_id,
                            kind,
                            channel,
                            attempt,
                            message_id: message_id.map(|id| cut(&id, MAX_DELIVERY_REF_CHARS)),
                            at,
                        }
                    }
                    AttemptOutcome::Failed { reason, permanent } => {
                        let reason = cut(&reason, MAX_FAILURE_REASON_CHARS);
                        if permanent || attempt >= policy.max_attempts {
                            NotificationEvent::NotificationFailed {
                                notification_id,
                                order_id,
                                kind,
                                channel,
                                attempt,
                                reason,
                                at,
                            }
                        } else {
                            NotificationEvent::NotificationRetrying {
                                notification_id,
                                order_id,
                                kind,
                                channel,
                                attempt,
                                reason,
                                at,
                                next_attempt_at: at
                                    .checked_add_signed(policy.backoff(attempt))
                                    .unwrap_or(DateTime::<Utc>::MAX_UTC),
                            }
                        }
                    }
                };
                Ok(vec![event])
            }
        }
    }

    /// A command must name this stream's notification.
    fn check_stream(&self, given: &NotificationId) -> Result<(), NotificationError> {
        match &self.id {
            Some(stream) if stream != given => Err(NotificationError::WrongNotification {
                given: given.clone(),
                stream: stream.clone(),
            }),
            _ => Ok(()),
        }
    }

    /// A failed notification, due again at `at`.
    fn resend(
        &self,
        notification_id: NotificationId,
        at: DateTime<Utc>,
    ) -> Result<Vec<NotificationEvent>, NotificationError> {
        match (self.status, &self.order_id, &self.kind) {
            (NotificationStatus::Failed, Some(order_id), Some(kind)) => {
                Ok(vec![NotificationEvent::NotificationResendRequested {
                    notification_id,
                    order_id: order_id.clone(),
                    kind: kind.clone(),
                    attempts: self.attempts,
                    at,
                }])
            }
            _ => Err(NotificationError::NotFailed),
        }
    }

    /// Folds one event into the state.
    pub fn evolve(&mut self, event: &NotificationEvent) {
        use NotificationEvent as E;
        let (E::NotificationDelivered {
            notification_id,
            order_id,
            kind,
            ..
        }
        | E::NotificationRetrying {
            notification_id,
            order_id,
            kind,
            ..
        }
        | E::NotificationFailed {
            notification_id,
            order_id,
            kind,
            ..
        }
        | E::NotificationResendRequested {
            notification_id,
            order_id,
            kind,
            ..
        }) = event;
        // The status it moves to, the attempt it records (a resend records none) and when the
        // next attempt is due.
        let (status, attempt, next_attempt_at) = match event {
            E::NotificationDelivered { attempt, .. } => {
                (NotificationStatus::Delivered, Some(*attempt), None)
            }
            E::NotificationRetrying {
                attempt,
                next_attempt_at,
                ..
            } => (
                NotificationStatus::Retrying,
                Some(*attempt),
                Some(*next_attempt_at),
            ),
            E::NotificationFailed { attempt, .. } => {
                (NotificationStatus::Failed, Some(*attempt), None)
            }
            E::NotificationResendRequested { at, .. } => {
                (NotificationStatus::Retrying, None, Some(*at))
            }
        };
        self.id = Some(notification_id.clone());
        self.order_id = Some(order_id.clone());
        self.kind = Some(kind.clone());
        self.status = status;
        if let Some(attempt) = attempt {
            self.attempts = attempt;
        }
        self.next_attempt_at = next_attempt_at;
    }
}

/// At most `max` characters of `text`, trimmed (a reason from a provider can be long).
fn cut(text: &str, max: usize) -> String {
    text.trim().chars().take(max).collect()
}

aggregate!(
    Notification,
    StreamType::Notification,
    NotificationCommand,
    NotificationEvent,
    NotificationError
);

#[cfg(test)]
mod tests {
    use super::*;

    fn id() -> NotificationId {
        NotificationId::parse("0190a0b0-0000-7000-8000-000000000001").unwrap()
    }

    fn at(minute: i64) -> DateTime<Utc> {
        DateTime::<Utc>::UNIX_EPOCH + chrono::Duration::minutes(minute)
    }

    fn attempt(outcome: AttemptOutcome, minute: i64) -> NotificationCommand {
        NotificationCommand::RecordAttempt {
            notification_id: id(),
            order_id: OrderId::parse("ord_1").unwrap(),
            kind: "order_confirmed".into(),
            channel: "file".into(),
            outcome,
            at: at(minute),
            policy: RetryPolicy {
                max_attempts: 3,
                ..RetryPolicy::default()
            },
        }
    }

    fn failed(permanent: bool) -> AttemptOutcome {
        AttemptOutcome::Failed {
            reason: "connection refused".into(),
            permanent,
        }
    }

    fn run(state: &mut Notification, command: NotificationCommand) -> Vec<NotificationEvent> {
        let events = state.decide(command).unwrap();
        events.iter().for_each(|e| state.evolve(e));
        events
    }

    #[test]
    fn backoff_doubles_up_to_the_cap_and_never_overflows() {
        let policy = RetryPolicy::default();
        assert_eq!(policy.backoff(1), chrono::Duration::minutes(1));
        assert_eq!(policy.backoff(3), chrono::Duration::minutes(4));
        assert_eq!(policy.backoff(7), chrono::Duration::hours(1));
        assert_eq!(policy.backoff(u32::MAX), chrono::Duration::hours(1));
    }

    #[test]
    fn failures_retry_with_backoff_then_fail_after_the_last_attempt() {
        let mut state = Notification::default();
        let first = run(&mut state, attempt(failed(false), 0));
        assert!(matches!(
            &first[..],
            [NotificationEvent::NotificationRetrying { attempt: 1, next_attempt_at, .. }]
                if *next_attempt_at == at(1)
        ));
        let second = run(&mut state, attempt(failed(false), 1));
        assert!(matches!(
            &second[..],
            [NotificationEvent::NotificationRetrying { attempt: 2, next_attempt_at, .. }]
                if *next_attempt_at == at(3)
        ));
        let third = run(&mut state, attempt(failed(false), 3));
        assert!(matches!(
            &third[..],
            [NotificationEvent::NotificationFailed { attempt: 3, .. }]
        ));
        assert_eq!(state.status, NotificationStatus::Failed);
        assert_eq!(
            state.decide(attempt(failed(false), 9)),
            Err(NotificationError::AlreadyFailed)
        );
    }

    #[test]
    fn a_permanent_failure_is_not_retried() {
        let mut state = Notification::default();
        let events = run(&mut state, attempt(failed(true), 0));
        assert!(matches!(
            &events[..],
            [NotificationEvent::NotificationFailed { attempt: 1, .. }]
        ));
    }

    #[test]
    fn a_delivered_notification_is_closed() {
        let mut state = Notification::default();
        run(&mut state, attempt(failed(false), 0));
        let sent = AttemptOutcome::Sent {
            message_id: Some("m-1".into()),
        };
        let events = run(&mut state, attempt(sent.clone(), 2));
        assert!(matches!(
            &events[..],
            [NotificationEvent::NotificationDelivered { attempt: 2, .. }]
        ));
        assert_eq!(
            state.decide(attempt(sent, 3)),
            Err(NotificationError::AlreadyDelivered)
        );
    }

    #[test]
    fn a_blank_channel_or_another_streams_id_is_refused() {
        let mut command = attempt(failed(false), 0);
        let NotificationCommand::RecordAttempt { channel, .. } = &mut command else {
            unreachable!("an attempt")
        };
        *channel = "  ".into();
        assert_eq!(
            Notification::default().decide(command),
            Err(NotificationError::Invalid { field: "channel" })
        );
        let mut state = Notification::default();
        run(&mut state, attempt(failed(false), 0));
        let mut other = attempt(failed(false), 1);
        let NotificationCommand::RecordAttempt {
            notification_id, ..
        } = &mut other
        else {
            unreachable!("an attempt")
        };
        *notification_id = NotificationId::parse("other").unwrap();
        assert!(matches!(
            state.decide(other),
            Err(NotificationError::WrongNotification { .. })
        ));
    }

    fn resend(minute: i64) -> NotificationCommand {
        NotificationCommand::Resend {
            notification_id: id(),
            at: at(minute),
        }
    }

    #[test]
    fn a_failed_notification_can_be_resent_for_one_more_attempt() {
        let mut state = Notification::default();
        assert_eq!(state.decide(resend(0)), Err(NotificationError::NotFailed));
        run(&mut state, attempt(failed(true), 0));
        let events = run(&mut state, resend(5));
        assert!(matches!(
            &events[..],
            [NotificationEvent::NotificationResendRequested { attempts: 1, at: due, kind, .. }]
                if *due == at(5) && kind == "order_confirmed"
        ));
        assert_eq!(state.status, NotificationStatus::Retrying);
        assert_eq!(state.next_attempt_at, Some(at(5)));
        assert_eq!(state.decide(resend(6)), Err(NotificationError::NotFailed));
        // One more attempt: failing again fails it for good (the policy allows 3 in all).
        run(&mut state, attempt(failed(false), 5));
        let again = run(&mut state, attempt(failed(false), 6));
        assert!(matches!(
            &again[..],
            [NotificationEvent::NotificationFailed { attempt: 3, .. }]
        ));
    }
}
