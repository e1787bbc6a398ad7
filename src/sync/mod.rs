//! Cross-process synchronisation: robust process-shared mutexes, shared
//! futexes, and monotonic deadlines; [`atomic`] is std's or, under
//! `--cfg loom`, loom's (see `make test-loom`).

pub(crate) mod atomic;
pub(crate) mod deadline;
pub(crate) mod futex;
#[cfg(loom)]
mod loom_futex;
pub(crate) mod mutex;
