//! The C API called from Rust: bad arguments are errors, never crashes; the typed open
//! errors; the commit point of a send buffer; calls from inside a callback (sends allowed,
//! poll and close refused); backpressure with and without waiting; the compatibility
//! functions replying from inside `on_message`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::ffi::{CStr, CString, c_int, c_uint, c_void};
use std::ptr::{null, null_mut};
use std::time::{Duration, Instant};

use hrpc_capi::compat::*;
use hrpc_capi::handle::*;
use hrpc_capi::*;
use nix::libc::{AF_INET, sa_family_t, sockaddr_in};

fn cstr(p: &std::path::Path) -> CString {
    CString::new(p.to_str().unwrap()).unwrap()
}

fn free_port() -> u16 {
    std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Opens a node on 127.0.0.1:`port` (0: ephemeral) with `setup` applied to the config.
fn open(
    path: &CStr,
    id: u32,
    port: u16,
    setup: impl FnOnce(&mut hrpc_config),
) -> Result<*mut HrpcNode, c_int> {
    let mut cfg = std::mem::MaybeUninit::<hrpc_config>::uninit();
    // SAFETY: a writable hrpc_config; the path outlives the open.
    let mut cfg = unsafe {
        hrpc_config_init(cfg.as_mut_ptr(), path.as_ptr(), id);
        cfg.assume_init()
    };
    cfg.bind_ip = c"127.0.0.1".as_ptr();
    cfg.bind_port = port;
    setup(&mut cfg);
    let mut node = null_mut();
    // SAFETY: valid config and out pointer.
    match unsafe { hrpc_node_open(&cfg, &mut node) } {
        HRPC_OK => Ok(node),
        e => Err(e),
    }
}

/// Resolver context: one port, for node 1.
extern "C" fn resolve_port(ctx: *mut c_void, node_id: u32, addr: *mut sockaddr_in) -> c_int {
    // SAFETY: the tests pass a pointer to a live u16 as the context, and a valid addr.
    let port = unsafe { *ctx.cast::<u16>() };
    if node_id != 1 {
        return 0;
    }
    // SAFETY: addr is valid for writes (the library's own stack slot).
    let a = unsafe { &mut *addr };
    a.sin_family = AF_INET as sa_family_t;
    a.sin_port = port.to_be();
    a.sin_addr.s_addr = u32::from(std::net::Ipv4Addr::LOCALHOST).to_be();
    1
}

#[test]
fn bad_arguments_are_errors() {
    // SAFETY: every pointer passed is null or valid; the point is that nulls and
    // out-of-range numbers come back as errors.
    unsafe {
        assert!(hrpc_send(1, 10).is_null());
        assert_eq!(hrpc_last_error(), HRPC_E_NOT_INITIALIZED);
        assert_eq!(hrpc_once_timeout(), -1);
        assert_eq!(hrpc_once(None), -1);
        assert_eq!(hrpc_touch_connect(1), -1);
        assert_eq!(hrpc_is_connected(1), 0);
        assert!(hrpc_default_node().is_null());
        assert_eq!(hrpc_init(null(), 1, 0, None), 0);
        assert_eq!(hrpc_last_error(), HRPC_E_INVALID_ARGUMENT);
        assert_eq!(hrpc_init(c"".as_ptr(), 1, 0, None), 0);
        assert_eq!(hrpc_init(c"/tmp/x".as_ptr(), -1, 0, None), 0);
        assert_eq!(hrpc_init(c"/tmp/x".as_ptr(), 1, 70000, None), 0);
        assert_eq!(hrpc_init(c"/tmp/x".as_ptr(), 1, -5, None), 0);

        let mut node = null_mut();
        assert_eq!(hrpc_node_open(null(), &mut node), HRPC_E_INVALID_ARGUMENT);
        assert!(node.is_null());
        let dir = tempfile::tempdir().unwrap();
        let path = cstr(&dir.path().join("a"));
        let mut cfg = std::mem::zeroed::<hrpc_config>();
        hrpc_config_init(&mut cfg, path.as_ptr(), 1);
        assert_eq!(hrpc_node_open(&cfg, null_mut()), HRPC_E_INVALID_ARGUMENT);
        cfg.durability = 7;
        assert_eq!(hrpc_node_open(&cfg, &mut node), HRPC_E_INVALID_ARGUMENT);
        cfg.durability = HRPC_DURABILITY_PROCESS;
        cfg.node_id = 0;
        assert_eq!(hrpc_node_open(&cfg, &mut node), HRPC_E_INVALID_ARGUMENT);
        cfg.node_id = 1;
        cfg.bind_ip = c"not an address".as_ptr();
        assert_eq!(hrpc_node_open(&cfg, &mut node), HRPC_E_INVALID_ARGUMENT);
        cfg.bind_ip = null();
        cfg.mtu = 10;
        assert_eq!(hrpc_node_open(&cfg, &mut node), HRPC_E_CONFIG);
        hrpc_config_init(null_mut(), null(), 0);

        assert!(hrpc_node_send(null_mut(), 2, 10).is_null());
        assert_eq!(hrpc_last_error(), HRPC_E_INVALID_ARGUMENT);
        assert_eq!(
            hrpc_node_send_copy(null_mut(), 2, null(), 0, null_mut()),
            HRPC_E_INVALID_ARGUMENT
        );
        assert_eq!(
            hrpc_node_poll(null_mut(), None, null_mut()),
            HRPC_E_INVALID_ARGUMENT
        );
        assert_eq!(hrpc_node_wait(null_mut(), 0), HRPC_E_INVALID_ARGUMENT);
        assert_eq!(hrpc_node_timeout(null_mut()), HRPC_E_INVALID_ARGUMENT);
        assert_eq!(hrpc_node_fd(null()), HRPC_E_INVALID_ARGUMENT);
        assert_eq!(hrpc_node_touch(null_mut(), 2), HRPC_E_INVALID_ARGUMENT);
        assert_eq!(hrpc_node_is_connected(null(), 2), HRPC_E_INVALID_ARGUMENT);
        assert_eq!(
            hrpc_node_next_seq(null_mut(), 2, null_mut()),
            HRPC_E_INVALID_ARGUMENT
        );
        assert_eq!(hrpc_node_stats(null(), null_mut()), HRPC_E_INVALID_ARGUMENT);
        assert_eq!(hrpc_node_close(null_mut(), 0), HRPC_OK);

        let node = open(&path, 1, 0, |_| {}).unwrap();
        assert!(hrpc_node_fd(node) > 0);
        assert!(hrpc_node_send(node, 0, 10).is_null());
        assert_eq!(hrpc_last_error(), HRPC_E_INVALID_ARGUMENT);
        assert!(hrpc_node_send(node, 1, 10).is_null(), "to itself");
        assert_eq!(hrpc_last_error(), HRPC_E_INVALID_PEER);
        assert!(hrpc_node_send(node, 2, 1 << 30).is_null());
        assert_eq!(hrpc_last_error(), HRPC_E_TOO_LARGE);
        assert_eq!(
            hrpc_node_send_copy(node, 2, null(), 5, null_mut()),
            HRPC_E_INVALID_ARGUMENT
        );
        assert_eq!(
            hrpc_node_poll(node, None, null_mut()),
            HRPC_E_INVALID_ARGUMENT
        );
        assert_eq!(
            hrpc_node_next_seq(node, 2, null_mut()),
            HRPC_E_INVALID_ARGUMENT
        );
        assert_eq!(hrpc_node_stats(node, null_mut()), HRPC_E_INVALID_ARGUMENT);
        assert_eq!(hrpc_node_touch(node, 0), HRPC_E_INVALID_ARGUMENT);
        // A zero-length message is a valid, non-null buffer.
        assert!(!hrpc_node_send(node, 2, 0).is_null());
        let mut seq = 0;
        assert_eq!(hrpc_node_next_seq(node, 2, &mut seq), HRPC_OK);
        assert_eq!(seq, 2, "the empty message was committed by the next call");
        assert_eq!(hrpc_node_close(node, 0), HRPC_OK);

        for (code, _) in ERROR_CODES {
            assert!(!CStr::from_ptr(hrpc_strerror(*code)).is_empty());
        }
        assert_eq!(CStr::from_ptr(hrpc_strerror(12345)), c"unknown error code");
        assert!(!hrpc_last_error_message().is_null());
    }
}

#[test]
fn store_locked_and_port_in_use_are_reported() {
    let dir = tempfile::tempdir().unwrap();
    let path = cstr(&dir.path().join("a"));
    let port = free_port();
    let a = open(&path, 1, port, |_| {}).unwrap();
    assert_eq!(open(&path, 1, 0, |_| {}).err(), Some(HRPC_E_STORE_LOCKED));
    let other = cstr(&dir.path().join("b"));
    assert_eq!(
        open(&other, 2, port, |_| {}).err(),
        Some(HRPC_E_ADDR_IN_USE)
    );
    // SAFETY: pointers are valid; `a` is a live node, closed once.
    unsafe {
        assert_eq!(hrpc_init(path.as_ptr(), 1, 0, None), 0, "store locked");
        assert_eq!(hrpc_last_error(), HRPC_E_STORE_LOCKED);
        assert_eq!(
            hrpc_init(other.as_ptr(), 2, c_int::from(port), None),
            0,
            "port in use"
        );
        assert_eq!(hrpc_last_error(), HRPC_E_ADDR_IN_USE);
        assert_eq!(hrpc_node_close(a, 0), HRPC_OK);
    }
}

#[test]
fn backpressure_returns_null_after_the_configured_wait() {
    let dir = tempfile::tempdir().unwrap();
    let path = cstr(&dir.path().join("a"));
    let node = open(&path, 2, 0, |c| {
        c.max_unacked_per_peer = 2;
        c.send_block_ms = 150;
    })
    .unwrap();
    // SAFETY: a live node; buffers are written within their length.
    unsafe {
        // Peer 1 has no address: nothing is ever acknowledged.
        assert!(!hrpc_node_send(node, 1, 4).is_null());
        assert!(!hrpc_node_send(node, 1, 4).is_null());
        let t = Instant::now();
        assert!(hrpc_node_send(node, 1, 4).is_null());
        assert_eq!(hrpc_last_error(), HRPC_E_BACKPRESSURE);
        assert!(
            t.elapsed() >= Duration::from_millis(150),
            "{:?}",
            t.elapsed()
        );
        assert_eq!(
            hrpc_node_send_copy(node, 1, b"x".as_ptr().cast(), 1, null_mut()),
            HRPC_E_BACKPRESSURE
        );
        let mut stats = hrpc_stats::default();
        assert_eq!(hrpc_node_stats(node, &mut stats), HRPC_OK);
        assert_eq!(stats.unacked, 2);
        assert_eq!(hrpc_node_close(node, 0), HRPC_OK);
    }
}

/// What the server's callback saw and what its nested calls returned.
#[derive(Default)]
struct Seen {
    node: usize,
    got: Vec<(u32, u64, Vec<u8>)>,
    nested_poll: c_int,
    nested_close: c_int,
    nested_wait: c_int,
}

extern "C" fn on_server(ctx: *mut c_void, peer: u32, seq: u64, data: *const c_void, len: usize) {
    // SAFETY: ctx is the test's Seen; data is valid for len bytes during the callback.
    let seen = unsafe { &mut *ctx.cast::<Seen>() };
    // SAFETY: as above.
    let bytes = unsafe { std::slice::from_raw_parts(data.cast::<u8>(), len) }.to_vec();
    let node = seen.node as *mut HrpcNode;
    // SAFETY: the node whose callback this is; the reply buffer is written within its length.
    unsafe {
        seen.nested_poll = hrpc_node_poll(node, Some(on_server), ctx);
        seen.nested_close = hrpc_node_close(node, 0);
        seen.nested_wait = hrpc_node_wait(node, 0);
        let reply = hrpc_node_send(node, peer, 4);
        assert!(!reply.is_null());
        std::ptr::copy_nonoverlapping(b"pong".as_ptr(), reply.cast::<u8>(), 4);
    }
    seen.got.push((peer, seq, bytes));
}

extern "C" fn on_client(ctx: *mut c_void, _peer: u32, _seq: u64, data: *const c_void, len: usize) {
    // SAFETY: ctx is the test's Vec; data is valid for len bytes.
    let got = unsafe { &mut *ctx.cast::<Vec<Vec<u8>>>() };
    // SAFETY: as above.
    got.push(unsafe { std::slice::from_raw_parts(data.cast::<u8>(), len) }.to_vec());
}

/// A callback may send (committed when it returns) but not poll, wait on or close its own
/// node; the reply arrives.
#[test]
fn callbacks_send_but_do_not_reenter_the_poll() {
    let dir = tempfile::tempdir().unwrap();
    let mut port = free_port();
    let server = open(&cstr(&dir.path().join("s")), 1, port, |_| {}).unwrap();
    let client = open(&cstr(&dir.path().join("c")), 2, 0, |c| {
        c.resolve = Some(resolve_port);
        c.resolve_ctx = (&raw mut port).cast();
    })
    .unwrap();
    let mut seen = Seen {
        node: server as usize,
        ..Seen::default()
    };
    let mut replies: Vec<Vec<u8>> = Vec::new();
    // SAFETY: live nodes; contexts outlive the polls.
    unsafe {
        let buf = hrpc_node_send(client, 1, 4);
        std::ptr::copy_nonoverlapping(b"ping".as_ptr(), buf.cast::<u8>(), 4);
        let deadline = Instant::now() + Duration::from_secs(20);
        while replies.is_empty() && Instant::now() < deadline {
            assert!(hrpc_node_poll(client, Some(on_client), (&raw mut replies).cast()) >= 0);
            assert!(hrpc_node_poll(server, Some(on_server), (&raw mut seen).cast()) >= 0);
            assert_eq!(hrpc_node_wait(client, 1), HRPC_OK);
        }
        assert_eq!(seen.got, vec![(2, 1, b"ping".to_vec())]);
        assert_eq!(seen.nested_poll, HRPC_E_BUSY);
        assert_eq!(seen.nested_close, HRPC_E_BUSY);
        assert_eq!(seen.nested_wait, HRPC_E_BUSY);
        assert_eq!(replies, vec![b"pong".to_vec()]);
        assert_eq!(hrpc_node_is_connected(client, 1), 1);
        assert_eq!(hrpc_node_close(client, 0), HRPC_OK);
        assert_eq!(hrpc_node_close(server, 0), HRPC_OK);
    }
}

thread_local! {
    static ECHOED: std::cell::Cell<u32> = const { std::cell::Cell::new(0) };
}

extern "C" fn compat_get_addr(_nid: c_int) -> sockaddr_in {
    // SAFETY: all-zero is a valid sockaddr_in: "unknown" (peers are learned from datagrams).
    unsafe { std::mem::zeroed() }
}

extern "C" fn compat_echo(nid: c_int, message: *mut c_void, size: c_uint) {
    let p = hrpc_send(nid, size as c_int).cast::<u8>();
    assert!(!p.is_null());
    // SAFETY: `message` is valid for `size` bytes during the callback, `p` for `size` bytes
    // until the next call.
    unsafe { std::ptr::copy_nonoverlapping(message.cast::<u8>(), p, size as usize) };
    ECHOED.with(|e| e.set(e.get() + 1));
}

/// The compatibility API on its own thread echoes from inside `on_message` (the seed's
/// pattern); a handle-API client gets every echo, in order.
#[test]
fn compat_node_replies_from_on_message() {
    const N: u64 = 500;
    let dir = tempfile::tempdir().unwrap();
    let mut port = free_port();
    let server_path = cstr(&dir.path().join("s"));
    let server = std::thread::spawn(move || {
        // SAFETY: valid path and resolver.
        let fd = unsafe {
            hrpc_init(
                server_path.as_ptr(),
                1,
                c_int::from(port),
                Some(compat_get_addr),
            )
        };
        assert!(fd > 0);
        // As the original: the fd is the node's UDP socket, bound to the port asked for.
        // SAFETY: `fd` stays open while this thread's node lives; borrowed only here.
        let sock = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
        let kind = nix::sys::socket::getsockopt(&sock, nix::sys::socket::sockopt::SockType);
        assert_eq!(kind.ok(), Some(nix::sys::socket::SockType::Datagram));
        let bound: nix::sys::socket::SockaddrIn = nix::sys::socket::getsockname(fd).unwrap();
        assert_eq!(bound.port(), port);
        assert!(!hrpc_default_node().is_null());
        let deadline = Instant::now() + Duration::from_secs(30);
        while ECHOED.with(std::cell::Cell::get) < N as u32 && Instant::now() < deadline {
            // SAFETY: a valid callback.
            let t = unsafe { hrpc_once(Some(compat_echo)) };
            assert!((0..=1000).contains(&t), "{t}");
            std::thread::sleep(Duration::from_micros(200));
        }
        // Keep answering retransmissions briefly, then close this thread's node.
        let until = Instant::now() + Duration::from_millis(500);
        while Instant::now() < until {
            // SAFETY: as above.
            unsafe { hrpc_once(Some(compat_echo)) };
            std::thread::sleep(Duration::from_millis(1));
        }
        ECHOED.with(std::cell::Cell::get)
    });
    let client = open(&cstr(&dir.path().join("c")), 2, 0, |c| {
        c.resolve = Some(resolve_port);
        c.resolve_ctx = (&raw mut port).cast();
    })
    .unwrap();
    let mut replies: Vec<Vec<u8>> = Vec::new();
    // SAFETY: a live node, valid buffers and context.
    unsafe {
        for i in 0..N {
            let msg = i.to_le_bytes();
            assert_eq!(
                hrpc_node_send_copy(client, 1, msg.as_ptr().cast(), 8, null_mut()),
                HRPC_OK
            );
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        while (replies.len() as u64) < N && Instant::now() < deadline {
            assert!(hrpc_node_poll(client, Some(on_client), (&raw mut replies).cast()) >= 0);
            assert_eq!(hrpc_node_wait(client, 1), HRPC_OK);
        }
        assert_eq!(hrpc_node_close(client, 0), HRPC_OK);
    }
    let expected: Vec<Vec<u8>> = (0..N).map(|i| i.to_le_bytes().to_vec()).collect();
    assert_eq!(replies, expected);
    assert_eq!(server.join().unwrap(), N as u32);
}

/// The buffer of a last `hrpc_send` is committed when the thread that called `hrpc_init`
/// exits, and the store is released: reopened, it holds the message.
#[test]
fn thread_exit_commits_the_last_compat_send() {
    let dir = tempfile::tempdir().unwrap();
    let path = cstr(&dir.path().join("a"));
    let p = path.clone();
    std::thread::spawn(move || {
        // SAFETY: a valid path; the buffer is written within its 3 bytes.
        unsafe {
            assert!(hrpc_init(p.as_ptr(), 2, 0, Some(compat_get_addr)) > 0);
            let buf = hrpc_send(1, 3).cast::<u8>();
            assert!(!buf.is_null());
            std::ptr::copy_nonoverlapping(b"end".as_ptr(), buf, 3);
        }
    })
    .join()
    .unwrap();
    let node = open(&path, 2, 0, |_| {}).unwrap();
    let mut next = 0;
    // SAFETY: a live node and a valid out pointer.
    unsafe {
        assert_eq!(hrpc_node_next_seq(node, 1, &mut next), HRPC_OK);
        assert_eq!(hrpc_node_close(node, 0), HRPC_OK);
    }
    assert_eq!(next, 2, "the message was committed at thread exit");
}
