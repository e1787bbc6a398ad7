//! Status codes of the C API (fixed values, never renumbered) and the Rust
//! error enum they map to one for one.

use std::fmt;
use std::io;

/// Status codes returned by the C API: `RB_OK` (0) or a negative error.
/// Values are part of the ABI and never change; new codes only get new values.
#[allow(non_camel_case_types)]
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RbStatus {
    /// Success.
    RB_OK = 0,
    /// A NULL pointer, a closed or unknown handle, or an argument out of range.
    RB_ERR_INVALID_ARG = -1,
    /// The name is empty, 64 bytes or longer, or contains `/`, `..` or a
    /// control character.
    RB_ERR_INVALID_NAME = -2,
    /// No queue of that name exists.
    RB_ERR_NOT_FOUND = -3,
    /// A queue of that name exists already (exclusive create).
    RB_ERR_EXISTS = -4,
    /// The object belongs to another user or its mode forbids access.
    RB_ERR_PERMISSION = -5,
    /// Shared memory (tmpfs) is full.
    RB_ERR_NO_SPACE = -6,
    /// The object is not a queue of a layout this library knows (bad magic,
    /// version or size).
    RB_ERR_INCOMPATIBLE = -7,
    /// The queue's shared state is inconsistent (overwritten by someone).
    RB_ERR_CORRUPT = -8,
    /// No message is queued (non-blocking get).
    RB_ERR_EMPTY = -9,
    /// No room for the message (non-blocking put).
    RB_ERR_FULL = -10,
    /// The timeout passed before the operation could complete.
    RB_ERR_TIMEOUT = -11,
    /// The message can go neither through the ring nor out of line (no room
    /// in /dev/shm, 4 GiB or more, or a queue that cannot carry it).
    RB_ERR_TOO_LARGE = -12,
    /// The caller's buffer cannot hold the next message; nothing was consumed.
    RB_ERR_BUFFER_TOO_SMALL = -13,
    /// The queue was shut down (gets return this once it is drained).
    RB_ERR_SHUTDOWN = -14,
    /// A system call failed; `errno` holds the reason.
    RB_ERR_SYSTEM = -15,
    /// An internal error (a bug): the library caught a panic.
    RB_ERR_PANIC = -16,
    /// A legacy consuming read would split or merge the messages of a framed
    /// stream (another consumer took the message whose length was peeked):
    /// nothing was consumed; peek the length again and retry.
    RB_ERR_FRAMING = -17,
}

impl RbStatus {
    /// Every status, in code order.
    pub const ALL: [RbStatus; 18] = [
        RbStatus::RB_OK,
        RbStatus::RB_ERR_INVALID_ARG,
        RbStatus::RB_ERR_INVALID_NAME,
        RbStatus::RB_ERR_NOT_FOUND,
        RbStatus::RB_ERR_EXISTS,
        RbStatus::RB_ERR_PERMISSION,
        RbStatus::RB_ERR_NO_SPACE,
        RbStatus::RB_ERR_INCOMPATIBLE,
        RbStatus::RB_ERR_CORRUPT,
        RbStatus::RB_ERR_EMPTY,
        RbStatus::RB_ERR_FULL,
        RbStatus::RB_ERR_TIMEOUT,
        RbStatus::RB_ERR_TOO_LARGE,
        RbStatus::RB_ERR_BUFFER_TOO_SMALL,
        RbStatus::RB_ERR_SHUTDOWN,
        RbStatus::RB_ERR_SYSTEM,
        RbStatus::RB_ERR_PANIC,
        RbStatus::RB_ERR_FRAMING,
    ];

    /// The status with this code, if any.
    pub fn from_code(code: i32) -> Option<RbStatus> {
        RbStatus::ALL.iter().copied().find(|s| *s as i32 == code)
    }

