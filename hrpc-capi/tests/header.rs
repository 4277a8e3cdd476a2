//! `include/hrpc.h` against the Rust definitions: it compiles warning-free as C99 and C++;
//! it declares exactly the functions the library exports, with the same parameter and return
//! types; its constants have the Rust values; and its structs have the Rust layout (sizes
//! and field offsets measured by a C program built against the header).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeMap;
use std::mem::{offset_of, size_of};
use std::process::Command;

use common::{compile, crate_dir};
use hrpc_capi::*;

fn header() -> String {
    std::fs::read_to_string(crate_dir().join("include/hrpc.h")).unwrap()
}

/// Removes `/* */` and `//` comments.
fn strip_comments(s: &str) -> String {
    let mut out = String::new();
    let mut rest = s;
    while let Some(i) = rest.find("/*") {
        out.push_str(&rest[..i]);
        let end = rest[i..].find("*/").map_or(rest.len(), |j| i + j + 2);
        out.push(' ');
        rest = &rest[end..];
    }
    out.push_str(rest);
    out.lines()
        .map(|l| l.find("//").map_or(l, |i| &l[..i]))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Collapses whitespace and glues `*` to the type before it: `const char *` → `const char*`.
fn tidy(s: &str) -> String {
    let s = s.split_whitespace().collect::<Vec<_>>().join(" ");
    s.replace(" *", "*").replace("( ", "(").replace(" )", ")")
}

/// A C parameter without its name; function pointers as `ret (*)(args)`.
fn c_param(p: &str) -> String {
    let p = tidy(p);
    if let Some(open) = p.find("(*") {
        let close = open + p[open..].find(')').unwrap();
        let ret = p[..open].trim();
        let args_start = p[close..].find('(').unwrap() + close + 1;
        let args_end = p.rfind(')').unwrap();
        let args = split_params(&p[args_start..args_end])
            .iter()
            .map(|a| c_param(a))
            .collect::<Vec<_>>()
            .join(",");
        return format!("{ret} (*)({args})");
    }
    let tokens: Vec<&str> = p.split(' ').collect();
    if p == "void" || tokens.len() < 2 {
        return p;
    }
    // Drop the name: the last identifier, keeping any `*` glued to the type.
    let last = tokens[tokens.len() - 1];
    let stars: String = last.chars().take_while(|&c| c == '*').collect();
    let mut kept = tokens[..tokens.len() - 1].join(" ");
    kept.push_str(&stars);
    kept
}

/// Splits a parameter list at top-level commas.
fn split_params(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut depth = 0;
    let mut cur = String::new();
    for c in s.chars() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                out.push(cur.trim().to_owned());
                cur.clear();
                continue;
            }
            _ => {}
        }
        cur.push(c);
    }
    if !cur.trim().is_empty() {
        out.push(cur.trim().to_owned());
    }
    out
}

/// `name → (return type, parameter types)` for every function the header declares.
fn header_functions() -> BTreeMap<String, (String, Vec<String>)> {
    let text = strip_comments(&header());
    let mut out = BTreeMap::new();
    for decl in text.split(';') {
        // Drop preprocessor lines and the C++ linkage block's braces.
        let lines: Vec<&str> = decl
            .lines()
            .map(str::trim)
            .filter(|l| !l.starts_with('#') && *l != "extern \"C\" {" && *l != "}")
            .collect();
        let decl = tidy(&lines.join(" "));
        if decl.starts_with("typedef") || decl.contains('{') || decl.contains('}') {
            continue;
        }
        // The name is the identifier right before the first `(`.
        let Some(open) = decl.find('(') else { continue };
        let name_at = decl[..open]
            .rfind(|c: char| !(c.is_alphanumeric() || c == '_'))
            .map_or(0, |i| i + 1);
        let name = decl[name_at..open].to_owned();
        if !name.starts_with("hrpc_") {
            continue;
        }
        let ret = tidy(&decl[..name_at]);
        let params = split_params(&decl[open + 1..decl.rfind(')').unwrap()])
            .iter()
            .map(|p| c_param(p))
            .filter(|p| p != "void")
            .collect();
        out.insert(name, (ret, params));
    }
    out
}

