//! The project's log macros. Every log line goes through one of two families,
//! so a new line has to pick one. Enforced twice: no crate but this one (and the
//! binary, which sets up the subscriber) depends on `tracing`
//! (the test `only_twin_log_logs`), and `clippy.toml` forbids `tracing`'s level
//! macros (`disallowed-macros`) should a crate take the dependency again.
//!
//! * **Limited** ([`error_limited!`], [`warn_limited!`], [`info_limited!`],
//!   [`debug_limited!`]): for every line a client, a NIC, the kernel side or a
//!   driver domain can make happen. Each call site may log at most
//!   [`LINES_PER_SEC`] lines a second; the lines it holds back are counted and
//!   the count goes out with the next line it lets through, as the field
//!   `log_suppressed`. The limit is per call site, like the kernel's
//!   `printk_ratelimited`: one noisy peer silences that line (for everyone; the
//!   counters in the report stay exact), not the rest of the log.
//! * **Local** ([`error_local!`], [`warn_local!`], [`info_local!`],
//!   [`debug_local!`]): for lines only the process itself or its operator can
//!   cause: start-up, shut-down, `twin ctl` commands, a failure of the host. The
//!   name is the claim, for a reviewer to check.
//!
//! A call site's limiter is a `static` of three atomics: no allocation, no lock,
//! safe from every thread. Two threads racing at a window's edge may let a line
//! or two more through; the count of held-back lines is exact.
//!
//! What each level means to an operator is in `docs/operations.md` (Logs).

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::Instant;

#[doc(hidden)]
pub use tracing as __tracing;

/// Lines one limited call site may log per second.
pub const LINES_PER_SEC: u32 = 10;

/// The window of a [`CallSite`], in milliseconds.
const WINDOW_MS: u64 = 1000;

/// Milliseconds since the first limited line of the process (never 0: 0 marks
/// a limiter that never opened a window).
fn now_ms() -> u64 {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    let epoch = EPOCH.get_or_init(Instant::now);
    u64::try_from(epoch.elapsed().as_millis())
        .unwrap_or(u64::MAX)
        .saturating_add(1)
}

/// The limiter of one call site: a one-second window and a count of the lines
/// it held back.
#[derive(Debug)]
pub struct CallSite {
    /// When the current window opened ([`now_ms`]; 0: never).
    window: AtomicU64,
    /// Lines let through in the current window.
    count: AtomicU32,
    /// Lines held back since the last line let through.
    suppressed: AtomicU64,
}

impl CallSite {
    /// A limiter that has let nothing through yet.
    pub const fn new() -> Self {
        CallSite {
            window: AtomicU64::new(0),
            count: AtomicU32::new(0),
            suppressed: AtomicU64::new(0),
        }
    }

    /// Whether a line may go out now, at most `per_sec` a second: `Some(n)`
    /// with the `n` lines held back since the last one that went out, or `None`
    /// (this one is counted as held back).
    pub fn check(&self, per_sec: u32) -> Option<u64> {
        self.check_at(now_ms(), per_sec)
    }

    fn check_at(&self, now: u64, per_sec: u32) -> Option<u64> {
        let start = self.window.load(Ordering::Relaxed);
        if (start == 0 || now.saturating_sub(start) >= WINDOW_MS)
            && self
                .window
                .compare_exchange(start, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            // This thread opened the new window.
            self.count.store(0, Ordering::Relaxed);
        }
        if self.count.fetch_add(1, Ordering::Relaxed) < per_sec {
            Some(self.suppressed.swap(0, Ordering::Relaxed))
        } else {
            // Keep the count from wrapping in a long window of a busy site.
            self.count.store(per_sec, Ordering::Relaxed);
            self.suppressed.fetch_add(1, Ordering::Relaxed);
            None
        }
    }
}

impl Default for CallSite {
    fn default() -> Self {
        Self::new()
    }
}

/// A line at `$level` (a `tracing::Level` constant's name) through this call
/// site's limiter. Use the level macros ([`warn_limited!`]...).
#[doc(hidden)]
#[macro_export]
macro_rules! __limited {
    ($level:ident, $($arg:tt)+) => {{
        static CALL_SITE: $crate::CallSite = $crate::CallSite::new();
        // A level that is off costs a compare, not a clock read.
        if $crate::__tracing::level_enabled!($crate::__tracing::Level::$level) {
            if let ::std::option::Option::Some(log_suppressed) =
                CALL_SITE.check($crate::LINES_PER_SEC)
            {
                $crate::__tracing::event!(
                    $crate::__tracing::Level::$level,
                    log_suppressed,
                    $($arg)+
                );
            }
        }
    }};
}

/// A line at `$level` no peer can trigger. Use the level macros
/// ([`info_local!`]...).
#[doc(hidden)]
#[macro_export]
macro_rules! __local {
    ($level:ident, $($arg:tt)+) => {{
        $crate::__tracing::event!($crate::__tracing::Level::$level, $($arg)+);
    }};
}

