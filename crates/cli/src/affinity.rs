//! Pins the calling thread to one CPU, so that benchmarks place processes deliberately
//! on this machine's two cores.

use anyhow::Context;

/// Pins the current thread (and so the threads it spawns later) to `cpu`.
pub fn pin_current_thread(cpu: usize) -> anyhow::Result<()> {
    let mut set = rustix::thread::CpuSet::new();
    set.set(cpu);
    rustix::thread::sched_setaffinity(None, &set)
        .with_context(|| format!("cannot pin to CPU {cpu}"))
}