    /// Static, NUL-terminated description (what went wrong and what to do).
    pub fn message(self) -> &'static str {
        match self {
            RbStatus::RB_OK => "success\0",
            RbStatus::RB_ERR_INVALID_ARG => {
                "invalid argument: a NULL pointer, a closed or unknown handle, or a value out of range\0"
            }
            RbStatus::RB_ERR_INVALID_NAME => {
                "invalid queue name: use 1 to 63 bytes without '/' or NUL\0"
            }
            RbStatus::RB_ERR_NOT_FOUND => "no queue of that name exists: create it first\0",
            RbStatus::RB_ERR_EXISTS => "a queue of that name exists already: open it or pick another name\0",
            RbStatus::RB_ERR_PERMISSION => {
                "permission denied: the queue belongs to another user or its mode forbids access\0"
            }
            RbStatus::RB_ERR_NO_SPACE => {
                "no space left in shared memory (/dev/shm): free some or ask for a smaller queue\0"
            }
            RbStatus::RB_ERR_INCOMPATIBLE => {
                "not a queue this library can use: bad magic, version or size\0"
            }
            RbStatus::RB_ERR_CORRUPT => {
                "the queue's shared state is corrupt: destroy it and create a new one\0"
            }
            RbStatus::RB_ERR_EMPTY => "the queue is empty\0",
            RbStatus::RB_ERR_FULL => "the queue is full\0",
            RbStatus::RB_ERR_TIMEOUT => "timed out\0",
            RbStatus::RB_ERR_TOO_LARGE => {
                "message too large: longer than the ring and /dev/shm has no room for it (or over 4 GiB, or the queue is a legacy object or raw byte stream that cannot carry it out of line)\0"
            }
            RbStatus::RB_ERR_BUFFER_TOO_SMALL => {
                "buffer too small for the next message: retry with the length reported\0"
            }
            RbStatus::RB_ERR_SHUTDOWN => "the queue was shut down\0",
            RbStatus::RB_ERR_SYSTEM => "a system call failed (see errno)\0",
            RbStatus::RB_ERR_PANIC => "internal error in libring_buffer (a bug; please report it)\0",
            RbStatus::RB_ERR_FRAMING => {
                "the read would split or merge messages (another consumer took the one peeked): nothing was consumed; peek again and retry\0"
            }
        }
    }
}

/// Why an operation failed. Each variant has a fixed [`RbStatus`] code.
///
/// ```
/// use ring_buffer::{Error, Queue};
///
/// # let name = format!("doc_error_{}", std::process::id());
/// # struct Rm(String);
/// # impl Drop for Rm { fn drop(&mut self) { let _ = Queue::remove(&self.0); } }
/// # let _rm = Rm(name.clone());
/// let queue = Queue::create(&name, 1024)?;
/// assert_eq!(queue.try_recv(), Err(Error::Empty));
/// assert_eq!(Queue::create(&name, 1024).unwrap_err(), Error::Exists);
/// assert_eq!(Error::Exists.code(), -4); // RB_ERR_EXISTS in C
/// # Ok::<(), Error>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Error {
    /// A closed or unknown handle, or an argument out of range (a size of 0,
    /// a batch of 0 messages, mode bits beyond `0o777`).
    InvalidArg,
    /// The name is empty, 64 bytes or longer, or contains `/`, `..` or a
    /// control character.
    InvalidName,
    /// No queue of that name exists.
    NotFound,
    /// A queue of that name exists already (exclusive create).
    Exists,
    /// The object belongs to another user or its mode forbids access.
    Permission,
    /// Shared memory (tmpfs) is full.
    NoSpace,
    /// The object is not a queue of a layout this library knows.
    Incompatible,
    /// The queue's shared state is inconsistent (overwritten by someone).
    Corrupt,
    /// No message is queued (a `try_` receive).
    Empty,
    /// No room for the message (a `try_` send).
    Full,
    /// The timeout passed before the operation could complete.
    Timeout,
    /// The message can go neither through the ring nor out of line (no room
    /// in /dev/shm, 4 GiB or more, or a queue that cannot carry it).
    TooLarge,
    /// The caller's buffer cannot hold the next message; nothing was consumed.
    BufferTooSmall {
        /// Bytes the next message needs.
        needed: u32,
    },
    /// The queue was shut down (receives return this once it is drained).
    Shutdown,
    /// A system call failed with this `errno`.
    System(i32),
    /// An internal error (a bug): the C API caught a panic.
    Panic,
    /// A legacy read would split or merge messages of a framed stream
    /// (`RB_ERR_FRAMING`); nothing was consumed.
    Framing,
    /// A value could not be encoded as a message (typed messages,
    /// [`TypedQueue`](crate::TypedQueue)); nothing was sent. The C API never
    /// returns it; its [`code`](Error::code) is `RB_ERR_INVALID_ARG`.
    Encode {
        /// The Rust type of the value (`std::any::type_name`).
        type_name: &'static str,
        /// What went wrong.
        reason: CodecFailure,
    },
    /// A message could not be decoded as the queue's type (typed messages):
    /// it was sent as another type, or by a program with another definition
    /// of the type. The message was consumed. The C API never returns it;
    /// its [`code`](Error::code) is `RB_ERR_INCOMPATIBLE`.
    Decode {
        /// The Rust type the message was decoded as (`std::any::type_name`).
        type_name: &'static str,
        /// What went wrong.
        reason: CodecFailure,
    },
}

