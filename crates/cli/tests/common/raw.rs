//! Connecting the raw vhost-user frontends of `driver_host::raw_frontend` (feature
//! `test-utils`) to a switch's client port, retrying while the port is not served
//! yet: the switch creates its sockets a moment after it starts.

use std::path::Path;
use std::time::{Duration, Instant};

use driver_host::raw_frontend::{RawFrontend, RawWire};

/// How long a connection is retried before the test fails.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Calls `attempt` every 20 ms until it succeeds and returns what it made. After
/// each failure `between` runs with the error (to check that the switch still
/// runs, say); after `timeout` the test fails, naming `what`, the last error and
/// its source.
pub fn retry<T, E: std::error::Error>(
    what: &str,
    timeout: Duration,
    mut attempt: impl FnMut() -> Result<T, E>,
    mut between: impl FnMut(&E),
) -> T {
    let start = Instant::now();
    loop {
        match attempt() {
            Ok(t) => return t,
            Err(e) => {
                between(&e);
                assert!(
                    start.elapsed() < timeout,
                    "{what}: {e} ({:?})",
                    std::error::Error::source(&e)
                );
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
}

/// A [`RawFrontend`] on `sock` with queues of `queue_size` and `mem_len` bytes of
/// (sealed) memory, retried for [`CONNECT_TIMEOUT`].
pub fn connect_raw(sock: &str, queue_size: u16, mem_len: u64) -> RawFrontend {
    retry(
        &format!("cannot connect to {sock}"),
        CONNECT_TIMEOUT,
        || RawFrontend::connect(Path::new(sock), queue_size, mem_len),
        |_| {},
    )
}

/// A [`RawWire`] (hand-written vhost-user messages) on `sock`, retried for
/// [`CONNECT_TIMEOUT`].
pub fn connect_wire(sock: &str) -> RawWire {
    retry(
        &format!("cannot connect to {sock}"),
        CONNECT_TIMEOUT,
        || RawWire::connect(Path::new(sock)),
        |_| {},
    )
}
