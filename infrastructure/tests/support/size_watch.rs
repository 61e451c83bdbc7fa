//! Watches a file's size from a thread while a test works: the largest size it saw.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

/// Samples the size of a file (0 while it does not exist) every 2 ms until stopped.
pub struct SizeWatch {
    stop: Arc<AtomicBool>,
    thread: JoinHandle<u64>,
}

impl SizeWatch {
    pub fn start(path: PathBuf) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut largest = 0u64;
            while !stopped.load(Ordering::Acquire) {
                let size = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
                largest = largest.max(size);
                std::thread::sleep(Duration::from_millis(2));
            }
            largest
        });
        Self { stop, thread }
    }

    /// Stops sampling; the largest size seen.
    pub fn stop(self) -> u64 {
        self.stop.store(true, Ordering::Release);
        self.thread.join().expect("size watch thread")
    }

    /// Stops sampling and asserts that the file stayed under `limit` bytes; `what` names it.
    pub fn stop_and_assert_below(self, limit: u64, what: &str) {
        let largest = self.stop();
        assert!(
            largest < limit,
            "{what} stayed small: it reached {largest} bytes"
        );
    }
}
