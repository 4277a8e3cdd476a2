//! The handle API: `hrpc_config_init`, `hrpc_node_open` … `hrpc_node_close`, and the error
//! functions. Each function checks its pointers, runs through `boundary::call` (no panic crosses into
//! C) and returns `HRPC_OK`, a count, or a negative `HRPC_E_*` code.

use std::ffi::{c_char, c_int, c_void};
use std::time::Duration;

use crate::boundary::call;
use crate::config::{default_config, hrpc_config, hrpc_stats, node_config};
use crate::error::{CapiError, HRPC_OK, describe_code, last_code, last_message};
use crate::node::HrpcNode;

/// `hrpc_message_fn`: called once per delivered message.
pub type HrpcMessageFn = Option<
    unsafe extern "C" fn(ctx: *mut c_void, peer: u32, seq: u64, data: *const c_void, len: usize),
>;

/// The node behind a C handle.
///
/// # Safety
/// `node` is null or a pointer `hrpc_node_open` returned and `hrpc_node_close` has not freed.
unsafe fn node_ref<'a>(node: *const HrpcNode) -> Result<&'a HrpcNode, CapiError> {
    // SAFETY: per this function's contract the pointer is null or a live Box<HrpcNode>; only
    // shared references are ever made from it (the node's state is in cells).
    unsafe { node.as_ref() }.ok_or(CapiError::InvalidArgument("node is null"))
}

/// A peer id from C.
fn peer_id(peer: u32) -> Result<u32, CapiError> {
    if peer == 0 {
        return Err(CapiError::InvalidArgument("peer id 0"));
    }
    Ok(peer)
}

/// Fills `*config` with the defaults, the store at `store_path` and the id `node_id`.
///
/// # Safety
/// `config` is null or points to writable memory for an `hrpc_config`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn hrpc_config_init(
    config: *mut hrpc_config,
    store_path: *const c_char,
    node_id: u32,
) {
    call(drop, || {
        if config.is_null() {
            return Err(CapiError::InvalidArgument("config is null"));
        }
        // SAFETY: non-null and writable per this function's contract; `write` does not read
        // the (possibly uninitialized) old value.
        unsafe { config.write(default_config(store_path, node_id)) };
        Ok(())
    })
}

/// Opens a node; `*out` gets it.
///
/// # Safety
/// `config` is null or points to a valid `hrpc_config` whose pointers are valid as `hrpc.h`
/// documents; `out` is null or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn hrpc_node_open(
    config: *const hrpc_config,
    out: *mut *mut HrpcNode,
) -> c_int {
    call(
        |code| code,
        || {
            if out.is_null() {
                return Err(CapiError::InvalidArgument("out is null"));
            }
            // SAFETY: non-null per the check above, writable per this function's contract.
            unsafe { out.write(std::ptr::null_mut()) };
            // SAFETY: null or valid per this function's contract.
            let config =
                unsafe { config.as_ref() }.ok_or(CapiError::InvalidArgument("config is null"))?;
            // SAFETY: the config's pointers are valid per this function's contract.
            let (cfg, send_block) = unsafe { node_config(config) }?;
            let node = Box::new(HrpcNode::open(cfg, send_block)?);
            // SAFETY: as above.
            unsafe { out.write(Box::into_raw(node)) };
            Ok(HRPC_OK)
        },
    )
}

/// A buffer of `len` bytes for a message to `peer`, committed at the next call on the node.
///
/// # Safety
/// `node` is null or a live handle from `hrpc_node_open`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn hrpc_node_send(node: *mut HrpcNode, peer: u32, len: usize) -> *mut c_void {
    call(
        |_| std::ptr::null_mut(),
        || {
            // SAFETY: per this function's contract.
            let node = unsafe { node_ref(node) }?;
            Ok(node.reserve(peer_id(peer)?, len)?.cast())
        },
    )
}

/// Commits a copy of `data` for `peer`.
///
/// # Safety
/// `node` is null or a live handle; `data` is null (with `len` 0) or readable for `len`
/// bytes; `seq_out` is null or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn hrpc_node_send_copy(
    node: *mut HrpcNode,
    peer: u32,
    data: *const c_void,
    len: usize,
    seq_out: *mut u64,
) -> c_int {
    call(
        |code| code,
        || {
            // SAFETY: per this function's contract.
            let node = unsafe { node_ref(node) }?;
            let bytes: &[u8] = if len == 0 {
                &[]
            } else if data.is_null() {
                return Err(CapiError::InvalidArgument("data is null"));
            } else {
                // SAFETY: non-null and readable for `len` bytes per this function's contract.
                unsafe { std::slice::from_raw_parts(data.cast::<u8>(), len) }
            };
            let seq = node.send_copy(peer_id(peer)?, bytes)?;
            // SAFETY: null or writable per this function's contract.
            if let Some(out) = unsafe { seq_out.as_mut() } {
                *out = seq;
            }
            Ok(HRPC_OK)
        },
    )
}

/// Does all ready work, calling `on_message` for each ready message; returns how many.
///
/// # Safety
/// `node` is null or a live handle; `on_message` is a valid function that may be called with
/// `ctx`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn hrpc_node_poll(
    node: *mut HrpcNode,
    on_message: HrpcMessageFn,
    ctx: *mut c_void,
) -> c_int {
    call(
        |code| code,
        || {
            // SAFETY: per this function's contract.
            let node = unsafe { node_ref(node) }?;
            let on_message = on_message.ok_or(CapiError::InvalidArgument("on_message is null"))?;
            let (delivered, _) = node.poll(&mut |d| {
                // SAFETY: the caller's callback with its own context; the data pointer is
                // valid for `len` bytes until the callback returns.
                unsafe {
                    on_message(
                        ctx,
                        d.peer,
                        d.seq,
                        d.payload.as_ptr().cast(),
                        d.payload.len(),
                    )
                }
            })?;
            Ok(c_int::try_from(delivered).unwrap_or(c_int::MAX))
        },
    )
}

