//! Queue names and the shared-memory paths they map to.

use std::ffi::{CStr, CString};

use crate::error::{Error, Result};
use crate::layout::MAX_NAME_LEN;

/// The two strings below, written once: Rust uses them as `&str`, the C API
/// hands them out NUL-terminated (`ring_buffer_object_dir`/`_prefix`).
macro_rules! shm_dir {
    () => {
        "/dev/shm"
    };
}
macro_rules! object_prefix {
    () => {
        "sage_ringbuf_"
    };
}

/// Directory of POSIX shared-memory objects on Linux (what `shm_open` uses).
pub const SHM_DIR: &str = shm_dir!();

/// Prefix of every queue object's file name: `/dev/shm/sage_ringbuf_<name>`
/// (the POSIX object name is `/sage_ringbuf_<name>`).
pub const OBJECT_PREFIX: &str = object_prefix!();

/// [`SHM_DIR`], NUL-terminated.
pub(crate) const SHM_DIR_C: &str = concat!(shm_dir!(), "\0");

/// [`OBJECT_PREFIX`], NUL-terminated.
pub(crate) const OBJECT_PREFIX_C: &str = concat!(object_prefix!(), "\0");

/// A validated queue name and the path of its object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QueueName {
    bytes: Vec<u8>,
    path: CString,
}

impl QueueName {
    /// Validates `name`: 1 to 63 bytes; no `/`, no NUL, no `..`, no ASCII
    /// control characters. Any other byte is allowed, UTF-8 or not, so the
    /// object file name is always a single, printable-enough path component.
    ///
    /// ```
    /// use ring_buffer::{Error, QueueName};
    ///
    /// let name = QueueName::new(b"jobs")?;
    /// assert_eq!(name.path().to_str(), Ok("/dev/shm/sage_ringbuf_jobs"));
    /// assert_eq!(QueueName::new(b"../etc"), Err(Error::InvalidName));
    /// assert_eq!(QueueName::new(&[b'x'; 64]), Err(Error::InvalidName));
    /// # Ok::<(), Error>(())
    /// ```
    pub fn new(name: &[u8]) -> Result<QueueName> {
        let valid = !name.is_empty()
            && name.len() < MAX_NAME_LEN
            && !name.windows(2).any(|w| w == b"..")
            && name.iter().all(|&b| b != b'/' && b >= 0x20 && b != 0x7f);
        if !valid {
            return Err(Error::InvalidName);
        }
        let mut path = Vec::with_capacity(SHM_DIR.len() + 1 + OBJECT_PREFIX.len() + name.len());
        path.extend_from_slice(SHM_DIR.as_bytes());
        path.push(b'/');
        path.extend_from_slice(OBJECT_PREFIX.as_bytes());
        path.extend_from_slice(name);
        let path = CString::new(path).map_err(|_| Error::InvalidName)?;
        Ok(QueueName {
            bytes: name.to_vec(),
            path,
        })
    }

    /// The name as given (without the object prefix).
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// `/dev/shm/sage_ringbuf_<name>`.
    pub fn path(&self) -> &CStr {
        &self.path
    }

    /// The name in the fixed 64-byte, NUL-padded form of the legacy structs.
    pub(crate) fn to_field(&self) -> [std::os::raw::c_char; MAX_NAME_LEN] {
        let mut field = [0; MAX_NAME_LEN];
        for (dst, &src) in field.iter_mut().zip(&self.bytes) {
            *dst = src as std::os::raw::c_char;
        }
        field
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_ordinary_names() {
        for ok in [
            &b"a"[..],
            b"queue-1.x_y",
            &[b'x'; 63],
            "é".as_bytes(),
            b"\xff\xfe",
            b"a.b",
        ] {
            let n = QueueName::new(ok).unwrap();
            assert_eq!(n.as_bytes(), ok);
            assert!(n.path().to_bytes().starts_with(b"/dev/shm/sage_ringbuf_"));
        }
    }

    #[test]
    fn rejects_bad_names() {
        for bad in [
            &b""[..],
            &[b'x'; 64],
            b"a/b",
            b"/",
            b"..",
            b"a..b",
            b"a\0b",
            b"a\nb",
            b"\x7f",
        ] {
            assert_eq!(QueueName::new(bad), Err(Error::InvalidName), "{bad:?}");
        }
    }

    #[test]
    fn c_strings_match_the_rust_ones() {
        assert_eq!(SHM_DIR_C, format!("{SHM_DIR}\0"));
        assert_eq!(OBJECT_PREFIX_C, format!("{OBJECT_PREFIX}\0"));
    }

    #[test]
    fn field_is_nul_padded() {
        let f = QueueName::new(b"abc").unwrap().to_field();
        assert_eq!(&f[..4], &[b'a' as _, b'b' as _, b'c' as _, 0]);
        assert!(f[3..].iter().all(|&c| c == 0));
    }
}