/// A Rust parameter or return type as the C type the header must use for it.
fn rust_to_c(t: &str) -> String {
    let t = t.split_whitespace().collect::<Vec<_>>().join(" ");
    let base = |b: &str| -> String {
        match b {
            "c_int" => "int".into(),
            "c_uint" => "unsigned int".into(),
            "c_char" => "char".into(),
            "c_void" => "void".into(),
            "u16" => "uint16_t".into(),
            "u32" => "uint32_t".into(),
            "u64" => "uint64_t".into(),
            "usize" => "size_t".into(),
            "HrpcNode" => "hrpc_node".into(),
            "HrpcMessageFn" => "hrpc_message_fn".into(),
            "HrpcResolveFn" => "hrpc_resolve_fn".into(),
            "GetAddrFn" => "struct sockaddr_in (*)(int)".into(),
            "OnMessageFn" => "void (*)(int,void*,unsigned int)".into(),
            other => other.into(),
        }
    };
    if let Some(rest) = t.strip_prefix("*const ") {
        let inner = rust_to_c(rest);
        return if inner.ends_with('*') {
            format!("{inner}*")
        } else {
            format!("const {inner}*")
        };
    }
    if let Some(rest) = t.strip_prefix("*mut ") {
        return format!("{}*", rust_to_c(rest));
    }
    base(&t)
}

/// `name → (return type, parameter types)` for every `extern "C" fn` in the crate's sources,
/// in C spelling.
fn rust_functions() -> BTreeMap<String, (String, Vec<String>)> {
    let mut out = BTreeMap::new();
    for entry in std::fs::read_dir(crate_dir().join("src")).unwrap() {
        let text = std::fs::read_to_string(entry.unwrap().path()).unwrap();
        let mut rest = text.as_str();
        while let Some(i) = rest.find("extern \"C\" fn ") {
            rest = &rest[i + "extern \"C\" fn ".len()..];
            let open = rest.find('(').unwrap();
            let name = rest[..open].trim().to_owned();
            let body = rest.find('{').unwrap();
            let sig = &rest[open..body];
            let close = sig.rfind(')').unwrap();
            let params = split_params(&sig[1..close])
                .iter()
                .map(|p| rust_to_c(p.split_once(':').unwrap().1.trim()))
                .collect();
            let ret = sig[close + 1..]
                .trim()
                .strip_prefix("->")
                .map_or("void".to_owned(), |r| rust_to_c(r.trim()));
            out.insert(name, (ret, params));
        }
    }
    out
}

#[test]
fn header_declares_what_the_library_exports() {
    let c = header_functions();
    let rust = rust_functions();
    assert!(rust.len() >= 20, "parsed only {rust:?}");
    assert_eq!(
        c.keys().collect::<Vec<_>>(),
        rust.keys().collect::<Vec<_>>(),
        "function names differ"
    );
    for (name, sig) in &rust {
        assert_eq!(&c[name], sig, "signature of {name}: header vs Rust");
    }
    // The original library's six, verbatim.
    let text = header();
    for decl in [
        "int hrpc_init(const char* dbpath, int nid, int bind_port, struct sockaddr_in (*get_addr)(int nid));",
        "int hrpc_touch_connect(int nid);",
        "int hrpc_is_connected(int nid);",
        "void* hrpc_send(int nid, int size);",
        "int hrpc_once(void (*on_message)(int nid, void* message, unsigned int size));",
        "int hrpc_once_timeout(void);",
    ] {
        assert!(text.contains(decl), "missing: {decl}");
    }
}

/// `#define NAME value` lines of the header.
fn header_constants() -> BTreeMap<String, i64> {
    strip_comments(&header())
        .lines()
        .filter_map(|l| {
            let mut it = l.split_whitespace();
            (it.next()? == "#define").then_some(())?;
            let name = it.next()?;
            let value = it.collect::<String>().replace(['(', ')'], "");
            Some((name.to_owned(), value.parse().ok()?))
        })
        .collect()
}

#[test]
fn header_constants_match() {
    let mut rust: BTreeMap<String, i64> = [
        ("HRPC_OK", HRPC_OK),
        ("HRPC_E_INVALID_ARGUMENT", HRPC_E_INVALID_ARGUMENT),
        ("HRPC_E_BACKPRESSURE", HRPC_E_BACKPRESSURE),
        ("HRPC_E_TOO_LARGE", HRPC_E_TOO_LARGE),
        ("HRPC_E_INVALID_PEER", HRPC_E_INVALID_PEER),
        ("HRPC_E_STORE_LOCKED", HRPC_E_STORE_LOCKED),
        ("HRPC_E_ADDR_IN_USE", HRPC_E_ADDR_IN_USE),
        ("HRPC_E_CONFIG", HRPC_E_CONFIG),
        ("HRPC_E_STORE", HRPC_E_STORE),
        ("HRPC_E_IO", HRPC_E_IO),
        ("HRPC_E_CLOSED", HRPC_E_CLOSED),
        ("HRPC_E_NOT_INITIALIZED", HRPC_E_NOT_INITIALIZED),
        ("HRPC_E_BUSY", HRPC_E_BUSY),
        ("HRPC_E_INTERNAL", HRPC_E_INTERNAL),
    ]
    .into_iter()
    .map(|(n, v)| (n.to_owned(), i64::from(v)))
    .collect();
    // Every error code has a description, and the table above lists every code.
    assert_eq!(ERROR_CODES.len(), rust.len());
    for (code, _) in ERROR_CODES {
        assert!(rust.values().any(|v| *v == i64::from(*code)));
    }
    rust.insert(
        "HRPC_DURABILITY_PROCESS".into(),
        HRPC_DURABILITY_PROCESS.into(),
    );
    rust.insert("HRPC_DURABILITY_SYNC".into(), HRPC_DURABILITY_SYNC.into());
    let c = header_constants();
    let c: BTreeMap<String, i64> = c.into_iter().filter(|(n, _)| n != "HRPC_H").collect();
    assert_eq!(c, rust);
}

