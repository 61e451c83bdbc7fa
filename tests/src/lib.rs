#![forbid(unsafe_code)]
//! Shared helpers for the end-to-end suites.
