//! The compatibility API: the original library's six functions, with its names, signatures
//! and meaning, over one [`HrpcNode`] per thread (the one `hrpc_init` opened on it).
//!
//! Differences a program cannot observe through these signatures but may rely on: messages
//! survive either process being killed, `hrpc_send`'s buffer is committed at the next call
//! (or when the message callback that took it returns), and on backpressure `hrpc_send`
//! keeps the node receiving acknowledgements for up to [`COMPAT_SEND_BLOCK`] before it
//! returns NULL, because programs written for the original library do not check for NULL.

use std::cell::RefCell;
use std::ffi::{c_char, c_int, c_uint, c_void};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::time::Duration;

use hrpc_node::NodeConfig;
use nix::libc::sockaddr_in;

use crate::boundary::call;
use crate::config::{c_str, socket_addr};
use crate::error::CapiError;
use crate::node::HrpcNode;

/// How long `hrpc_send` drives the node on backpressure before it returns NULL.
pub const COMPAT_SEND_BLOCK: Duration = Duration::from_secs(2);
/// How long the previous node may transmit when `hrpc_init` replaces it.
const REPLACE_LINGER: Duration = Duration::from_millis(100);

/// The original `get_addr`.
pub type GetAddrFn = Option<unsafe extern "C" fn(nid: c_int) -> sockaddr_in>;
/// The original `on_message`.
pub type OnMessageFn = Option<unsafe extern "C" fn(nid: c_int, message: *mut c_void, size: c_uint)>;

/// The node of a thread's `hrpc_init`. Boxed so `hrpc_default_node` can hand out a stable
/// pointer.
#[derive(Debug)]
struct ThreadNode(Option<Box<HrpcNode>>);

impl Drop for ThreadNode {
    /// When the thread (or the process, from `main`) exits, the buffer of a last `hrpc_send`
    /// is committed and the node closed, as the next call would have.
    fn drop(&mut self) {
        if let Some(node) = self.0.take() {
            let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                node.close(Duration::ZERO)
            }));
        }
    }
}

thread_local! {
    static DEFAULT: RefCell<ThreadNode> = const { RefCell::new(ThreadNode(None)) };
}

/// Runs `f` on this thread's node. A shared borrow: callbacks may call back in.
fn with_default<T>(f: impl FnOnce(&HrpcNode) -> Result<T, CapiError>) -> Result<T, CapiError> {
    DEFAULT
        .try_with(|d| {
            let d = d.try_borrow().map_err(|_| CapiError::Busy)?;
            let node = d.0.as_deref().ok_or(CapiError::NotInitialized)?;
            f(node)
        })
        .unwrap_or(Err(CapiError::NotInitialized))
}

/// Whether `node` is this thread's default node.
pub(crate) fn is_default(node: *const HrpcNode) -> bool {
    DEFAULT
        .try_with(|d| {
            d.try_borrow()
                .map(|d| d.0.as_deref().is_some_and(|n| std::ptr::eq(n, node)))
                .unwrap_or(true)
        })
        .unwrap_or(false)
}

/// A node id from C.
fn node_id(nid: c_int) -> Result<u32, CapiError> {
    u32::try_from(nid)
        .ok()
        .filter(|&n| n != 0)
        .ok_or(CapiError::InvalidArgument("node id must be positive"))
}

