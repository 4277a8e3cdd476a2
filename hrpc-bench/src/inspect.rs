//! `hrpc-bench inspect STORE_DIR [--json]`: an operator's view of a store directory through
//! [`hrpc_store::inspect`], which reads the files without taking the store's lock and without
//! writing anything, so it is safe beside a live node and on a damaged store. This module owns
//! the command's report text, its JSON object and its exit status.

use std::fmt::Write as _;
use std::path::Path;
use std::process::ExitCode;

use hrpc_store::Durability;
use hrpc_store::inspect::{Inspection, LockState, inspect_dir_as};

/// Exit status: the store was read and no damage was found.
pub const EXIT_HEALTHY: u8 = 0;
/// Exit status: the store was read and damage was found.
pub const EXIT_DAMAGED: u8 = 1;
/// Exit status: the store could not be read at all (no directory, no usable `meta`).
pub const EXIT_UNREADABLE: u8 = 2;

/// What the command was asked for.
#[derive(Debug, Clone, Copy, Default)]
pub struct InspectOpts {
    /// Print one JSON object instead of the text report.
    pub json: bool,
    /// Judge the store as one used with `Durability::Sync` (a torn slot, a slot without a
    /// record or a hole above the recorded floor is what a power loss leaves, not damage).
    pub sync: bool,
    /// Also print the store epoch and the peers' session tokens (secrets).
    pub show_secrets: bool,
}

/// Runs the command on `dir`: prints the report (stdout) or the error (stderr; with `--json`
/// also `{"error": ...}` on stdout) and returns the exit status.
pub fn run(dir: &Path, opts: InspectOpts) -> ExitCode {
    let durability = if opts.sync {
        Durability::Sync
    } else {
        Durability::Process
    };
    match inspect_dir_as(dir, durability) {
        Ok(i) => {
            if opts.json {
                match serde_json::to_string(&json(&i, opts.show_secrets)) {
                    Ok(s) => println!("{s}"),
                    Err(e) => {
                        eprintln!("hrpc-bench inspect: cannot encode the report: {e}");
                        return ExitCode::from(EXIT_UNREADABLE);
                    }
                }
            } else {
                print!("{}", render(&i, opts.show_secrets));
            }
            ExitCode::from(if i.is_healthy() {
                EXIT_HEALTHY
            } else {
                EXIT_DAMAGED
            })
        }
        Err(e) => {
            let msg = chain(&e);
            eprintln!("hrpc-bench inspect: {msg}");
            if opts.json {
                println!("{}", serde_json::json!({ "error": msg }));
            }
            ExitCode::from(EXIT_UNREADABLE)
        }
    }
}

/// An error and its sources, `a: b: c`.
fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(c) = src {
        let _ = write!(s, ": {c}");
        src = c.source();
    }
    s
}

/// The JSON object: the serialized [`Inspection`] plus `"healthy"`; with `show_secrets` also
/// `"epoch"` and each peer's `"session_epoch"`.
pub fn json(i: &Inspection, show_secrets: bool) -> serde_json::Value {
    let mut v =
        serde_json::to_value(i).unwrap_or_else(|e| serde_json::json!({ "error": e.to_string() }));
    if let Some(o) = v.as_object_mut() {
        o.insert("healthy".into(), i.is_healthy().into());
        if show_secrets {
            o.insert("epoch".into(), i.epoch.into());
            if let Some(peers) = o.get_mut("peers").and_then(|p| p.as_array_mut()) {
                for (p, info) in peers.iter_mut().zip(&i.peers) {
                    if let Some(p) = p.as_object_mut() {
                        p.insert("session_epoch".into(), info.session_epoch.into());
                    }
                }
            }
        }
    }
    v
}

/// `n` bytes, readably.
fn size(n: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut v = n as f64 / 1024.0;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    format!("{v:.1} {}", UNITS[u])
}

