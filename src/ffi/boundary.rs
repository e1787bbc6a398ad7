//! The panic boundary and the per-thread last error.

use std::cell::Cell;
use std::os::raw::c_int;
use std::panic::{catch_unwind, AssertUnwindSafe};

use crate::error::{Error, Result};

thread_local! {
    static LAST_ERROR: Cell<c_int> = const { Cell::new(0) };
}

pub(super) fn set_last_error(e: Error) {
    LAST_ERROR.with(|c| c.set(e.code()));
}

pub(super) fn last_error() -> c_int {
    LAST_ERROR.with(Cell::get)
}

/// Runs `body`; a failure (error or panic) is recorded as the thread's last
/// error and turned into `fail`, the legacy "-1 / NULL / 0" answer.
pub(super) fn call<T>(fail: T, body: impl FnOnce() -> Result<T>) -> T {
    match catch_unwind(AssertUnwindSafe(body)) {
        Ok(Ok(value)) => value,
        Ok(Err(e)) => {
            set_last_error(e);
            fail
        }
        Err(_) => {
            set_last_error(Error::Panic);
            fail
        }
    }
}

/// Runs `body` for a function that returns a status or a count: a failure
/// (error or panic) is recorded as the last error and returned as its
/// negative code.
pub(super) fn status(body: impl FnOnce() -> Result<c_int>) -> c_int {
    let result = catch_unwind(AssertUnwindSafe(body)).unwrap_or(Err(Error::Panic));
    match result {
        Ok(value) => value,
        Err(e) => {
            set_last_error(e);
            e.code()
        }
    }
}

/// [`status`] for a function that returns a length (0 or more) or a
/// negative code.
pub(super) fn length_or_status(body: impl FnOnce() -> Result<usize>) -> i64 {
    let mut len = 0;
    match status(|| body().map(|n| len = n).map(|()| 0)) {
        0 => len as i64,
        code => i64::from(code),
    }
}