/// Why a typed message could not be encoded or decoded (see
/// [`Error::Encode`] and [`Error::Decode`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum CodecFailure {
    /// The message ended before the value did (or a length in it reaches
    /// past its end).
    UnexpectedEnd,
    /// Bytes were left over after the value.
    TrailingBytes,
    /// A string was not valid UTF-8.
    InvalidUtf8,
    /// A `bool`, `char` or `Option` tag byte had a value those types do not
    /// have.
    InvalidValue,
    /// The type needs what bincode cannot do: self-describing input
    /// (`deserialize_any`, as untagged or internally tagged enums use) or a
    /// sequence of unknown length.
    Unsupported,
    /// The type's `Serialize` or `Deserialize` implementation (derived or
    /// written by hand) refused the value: an enum variant number the type
    /// does not have, a failed validation, ...
    Rejected,
}

impl CodecFailure {
    fn describe(self) -> &'static str {
        match self {
            CodecFailure::UnexpectedEnd => "the message ended before the value did",
            CodecFailure::TrailingBytes => "bytes were left over after the value",
            CodecFailure::InvalidUtf8 => "a string was not valid UTF-8",
            CodecFailure::InvalidValue => "a bool, char or Option tag had an impossible value",
            CodecFailure::Unsupported => {
                "the type needs what bincode cannot do (deserialize_any, as untagged or \
                 internally tagged enums use, or a sequence of unknown length)"
            }
            CodecFailure::Rejected => {
                "the type's Serialize or Deserialize refused it (an unknown enum variant, \
                 a failed validation, ...)"
            }
        }
    }
}

impl fmt::Display for CodecFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.describe())
    }
}

impl Error {
    /// The C status code of this error.
    pub fn status(self) -> RbStatus {
        match self {
            Error::InvalidArg => RbStatus::RB_ERR_INVALID_ARG,
            Error::InvalidName => RbStatus::RB_ERR_INVALID_NAME,
            Error::NotFound => RbStatus::RB_ERR_NOT_FOUND,
            Error::Exists => RbStatus::RB_ERR_EXISTS,
            Error::Permission => RbStatus::RB_ERR_PERMISSION,
            Error::NoSpace => RbStatus::RB_ERR_NO_SPACE,
            Error::Incompatible => RbStatus::RB_ERR_INCOMPATIBLE,
            Error::Corrupt => RbStatus::RB_ERR_CORRUPT,
            Error::Empty => RbStatus::RB_ERR_EMPTY,
            Error::Full => RbStatus::RB_ERR_FULL,
            Error::Timeout => RbStatus::RB_ERR_TIMEOUT,
            Error::TooLarge => RbStatus::RB_ERR_TOO_LARGE,
            Error::BufferTooSmall { .. } => RbStatus::RB_ERR_BUFFER_TOO_SMALL,
            Error::Shutdown => RbStatus::RB_ERR_SHUTDOWN,
            Error::System(_) => RbStatus::RB_ERR_SYSTEM,
            Error::Panic => RbStatus::RB_ERR_PANIC,
            Error::Framing => RbStatus::RB_ERR_FRAMING,
            // Typed messages are Rust-only; these codes only keep `code()`
            // total (the C API never sees these variants).
            Error::Encode { .. } => RbStatus::RB_ERR_INVALID_ARG,
            Error::Decode { .. } => RbStatus::RB_ERR_INCOMPATIBLE,
        }
    }