/// The text report.
pub fn render(i: &Inspection, show_secrets: bool) -> String {
    let mut s = String::new();
    let epoch = if show_secrets {
        format!("{:#018x}", i.epoch)
    } else {
        "secret (--show-secrets prints it)".to_string()
    };
    let _ = writeln!(s, "store {}", i.dir.display());
    let _ = writeln!(
        s,
        "  node {}, format version {}, {} peer entries, epoch {epoch}",
        i.node_id, i.format_version, i.max_peers
    );
    let lock = match &i.lock {
        LockState::Free => "free (no process has the store open)".to_string(),
        LockState::Held => "held by a live process (files read while they may change)".to_string(),
        LockState::NoLockFile => "no LOCK file".to_string(),
        LockState::Unknown(why) => format!("unknown ({why})"),
    };
    let _ = writeln!(s, "  lock: {lock}");
    let _ = writeln!(
        s,
        "  {} files, {} on disk; slots in use {} ({} live, {} stale, {} damaged)",
        i.files.len(),
        size(i.disk_bytes),
        size(i.used_bytes),
        i.live_slots,
        i.stale_slots,
        i.damaged_slots
    );
    let others: Vec<&str> = i
        .files
        .iter()
        .filter(|f| {
            matches!(
                f.kind,
                hrpc_store::inspect::FileKind::Temporary | hrpc_store::inspect::FileKind::Other
            )
        })
        .map(|f| f.name.as_str())
        .collect();
    if !others.is_empty() {
        let _ = writeln!(s, "  other files: {}", others.join(", "));
    }
    let _ = writeln!(s, "segments: {}", i.segments.len());
    for g in &i.segments {
        if !g.header_ok {
            let _ = writeln!(
                s,
                "  {}  {}  header unreadable or invalid",
                g.name,
                size(g.bytes)
            );
            continue;
        }
        let _ = writeln!(
            s,
            "  {}  {}  {} B slots x {}: {} live, {} stale, {} damaged, {} free; used {}, free {}",
            g.name,
            size(g.bytes),
            g.slot_size,
            g.slots,
            g.live_slots,
            g.stale_slots,
            g.damaged_slots,
            g.free_slots,
            size(g.used_bytes),
            size(g.free_bytes)
        );
    }
    let _ = writeln!(s, "peers: {}", i.peers.len());
    for p in &i.peers {
        let out = match p.lowest_outbound_seq {
            Some(low) => format!(
                "{low}..{} pending in {} slots ({})",
                p.next_outbound_seq,
                p.outbound_count,
                size(p.outbound_bytes)
            ),
            None => format!("none pending, next {}", p.next_outbound_seq),
        };
        let inb = match (p.lowest_inbound_seq, p.highest_inbound_seq) {
            (Some(lo), Some(hi)) => format!(
                "{lo}..={hi} held in {} slots ({})",
                p.inbound_count,
                size(p.inbound_bytes)
            ),
            _ => "none held".to_string(),
        };
        let token = match (show_secrets, p.session_epoch) {
            (true, Some(t)) => format!(", session token {t:#018x}"),
            _ => String::new(),
        };
        let record = if p.has_record { "" } else { " (no record)" };
        let calls = match p.calls_pending {
            0 => String::new(),
            n => format!("; {n} calls outstanding"),
        };
        let _ = writeln!(
            s,
            "  peer {}{record}: outbound {out}, acked {}; inbound consumed {}, {inb}{calls}{token}",
            p.peer, p.acked_outbound_seq, p.consumed_inbound_seq
        );
    }
    if i.is_healthy() {
        let _ = writeln!(s, "damage: none");
    } else {
        let _ = writeln!(s, "damage: {} problem(s)", i.damage_count);
        for d in &i.damage {
            let name = d.file.file_name().map_or_else(
                || d.file.display().to_string(),
                |n| n.to_string_lossy().into_owned(),
            );
            let _ = writeln!(s, "  {name} @ {}: {}", d.offset, d.what);
        }
        if i.damage.len() < i.damage_count {
            let _ = writeln!(s, "  ... {} more", i.damage_count - i.damage.len());
        }
        for r in &i.lost {
            let _ = writeln!(
                s,
                "  lost outbound: peer {} seqs {}..={}",
                r.peer, r.first, r.last
            );
        }
    }
    s
}
