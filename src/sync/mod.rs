//! Cross-process synchronisation: the library's own futex lock (the
//! extension block's writer and reader locks) with owner-death detection,
//! the robust pthread mutex the legacy header's `ref_mutex` must stay,
//! shared futexes, and monotonic deadlines; [`atomic`] is std's or, under
//! `--cfg loom`, loom's (see `make test-loom`).

pub(crate) mod atfork;
pub(crate) mod atomic;
pub(crate) mod barrier;
pub(crate) mod deadline;
pub(crate) mod futex;
pub(crate) mod lock;
#[cfg(loom)]
mod loom_futex;
pub(crate) mod mutex;
pub(crate) mod once;
pub(crate) mod owner;
