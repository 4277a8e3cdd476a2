//! The FFI boundary: every exported function runs its body through [`call`], so a panic
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