/// An error a peer can trigger, rate limited per call site (`tracing::error!`'s
/// syntax).
#[macro_export]
macro_rules! error_limited { ($($arg:tt)+) => { $crate::__limited!(ERROR, $($arg)+) }; }
/// A warning a peer can trigger, rate limited per call site.
#[macro_export]
macro_rules! warn_limited { ($($arg:tt)+) => { $crate::__limited!(WARN, $($arg)+) }; }
/// An informational line a peer can trigger, rate limited per call site.
#[macro_export]
macro_rules! info_limited { ($($arg:tt)+) => { $crate::__limited!(INFO, $($arg)+) }; }
/// A debug line a peer can trigger, rate limited per call site.
#[macro_export]
macro_rules! debug_limited { ($($arg:tt)+) => { $crate::__limited!(DEBUG, $($arg)+) }; }
/// An error only this process or its operator can cause.
#[macro_export]
macro_rules! error_local { ($($arg:tt)+) => { $crate::__local!(ERROR, $($arg)+) }; }
/// A warning only this process or its operator can cause.
#[macro_export]
macro_rules! warn_local { ($($arg:tt)+) => { $crate::__local!(WARN, $($arg)+) }; }
/// An informational line only this process or its operator can cause.
#[macro_export]
macro_rules! info_local { ($($arg:tt)+) => { $crate::__local!(INFO, $($arg)+) }; }
/// A debug line only this process or its operator can cause.
#[macro_export]
macro_rules! debug_local { ($($arg:tt)+) => { $crate::__local!(DEBUG, $($arg)+) }; }

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_call_site_lets_its_quota_through_each_second_and_counts_the_rest() {
        let site = CallSite::new();
        let t = 5_000;
        let through: Vec<_> = (0..25).map(|_| site.check_at(t, 10)).collect();
        assert!(through[..10].iter().all(|s| *s == Some(0)));
        assert!(through[10..].iter().all(Option::is_none));
        // Still the same window.
        assert_eq!(site.check_at(t + 999, 10), None);
        // The next window: the first line carries the count held back.
        assert_eq!(site.check_at(t + 1000, 10), Some(16));
        assert_eq!(site.check_at(t + 1000, 10), Some(0));
    }

    #[test]
    fn a_busy_site_never_wraps_its_count() {
        let site = CallSite::new();
        for _ in 0..100_000 {
            site.check_at(1, 1);
        }
        assert_eq!(site.check_at(1, 1), None);
        assert_eq!(site.check_at(1001, 1), Some(100_000));
    }

    /// The workspace's crates that may depend on `tracing`: this one, and the
    /// binary (it installs the subscriber).
    const TRACING_USERS: [&str; 2] = ["crates/log", "crates/cli"];

    #[test]
    fn only_twin_log_logs() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        let mut manifests = Vec::new();
        let mut sources = Vec::new();
        let mut dirs = vec![root.join("crates")];
        while let Some(dir) = dirs.pop() {
            for entry in std::fs::read_dir(&dir).expect("read a crate directory") {
                let path = entry.expect("a directory entry").path();
                if path.is_dir() && !path.ends_with("target") {
                    dirs.push(path);
                } else if path.ends_with("Cargo.toml") {
                    manifests.push(path);
                } else if path.extension().is_some_and(|e| e == "rs") {
                    sources.push(path);
                }
            }
        }
        assert!(manifests.len() > 10, "found the workspace's crates");
        let exempt =
            |p: &std::path::Path| TRACING_USERS.iter().any(|c| p.starts_with(root.join(c)));
        for m in manifests.iter().filter(|m| !exempt(m)) {
            let text = std::fs::read_to_string(m).expect("read a manifest");
            // Only what the crate's own code links counts: a test may bring a
            // subscriber of its own as a dev-dependency.
            let mut section = "";
            for line in text.lines().map(str::trim) {
                if line.starts_with('[') {
                    section = line;
                } else if line.starts_with("tracing") {
                    assert_ne!(
                        section,
                        "[dependencies]",
                        "{} depends on tracing: log through twin-log instead",
                        m.display()
                    );
                }
            }
        }
        let hidden = ["__", "tracing"].concat();
        for s in sources
            .iter()
            .filter(|s| !s.starts_with(root.join("crates/log")))
        {
            let text = std::fs::read_to_string(s).expect("read a source file");
            assert!(
                !text.contains(&hidden),
                "{} uses twin-log's hidden re-export of tracing",
                s.display()
            );
        }
    }

    #[test]
    fn the_macros_expand_with_fields_and_formats() {
        let port = "c1";
        for i in 0..30 {
            warn_limited!(port, i, "frame dropped: {}", "test");
            info_local!(port, "started");
        }
        debug_limited!("plain");
        error_local!(error = %"e", "failed");
    }
}
