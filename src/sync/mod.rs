//! Cross-process synchronisation: robust process-shared mutexes, shared
//! futexes, and monotonic deadlines.

pub(crate) mod deadline;
pub(crate) mod futex;
pub(crate) mod mutex;