/// Field names of `typedef struct NAME { ... } NAME;` in the header, in order.
fn header_fields(name: &str) -> Vec<String> {
    let text = strip_comments(&header());
    let start = text.find(&format!("typedef struct {name} {{")).unwrap();
    let end = start + text[start..].find('}').unwrap();
    let body = &text[text[start..].find('{').unwrap() + start + 1..end];
    body.split(';')
        .map(str::trim)
        .filter(|f| !f.is_empty())
        .map(|f| {
            let f = tidy(f);
            if let Some(i) = f.find("(*") {
                f[i + 2..f[i..].find(')').unwrap() + i].trim().to_owned()
            } else {
                f.rsplit([' ', '*']).next().unwrap().to_owned()
            }
        })
        .collect()
}

#[test]
fn header_structs_have_the_rust_layout() {
    let config: Vec<(&str, usize)> = vec![
        ("store_path", offset_of!(hrpc_config, store_path)),
        ("node_id", offset_of!(hrpc_config, node_id)),
        ("bind_port", offset_of!(hrpc_config, bind_port)),
        ("reserved", offset_of!(hrpc_config, reserved)),
        ("bind_ip", offset_of!(hrpc_config, bind_ip)),
        ("resolve", offset_of!(hrpc_config, resolve)),
        ("resolve_ctx", offset_of!(hrpc_config, resolve_ctx)),
        ("mtu", offset_of!(hrpc_config, mtu)),
        ("durability", offset_of!(hrpc_config, durability)),
        ("store_capacity", offset_of!(hrpc_config, store_capacity)),
        (
            "max_unacked_per_peer",
            offset_of!(hrpc_config, max_unacked_per_peer),
        ),
        ("send_block_ms", offset_of!(hrpc_config, send_block_ms)),
        ("reserved2", offset_of!(hrpc_config, reserved2)),
    ];
    let stats: Vec<(&str, usize)> = vec![
        ("messages_sent", offset_of!(hrpc_stats, messages_sent)),
        (
            "messages_retransmitted",
            offset_of!(hrpc_stats, messages_retransmitted),
        ),
        ("messages_acked", offset_of!(hrpc_stats, messages_acked)),
        (
            "messages_received",
            offset_of!(hrpc_stats, messages_received),
        ),
        (
            "messages_delivered",
            offset_of!(hrpc_stats, messages_delivered),
        ),
        ("messages_lost", offset_of!(hrpc_stats, messages_lost)),
        ("datagrams_sent", offset_of!(hrpc_stats, datagrams_sent)),
        (
            "datagrams_received",
            offset_of!(hrpc_stats, datagrams_received),
        ),
        ("bytes_sent", offset_of!(hrpc_stats, bytes_sent)),
        ("bytes_received", offset_of!(hrpc_stats, bytes_received)),
        ("polls", offset_of!(hrpc_stats, polls)),
        ("unacked", offset_of!(hrpc_stats, unacked)),
    ];
    let mut program = String::from(
        "#include <stddef.h>\n#include <stdio.h>\n#include \"hrpc.h\"\nint main(void) {\n",
    );
    let mut expected = String::new();
    for (name, fields, size) in [
        ("hrpc_config", &config, size_of::<hrpc_config>()),
        ("hrpc_stats", &stats, size_of::<hrpc_stats>()),
    ] {
        let names: Vec<String> = fields.iter().map(|(n, _)| (*n).to_owned()).collect();
        assert_eq!(
            header_fields(name),
            names,
            "fields of {name}: header vs Rust"
        );
        program.push_str(&format!("printf(\"{name} %zu\\n\", sizeof({name}));\n"));
        expected.push_str(&format!("{name} {size}\n"));
        for (field, off) in fields {
            program.push_str(&format!(
                "printf(\"{name}.{field} %zu\\n\", offsetof({name}, {field}));\n"
            ));
            expected.push_str(&format!("{name}.{field} {off}\n"));
        }
    }
    program.push_str("return 0;\n}\n");
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("layout.c");
    std::fs::write(&src, program).unwrap();
    let exe = dir.path().join("layout");
    compile(
        &[src],
        &exe,
        false,
        &["-std=c99", "-Wall", "-Wextra", "-Werror"],
    );
    let out = Command::new(&exe).output().unwrap();
    assert!(out.status.success());
    assert_eq!(String::from_utf8_lossy(&out.stdout), expected);
}

