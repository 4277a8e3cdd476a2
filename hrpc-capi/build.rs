//! Writes `hrpc.pc` (pkg-config) and `hrpcConfig.cmake` / `hrpcConfigVersion.cmake` (CMake
//! `find_package(hrpc)`) next to the libraries cargo builds (`target/<profile>/`), pointing at
//! that directory and at this crate's `include/`.

use std::path::{Path, PathBuf};

/// Libraries a Rust static library needs from the C runtime when linked into a C program.
const SYSTEM_LIBS: &[&str] = &["pthread", "dl", "m", "rt"];

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed=include/hrpc.h");
    let Some(out_dir) = std::env::var_os("OUT_DIR").map(PathBuf::from) else {
        println!("cargo:warning=OUT_DIR is not set; pkg-config and CMake files not written");
        return;
    };
    // OUT_DIR is <target>/[<triple>/]<profile>/build/hrpc-capi-<hash>/out.
    let Some(lib_dir) = out_dir.ancestors().nth(3).map(Path::to_path_buf) else {
        println!(
            "cargo:warning=unexpected OUT_DIR layout: {}",
            out_dir.display()
        );
        return;
    };
    let manifest = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").unwrap_or_default());
    let include_dir = manifest.join("include");
    let version = std::env::var("CARGO_PKG_VERSION").unwrap_or_else(|_| "0.0.0".to_owned());
    let lib = lib_dir.display();
    let inc = include_dir.display();
    let private: Vec<String> = SYSTEM_LIBS.iter().map(|l| format!("-l{l}")).collect();

    let pc = format!(
        "# Written by hrpc-capi's build script.\n\
         libdir={lib}\n\
         includedir={inc}\n\
         \n\
         Name: hrpc\n\
         Description: persistent, connectionless messaging over UDP (C ABI of hrpc)\n\
         Version: {version}\n\
         Libs: -L${{libdir}} -Wl,-rpath,${{libdir}} -lhrpc_capi\n\
         Libs.private: {}\n\
         Cflags: -I${{includedir}}\n",
        private.join(" ")
    );
    let cmake = format!(
        "# Written by hrpc-capi's build script. find_package(hrpc) gives the imported targets\n\
         # hrpc::hrpc (shared library) and hrpc::hrpc_static (static library).\n\
         set(HRPC_INCLUDE_DIR \"{inc}\")\n\
         set(HRPC_LIBRARY_DIR \"{lib}\")\n\
         if(NOT TARGET hrpc::hrpc)\n\
         \x20 add_library(hrpc::hrpc SHARED IMPORTED)\n\
         \x20 set_target_properties(hrpc::hrpc PROPERTIES\n\
         \x20   IMPORTED_LOCATION \"${{HRPC_LIBRARY_DIR}}/libhrpc_capi.so\"\n\
         \x20   INTERFACE_INCLUDE_DIRECTORIES \"${{HRPC_INCLUDE_DIR}}\")\n\
         \x20 add_library(hrpc::hrpc_static STATIC IMPORTED)\n\
         \x20 set_target_properties(hrpc::hrpc_static PROPERTIES\n\
         \x20   IMPORTED_LOCATION \"${{HRPC_LIBRARY_DIR}}/libhrpc_capi.a\"\n\
         \x20   INTERFACE_INCLUDE_DIRECTORIES \"${{HRPC_INCLUDE_DIR}}\"\n\
         \x20   INTERFACE_LINK_LIBRARIES \"{}\")\n\
         endif()\n\
         set(hrpc_FOUND TRUE)\n",
        SYSTEM_LIBS.join(";")
    );
    let cmake_version = format!(
        "# Written by hrpc-capi's build script.\n\
         set(PACKAGE_VERSION \"{version}\")\n\
         if(PACKAGE_FIND_VERSION VERSION_GREATER PACKAGE_VERSION)\n\
         \x20 set(PACKAGE_VERSION_COMPATIBLE FALSE)\n\
         else()\n\
         \x20 set(PACKAGE_VERSION_COMPATIBLE TRUE)\n\
         \x20 if(PACKAGE_FIND_VERSION STREQUAL PACKAGE_VERSION)\n\
         \x20   set(PACKAGE_VERSION_EXACT TRUE)\n\
         \x20 endif()\n\
         endif()\n"
    );
    for (name, text) in [
        ("hrpc.pc", pc),
        ("hrpcConfig.cmake", cmake),
        ("hrpcConfigVersion.cmake", cmake_version),
    ] {
        let path = lib_dir.join(name);
        // Rewrite only on change, so tools watching the file see no churn.
        if std::fs::read_to_string(&path).ok().as_deref() == Some(text.as_str()) {
            continue;
        }
        if let Err(e) = std::fs::write(&path, text) {
            println!("cargo:warning=cannot write {}: {e}", path.display());
        }
    }
}
