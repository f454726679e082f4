//! Test support: a `tracing` subscriber that records the events logged on the
//! current thread, so tests can check what a client can make the device log.

use std::fmt::Debug;
use std::sync::{Arc, Mutex};

use tracing::field::{Field, Visit};
use tracing::{span, Event, Level, Metadata, Subscriber};

/// One recorded event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Line {
    pub level: Level,
    pub message: String,
    /// Every other field, as `name=value` (values in their `Debug` form).
    pub fields: Vec<String>,
}

/// Records events while [`Capture::run`] runs a closure on this thread.
#[derive(Debug, Default, Clone)]
pub(crate) struct Capture(Arc<Mutex<Vec<Line>>>);

impl Capture {
    /// Runs `f` with this capture as the thread's subscriber.
    pub(crate) fn run<R>(&self, f: impl FnOnce() -> R) -> R {
        tracing::subscriber::with_default(self.clone(), f)
    }

    /// Every event recorded so far.
    pub(crate) fn lines(&self) -> Vec<Line> {
        self.0.lock().unwrap().clone()
    }

    /// Takes the events recorded so far.
    pub(crate) fn take(&self) -> Vec<Line> {
        std::mem::take(&mut *self.0.lock().unwrap())
    }
}

struct Fields<'a>(&'a mut Line);

impl Visit for Fields<'_> {
    fn record_debug(&mut self, field: &Field, value: &dyn Debug) {
        if field.name() == "message" {
            self.0.message = format!("{value:?}");
        } else {
            self.0.fields.push(format!("{}={value:?}", field.name()));
        }
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.0.message = value.to_string();
        } else {
            self.0.fields.push(format!("{}={value}", field.name()));
        }
    }
}

impl Subscriber for Capture {
    fn enabled(&self, _: &Metadata<'_>) -> bool {
        true
    }

    fn new_span(&self, _: &span::Attributes<'_>) -> span::Id {
        span::Id::from_u64(1)
    }

    fn record(&self, _: &span::Id, _: &span::Record<'_>) {}

    fn record_follows_from(&self, _: &span::Id, _: &span::Id) {}

    fn event(&self, e: &Event<'_>) {
        let mut line = Line {
            level: *e.metadata().level(),
            message: String::new(),
            fields: Vec::new(),
        };
        e.record(&mut Fields(&mut line));
        self.0.lock().unwrap().push(line);
    }

    fn enter(&self, _: &span::Id) {}

    fn exit(&self, _: &span::Id) {}
}
