//! The FFI boundary: every exported function runs its body through `call`, so a panic
//! never unwinds into C and every failure is recorded as the thread's last error.

use std::panic::{AssertUnwindSafe, catch_unwind};

use crate::error::{CapiError, record};

/// Runs `body`; on an error or a panic records it (see `hrpc_last_error`) and returns
/// `on_error(code)`.
pub(crate) fn call<T>(
    on_error: impl FnOnce(std::ffi::c_int) -> T,
    body: impl FnOnce() -> Result<T, CapiError>,
) -> T {
    let outcome = catch_unwind(AssertUnwindSafe(body)).unwrap_or_else(|payload| {
        let what = payload
            .downcast_ref::<&str>()
            .map(|s| (*s).to_owned())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "panic".to_owned());
        Err(CapiError::Internal(what))
    });
    match outcome {
        Ok(v) => v,
        Err(e) => {
            let code = record(&e);
            on_error(code)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::{HRPC_E_INTERNAL, HRPC_E_INVALID_ARGUMENT, last_code, last_message};

    /// A panic inside an entry point becomes HRPC_E_INTERNAL with its message; an error
    /// becomes its code; neither unwinds out of `call`.
    #[test]
    fn panics_and_errors_stop_at_the_boundary() {
        let code = call(|c| c, || -> Result<i32, CapiError> { panic!("boom") });
        assert_eq!((code, last_code()), (HRPC_E_INTERNAL, HRPC_E_INTERNAL));
        // SAFETY: last_message returns a NUL-terminated string owned by this thread.
        let msg = unsafe { std::ffi::CStr::from_ptr(last_message()) };
        assert!(msg.to_string_lossy().contains("boom"), "{msg:?}");
        let code = call(|c| c, || Err(CapiError::InvalidArgument("x")));
        assert_eq!(code, HRPC_E_INVALID_ARGUMENT);
        assert_eq!(call(|_| -1, || Ok(7)), 7);
    }
}
