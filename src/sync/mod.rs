//! Cross-process synchronisation: the library's own futex lock (the
//! extension block's writer and reader locks) with owner-death detection,
//! the robust pthread mutex the legacy header's `ref_mutex` must stay,
//! shared futexes, and monotonic deadlines.

pub(crate) mod deadline;
pub(crate) mod futex;
pub(crate) mod lock;
pub(crate) mod mutex;
pub(crate) mod owner;
