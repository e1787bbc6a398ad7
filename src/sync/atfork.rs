//! `pthread_atfork` registration (run it through [`super::once::NoWaitOnce`]
//! so that it happens once, without a lock a forked child could inherit).

type Handler = Option<unsafe extern "C" fn()>;

/// Registers fork handlers; whether that worked (only ENOMEM can fail).
/// Under Miri, which runs no child processes and knows no
/// `pthread_atfork`, nothing is registered and the answer is true.
pub(crate) fn register(prepare: Handler, parent: Handler, child: Handler) -> bool {
    #[cfg(miri)]
    {
        let _ = (prepare, parent, child);
        true
    }
    #[cfg(not(miri))]
    {
        // SAFETY: pthread_atfork only records the handlers, which are
        // `extern "C"` functions without arguments that live as long as the
        // program.
        unsafe { libc::pthread_atfork(prepare, parent, child) == 0 }
    }
}