    /// The negative `int` the C API returns for this error.
    pub fn code(self) -> i32 {
        self.status() as i32
    }

    /// Maps an `errno` from a system call on a queue object to the closest
    /// status; what has no closer match stays `System(errno)`.
    pub(crate) fn from_errno(errno: i32) -> Error {
        match errno {
            libc::ENOENT => Error::NotFound,
            libc::EEXIST => Error::Exists,
            libc::EACCES | libc::EPERM => Error::Permission,
            libc::ENOSPC | libc::ENOMEM | libc::EFBIG => Error::NoSpace,
            libc::ENAMETOOLONG => Error::InvalidName,
            // O_NOFOLLOW on a symbolic link: somebody planted it there.
            libc::ELOOP => Error::Permission,
            e => Error::System(e),
        }
    }

    /// The error of the last failed system call (`errno`).
    pub(crate) fn last_os() -> Error {
        Error::from_errno(
            io::Error::last_os_error()
                .raw_os_error()
                .unwrap_or(libc::EIO),
        )
    }
}

impl From<io::Error> for Error {
    fn from(e: io::Error) -> Error {
        Error::from_errno(e.raw_os_error().unwrap_or(libc::EIO))
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text = self.status().message().trim_end_matches('\0');
        match self {
            Error::BufferTooSmall { needed } => write!(f, "{text} ({needed} bytes needed)"),
            Error::System(errno) => {
                write!(f, "{text}: {}", io::Error::from_raw_os_error(*errno))
            }
            Error::Encode { type_name, reason } => write!(
                f,
                "could not encode a value of type `{type_name}` as a message: {reason}; nothing was sent"
            ),
            Error::Decode { type_name, reason } => write!(
                f,
                "could not decode a message as type `{type_name}`: {reason}; it was sent as another \
                 type or by a program with another definition of the type (the message was consumed)"
            ),
            _ => f.write_str(text),
        }
    }
}

impl std::error::Error for Error {}

/// Result of the safe API.
pub type Result<T> = std::result::Result<T, Error>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_fixed() {
        let codes: Vec<i32> = RbStatus::ALL.iter().map(|s| *s as i32).collect();
        assert_eq!(codes, (-17..=0).rev().collect::<Vec<_>>());
        for s in RbStatus::ALL {
            assert_eq!(RbStatus::from_code(s as i32), Some(s));
            assert!(s.message().ends_with('\0'));
            assert_eq!(s.message().matches('\0').count(), 1);
        }
        assert_eq!(RbStatus::from_code(1), None);
        assert_eq!(RbStatus::from_code(-18), None);
    }

    #[test]
    fn errors_map_to_their_codes() {
        assert_eq!(Error::Empty.code(), -9);
        assert_eq!(Error::BufferTooSmall { needed: 3 }.code(), -13);
        assert_eq!(Error::System(libc::EIO).code(), -15);
        assert_eq!(Error::from_errno(libc::ENOSPC), Error::NoSpace);
        assert_eq!(Error::from_errno(libc::ELOOP), Error::Permission);
        assert!(Error::System(libc::EIO).to_string().contains("system call"));
    }

    #[test]
    fn codec_errors_keep_existing_codes_and_say_what_failed() {
        let encode = Error::Encode {
            type_name: "my::Job",
            reason: CodecFailure::Unsupported,
        };
        let decode = Error::Decode {
            type_name: "my::Job",
            reason: CodecFailure::TrailingBytes,
        };
        assert_eq!(encode.status(), RbStatus::RB_ERR_INVALID_ARG);
        assert_eq!(decode.status(), RbStatus::RB_ERR_INCOMPATIBLE);
        let text = encode.to_string();
        assert!(
            text.contains("encode") && text.contains("`my::Job`"),
            "{text}"
        );
        assert!(text.contains("sequence of unknown length"), "{text}");
        let text = decode.to_string();
        assert!(
            text.contains("decode") && text.contains("`my::Job`"),
            "{text}"
        );
        assert!(text.contains("left over"), "{text}");
    }
}
