//! Error codes, [`CapiError`], and the per-thread last error (`hrpc_last_error`,
//! `hrpc_last_error_message`, `hrpc_strerror`).

use std::cell::RefCell;
use std::ffi::{CStr, CString, c_char, c_int};

use hrpc_node::{NodeError, SendError};

/// Success.
pub const HRPC_OK: c_int = 0;
/// A null pointer, a negative size, a bad string or an out-of-range number.
pub const HRPC_E_INVALID_ARGUMENT: c_int = -1;
/// The store or the peer's window is full: poll, then retry.
pub const HRPC_E_BACKPRESSURE: c_int = -2;
/// The message can never be sent: larger than the largest message.
pub const HRPC_E_TOO_LARGE: c_int = -3;
/// Node id 0 or the node's own id as a destination.
pub const HRPC_E_INVALID_PEER: c_int = -4;
/// Another process (or node) has the store open.
pub const HRPC_E_STORE_LOCKED: c_int = -5;
/// The bind address is taken.
pub const HRPC_E_ADDR_IN_USE: c_int = -6;
/// A setting is out of bounds.
pub const HRPC_E_CONFIG: c_int = -7;
/// The store failed (damage, I/O).
pub const HRPC_E_STORE: c_int = -8;
/// A socket or other I/O failure.
pub const HRPC_E_IO: c_int = -9;
/// The node was closed.
pub const HRPC_E_CLOSED: c_int = -10;
/// A compatibility function was called before `hrpc_init` succeeded on this thread.
pub const HRPC_E_NOT_INITIALIZED: c_int = -11;
/// The call is not allowed from inside this node's message callback.
pub const HRPC_E_BUSY: c_int = -12;
/// An internal failure (a panic) was caught at the library boundary.
pub const HRPC_E_INTERNAL: c_int = -13;

/// Every error code with its description: what `hrpc_strerror` returns.
pub const ERROR_CODES: &[(c_int, &CStr)] = &[
    (HRPC_OK, c"success"),
    (HRPC_E_INVALID_ARGUMENT, c"invalid argument"),
    (
        HRPC_E_BACKPRESSURE,
        c"backpressure: store or peer window full",
    ),
    (HRPC_E_TOO_LARGE, c"message too large"),
    (HRPC_E_INVALID_PEER, c"invalid destination node id"),
    (
        HRPC_E_STORE_LOCKED,
        c"store locked by another process or node",
    ),
    (HRPC_E_ADDR_IN_USE, c"address already in use"),
    (HRPC_E_CONFIG, c"invalid configuration"),
    (HRPC_E_STORE, c"store failure"),
    (HRPC_E_IO, c"I/O error"),
    (HRPC_E_CLOSED, c"node closed"),
    (
        HRPC_E_NOT_INITIALIZED,
        c"hrpc_init has not succeeded on this thread",
    ),
    (
        HRPC_E_BUSY,
        c"not allowed inside this node's message callback",
    ),
    (HRPC_E_INTERNAL, c"internal error"),
];

/// Why a C entry point failed.
#[derive(Debug, thiserror::Error)]
pub enum CapiError {
    /// A null pointer, negative size, bad string or out-of-range number.
    #[error("invalid argument: {0}")]
    InvalidArgument(&'static str),
    /// No node was opened with `hrpc_init` on this thread.
    #[error("hrpc_init has not succeeded on this thread")]
    NotInitialized,
    /// Polling, waiting on or closing a node from inside its own callback.
    #[error("not allowed inside this node's message callback")]
    Busy,
    /// A send was refused.
    #[error(transparent)]
    Send(#[from] SendError),
    /// Opening or driving the node failed.
    #[error(transparent)]
    Node(#[from] NodeError),
    /// A panic was caught at the boundary.
    #[error("internal error: {0}")]
    Internal(String),
}

impl CapiError {
    /// The `HRPC_E_*` code.
    pub fn code(&self) -> c_int {
        match self {
            CapiError::InvalidArgument(_) => HRPC_E_INVALID_ARGUMENT,
            CapiError::NotInitialized => HRPC_E_NOT_INITIALIZED,
            CapiError::Busy => HRPC_E_BUSY,
            CapiError::Internal(_) => HRPC_E_INTERNAL,
            CapiError::Send(e) => match e {
                e if e.is_backpressure() => HRPC_E_BACKPRESSURE,
                SendError::TooLarge { .. } => HRPC_E_TOO_LARGE,
                SendError::InvalidPeer(_) => HRPC_E_INVALID_PEER,
                SendError::Closed => HRPC_E_CLOSED,
                _ => HRPC_E_STORE,
            },
            CapiError::Node(e) => match e {
                NodeError::Config(_) => HRPC_E_CONFIG,
                NodeError::StoreLocked { .. } => HRPC_E_STORE_LOCKED,
                NodeError::AddrInUse { .. } => HRPC_E_ADDR_IN_USE,
                NodeError::Bind { .. } | NodeError::Io(_) => HRPC_E_IO,
                NodeError::Closed => HRPC_E_CLOSED,
                _ => HRPC_E_STORE,
            },
        }
    }

    /// The message with its chain of sources.
    fn describe(&self) -> String {
        let mut s = self.to_string();
        let mut source = std::error::Error::source(self);
        while let Some(e) = source {
            s.push_str(": ");
            s.push_str(&e.to_string());
            source = e.source();
        }
        s
    }
}

struct LastError {
    code: c_int,
    message: CString,
}

thread_local! {
    static LAST: RefCell<LastError> = RefCell::new(LastError {
        code: HRPC_OK,
        message: CString::default(),
    });
}

/// Records `e` as this thread's last error and returns its code.
pub(crate) fn record(e: &CapiError) -> c_int {
    let code = e.code();
    // Interior NULs cannot end up in the C string: they are replaced.
    let text = e.describe().replace('\0', " ");
    let message = CString::new(text).unwrap_or_default();
    let _ = LAST.try_with(|l| {
        if let Ok(mut l) = l.try_borrow_mut() {
            *l = LastError { code, message };
        }
    });
    code
}

/// This thread's last error code.
pub(crate) fn last_code() -> c_int {
    LAST.try_with(|l| l.try_borrow().map_or(HRPC_E_INTERNAL, |l| l.code))
        .unwrap_or(HRPC_E_INTERNAL)
}

/// A pointer to this thread's last error message, valid until the next error on this thread.
pub(crate) fn last_message() -> *const c_char {
    LAST.try_with(|l| l.try_borrow().map(|l| l.message.as_ptr()).ok())
        .ok()
        .flatten()
        .unwrap_or(c"".as_ptr())
}

/// The static description of `code`.
pub(crate) fn describe_code(code: c_int) -> &'static CStr {
    ERROR_CODES
        .iter()
        .find(|(c, _)| *c == code)
        .map_or(c"unknown error code", |(_, s)| s)
}
