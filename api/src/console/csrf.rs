//! CSRF protection: a signed double-submit token.
//!
//! Every browser gets a random seed in a cookie on its first console request. A form's token is
//! an HMAC, under a key this process draws at start, of that seed and the session token (empty
//! before signing in). A cross-site page can neither read the cookie nor compute the token, and
//! a planted cookie is worthless without the key. Every POST is checked by [`check`].

use super::page::Failure;
use axum::http::HeaderMap;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use std::sync::LazyLock;

/// The cookie holding the browser's seed.
pub const SEED_COOKIE: &str = "console_csrf";
/// The form field holding the token.
pub const FIELD: &str = "csrf";

/// The key of this process: a restart only makes open forms ask to be loaded again.
static KEY: LazyLock<[u8; 32]> = LazyLock::new(rand::random);

/// The browser's seed, put in the request by the console's middleware.
#[derive(Debug, Clone)]
pub struct Seed(pub String);

/// The request's seed, or a new one (`true`: it must be set as a cookie).
pub fn seed(headers: &HeaderMap) -> (Seed, bool) {
    match super::session::cookie_value(headers, SEED_COOKIE) {
        Some(seed) if seed.len() == 64 && seed.bytes().all(|b| b.is_ascii_hexdigit()) => {
            (Seed(seed), false)
        }
        _ => (Seed(hex::encode(rand::random::<[u8; 32]>())), true),
    }
}

fn mac(seed: &Seed, session: &str) -> Hmac<Sha256> {
    // HMAC accepts a key of any length (longer ones are hashed), so this cannot fail.
    let mut mac = Hmac::<Sha256>::new_from_slice(KEY.as_slice()).expect("HMAC takes any key");
    mac.update(seed.0.as_bytes());
    mac.update(&[0]);
    mac.update(session.as_bytes());
    mac
}

/// The token the forms of this seed and session carry.
pub fn token(seed: &Seed, session: &str) -> String {
    hex::encode(mac(seed, session).finalize().into_bytes())
}

/// Checks a posted token (in constant time); 403 when it is missing or wrong.
pub fn check(seed: &Seed, session: &str, posted: Option<&str>) -> Result<(), Failure> {
    let valid = posted
        .and_then(|t| hex::decode(t).ok())
        .is_some_and(|t| mac(seed, session).verify_slice(&t).is_ok());
    if valid {
        Ok(())
    } else {
        tracing::warn!("console form refused: missing or wrong csrf token");
        Err(Failure::Csrf)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_is_accepted_only_for_its_own_seed_and_session() {
        let seed = Seed("a".repeat(64));
        let other = Seed("b".repeat(64));
        let token = token(&seed, "session");
        assert!(check(&seed, "session", Some(&token)).is_ok());
        assert!(check(&seed, "another", Some(&token)).is_err());
        assert!(check(&other, "session", Some(&token)).is_err());
        assert!(check(&seed, "session", None).is_err());
        assert!(check(&seed, "session", Some("not hex")).is_err());
    }
}