/// Opens this thread's node; returns its fd, 0 on failure.
///
/// # Safety
/// `dbpath` is null or a NUL-terminated string; `get_addr` is null or a function that can be
/// called with any node id for as long as the node lives.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn hrpc_init(
    dbpath: *const c_char,
    nid: c_int,
    bind_port: c_int,
    get_addr: GetAddrFn,
) -> c_int {
    call(
        |_| 0,
        || {
            // SAFETY: null or NUL-terminated per this function's contract.
            let path = unsafe { c_str(dbpath, "dbpath is null or not UTF-8") }?;
            if path.is_empty() {
                return Err(CapiError::InvalidArgument("dbpath is empty"));
            }
            let id = node_id(nid)?;
            let port = u16::try_from(bind_port)
                .map_err(|_| CapiError::InvalidArgument("bind_port is not 0..=65535"))?;
            let bind = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, port));
            let mut cfg = NodeConfig::new(path, id).bind(bind);
            if let Some(get_addr) = get_addr {
                cfg = cfg.resolver(move |peer: u32| {
                    let nid = c_int::try_from(peer).ok()?;
                    // SAFETY: the caller's resolver, callable with any node id per this
                    // function's contract.
                    let addr = unsafe { get_addr(nid) };
                    socket_addr(&addr)
                });
            }
            DEFAULT
                .try_with(|d| {
                    let mut d = d.try_borrow_mut().map_err(|_| CapiError::Busy)?;
                    // The previous node first: the new one may reuse its store or port.
                    if let Some(old) = d.0.take() {
                        let _ = old.close(REPLACE_LINGER);
                    }
                    let node = Box::new(HrpcNode::open(cfg, COMPAT_SEND_BLOCK)?);
                    let fd = node.socket_fd();
                    d.0 = Some(node);
                    Ok(fd)
                })
                .unwrap_or(Err(CapiError::NotInitialized))
        },
    )
}

/// Starts talking to `nid`: 0 on success, -1 on error.
#[unsafe(no_mangle)]
pub extern "C" fn hrpc_touch_connect(nid: c_int) -> c_int {
    call(
        |_| -1,
        || {
            let id = node_id(nid)?;
            with_default(|n| n.touch(id))?;
            Ok(0)
        },
    )
}

/// 1 if `nid` was heard from recently, 0 otherwise.
#[unsafe(no_mangle)]
pub extern "C" fn hrpc_is_connected(nid: c_int) -> c_int {
    call(
        |_| 0,
        || {
            let id = node_id(nid)?;
            Ok(c_int::from(with_default(|n| n.is_connected(id))?))
        },
    )
}

/// A buffer of `size` bytes for a message to `nid`, committed at the next call; NULL on
/// error.
#[unsafe(no_mangle)]
pub extern "C" fn hrpc_send(nid: c_int, size: c_int) -> *mut c_void {
    call(
        |_| std::ptr::null_mut(),
        || {
            let id = node_id(nid)?;
            let len = usize::try_from(size)
                .map_err(|_| CapiError::InvalidArgument("size is negative"))?;
            Ok(with_default(|n| n.reserve(id, len))?.cast())
        },
    )
}

/// Does all ready work, delivering each ready message; returns the next timeout in ms.
///
/// # Safety
/// `on_message` is null or a function that can be called with any delivered message.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn hrpc_once(on_message: OnMessageFn) -> c_int {
    call(
        |_| -1,
        || {
            let on_message = on_message.ok_or(CapiError::InvalidArgument("on_message is null"))?;
            with_default(|n| {
                let (_, more) = n.poll(&mut |d| {
                    let nid = c_int::try_from(d.peer).unwrap_or(c_int::MAX);
                    let size = c_uint::try_from(d.payload.len()).unwrap_or(c_uint::MAX);
                    // SAFETY: the caller's callback; the message pointer is valid for `size`
                    // bytes until it returns (the original signature is not const; hrpc.h
                    // says the message must not be modified).
                    unsafe { on_message(nid, d.payload.as_ptr().cast_mut().cast(), size) }
                })?;
                if more { Ok(0) } else { n.timeout_ms() }
            })
        },
    )
}

/// The next timeout in ms, without doing any work.
#[unsafe(no_mangle)]
pub extern "C" fn hrpc_once_timeout() -> c_int {
    call(|_| -1, || with_default(HrpcNode::timeout_ms))
}

/// This thread's compatibility node, or null.
#[unsafe(no_mangle)]
pub extern "C" fn hrpc_default_node() -> *mut HrpcNode {
    call(
        |_| std::ptr::null_mut(),
        || {
            Ok(DEFAULT
                .try_with(|d| {
                    d.try_borrow()
                        .ok()
                        .and_then(|d| d.0.as_deref().map(|n| std::ptr::from_ref(n).cast_mut()))
                })
                .ok()
                .flatten()
                .unwrap_or(std::ptr::null_mut()))
        },
    )
}