/// Blocks until the node has work or `timeout_ms` passes (< 0: its next timer).
///
/// # Safety
/// `node` is null or a live handle.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn hrpc_node_wait(node: *mut HrpcNode, timeout_ms: c_int) -> c_int {
    call(
        |code| code,
        || {
            // SAFETY: per this function's contract.
            let node = unsafe { node_ref(node) }?;
            let timeout = u64::try_from(timeout_ms).ok().map(Duration::from_millis);
            node.wait(timeout)?;
            Ok(HRPC_OK)
        },
    )
}

/// Milliseconds until the node next needs a poll.
///
/// # Safety
/// `node` is null or a live handle.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn hrpc_node_timeout(node: *mut HrpcNode) -> c_int {
    call(
        |code| code,
        || {
            // SAFETY: per this function's contract.
            let node = unsafe { node_ref(node) }?;
            node.timeout_ms()
        },
    )
}

/// The fd readable when the node has work.
///
/// # Safety
/// `node` is null or a live handle.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn hrpc_node_fd(node: *const HrpcNode) -> c_int {
    call(
        |code| code,
        || {
            // SAFETY: per this function's contract.
            let node = unsafe { node_ref(node) }?;
            node.commit_pending()?;
            Ok(node.fd())
        },
    )
}

/// Starts talking to `peer`.
///
/// # Safety
/// `node` is null or a live handle.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn hrpc_node_touch(node: *mut HrpcNode, peer: u32) -> c_int {
    call(
        |code| code,
        || {
            // SAFETY: per this function's contract.
            let node = unsafe { node_ref(node) }?;
            node.touch(peer_id(peer)?)?;
            Ok(HRPC_OK)
        },
    )
}

/// 1 if `peer` was heard from recently, 0 if not.
///
/// # Safety
/// `node` is null or a live handle.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn hrpc_node_is_connected(node: *const HrpcNode, peer: u32) -> c_int {
    call(
        |code| code,
        || {
            // SAFETY: per this function's contract.
            let node = unsafe { node_ref(node) }?;
            Ok(c_int::from(node.is_connected(peer)?))
        },
    )
}

/// The seq the next message to `peer` will get.
///
/// # Safety
/// `node` is null or a live handle; `seq_out` is null or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn hrpc_node_next_seq(
    node: *mut HrpcNode,
    peer: u32,
    seq_out: *mut u64,
) -> c_int {
    call(
        |code| code,
        || {
            // SAFETY: per this function's contract.
            let node = unsafe { node_ref(node) }?;
            // SAFETY: null or writable per this function's contract.
            let out =
                unsafe { seq_out.as_mut() }.ok_or(CapiError::InvalidArgument("seq_out is null"))?;
            *out = node.next_seq(peer_id(peer)?)?;
            Ok(HRPC_OK)
        },
    )
}

/// Fills `*stats`.
///
/// # Safety
/// `node` is null or a live handle; `stats` is null or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn hrpc_node_stats(node: *const HrpcNode, stats: *mut hrpc_stats) -> c_int {
    call(
        |code| code,
        || {
            // SAFETY: per this function's contract.
            let node = unsafe { node_ref(node) }?;
            if stats.is_null() {
                return Err(CapiError::InvalidArgument("stats is null"));
            }
            let s = node.stats()?;
            // SAFETY: non-null and writable per this function's contract.
            unsafe { stats.write(s) };
            Ok(HRPC_OK)
        },
    )
}

/// Commits an outstanding buffer, transmits for up to `linger_ms` and frees the node.
///
/// # Safety
/// `node` is null or a live handle, not used again after this call.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn hrpc_node_close(node: *mut HrpcNode, linger_ms: c_int) -> c_int {
    call(
        |code| code,
        || {
            if node.is_null() {
                return Ok(HRPC_OK);
            }
            // SAFETY: a live handle per this function's contract.
            if unsafe { node_ref(node) }?.busy() {
                return Err(CapiError::Busy);
            }
            if crate::compat::is_default(node) {
                return Err(CapiError::InvalidArgument(
                    "the node of hrpc_init is closed by the next hrpc_init only",
                ));
            }
            // SAFETY: a pointer from Box::into_raw in hrpc_node_open that the caller gives up;
            // no reference to it is alive (not busy: no callback of it is running).
            let node = unsafe { Box::from_raw(node) };
            let linger = Duration::from_millis(u64::try_from(linger_ms).unwrap_or(0));
            node.close(linger)?;
            Ok(HRPC_OK)
        },
    )
}

/// This thread's last error code.
#[unsafe(no_mangle)]
pub extern "C" fn hrpc_last_error() -> c_int {
    call(|code| code, || Ok(last_code()))
}

/// This thread's last error message.
#[unsafe(no_mangle)]
pub extern "C" fn hrpc_last_error_message() -> *const c_char {
    call(|_| c"internal error".as_ptr(), || Ok(last_message()))
}

/// A static description of `code`.
#[unsafe(no_mangle)]
pub extern "C" fn hrpc_strerror(code: c_int) -> *const c_char {
    call(
        |_| c"internal error".as_ptr(),
        || Ok(describe_code(code).as_ptr()),
    )
}