/// The header alone compiles with every warning as an error, as C99, C11 and C++.
#[test]
fn header_compiles_cleanly_as_c_and_cpp() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("only_header.c");
    std::fs::write(
        &src,
        "#include \"hrpc.h\"\nint main(void) { return hrpc_last_error(); }\n",
    )
    .unwrap();
    let cpp = dir.path().join("only_header.cpp");
    std::fs::write(
        &cpp,
        "#include \"hrpc.h\"\nint main() { return hrpc_last_error(); }\n",
    )
    .unwrap();
    let warn = [
        "-Wall",
        "-Wextra",
        "-Werror",
        "-pedantic",
        "-Wstrict-prototypes",
    ];
    for (compiler, file, std) in [
        ("gcc", &src, "-std=c99"),
        ("gcc", &src, "-std=c11"),
        ("g++", &cpp, "-std=c++11"),
        ("g++", &cpp, "-std=c++17"),
    ] {
        let mut args: Vec<&str> = vec![std, "-fsyntax-only"];
        args.extend(
            warn.iter()
                .filter(|w| compiler == "gcc" || **w != "-Wstrict-prototypes"),
        );
        let out = Command::new(compiler)
            .args(&args)
            .arg("-I")
            .arg(crate_dir().join("include"))
            .arg(file)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{compiler} {std}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// The build script's pkg-config and CMake files point at this crate's header and at the
/// directory the libraries are built into; with the shared library there, a program links
/// against it through pkg-config alone.
#[test]
fn pkg_config_and_cmake_files_point_at_the_build() {
    let exe = std::env::current_exe().unwrap();
    let profile = exe.parent().unwrap().parent().unwrap();
    let pc = std::fs::read_to_string(profile.join("hrpc.pc")).unwrap();
    let include = crate_dir().join("include");
    assert!(
        pc.contains(&format!("includedir={}\n", include.display())),
        "{pc}"
    );
    assert!(
        pc.contains(&format!("libdir={}\n", profile.display())),
        "{pc}"
    );
    let cmake = std::fs::read_to_string(profile.join("hrpcConfig.cmake")).unwrap();
    assert!(
        cmake.contains(&format!("\"{}\"", include.display())),
        "{cmake}"
    );
    assert!(cmake.contains("libhrpc_capi.a") && cmake.contains("hrpc::hrpc"));

    let flags = Command::new("pkg-config")
        .args(["--cflags", "--libs", "hrpc"])
        .env("PKG_CONFIG_PATH", profile)
        .output();
    let Ok(flags) = flags else {
        eprintln!("no pkg-config: only the file's contents were checked");
        return;
    };
    assert!(
        flags.status.success(),
        "{}",
        String::from_utf8_lossy(&flags.stderr)
    );
    let flags = String::from_utf8_lossy(&flags.stdout).into_owned();
    assert!(
        flags.contains(&format!("-I{}", include.display())),
        "{flags}"
    );
    if !profile.join("libhrpc_capi.so").exists() {
        eprintln!(
            "no libhrpc_capi.so in {} (not uplifted by this build)",
            profile.display()
        );
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("dynamic.c");
    std::fs::write(
        &src,
        "#include \"hrpc.h\"\n#include <stdio.h>\nint main(void) { puts(hrpc_strerror(HRPC_E_BUSY)); return 0; }\n",
    )
    .unwrap();
    let out = dir.path().join("dynamic");
    let status = Command::new("gcc")
        .arg(&src)
        .args(flags.split_whitespace())
        .arg("-o")
        .arg(&out)
        .status()
        .unwrap();
    assert!(status.success());
    let run = Command::new(&out).output().unwrap();
    assert_eq!(
        String::from_utf8_lossy(&run.stdout),
        "not allowed inside this node's message callback\n"
    );
}
