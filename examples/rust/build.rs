//! Links libbatchcore found by pkg-config (set PKG_CONFIG_PATH to the install's
//! lib/pkgconfig for a non-system prefix). The library directory also goes into the
//! binary's rpath, so it runs without LD_LIBRARY_PATH. No crates needed.
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-env-changed=PKG_CONFIG_PATH");
    println!("cargo:rerun-if-changed=build.rs");
    let out = Command::new("pkg-config")
        .args(["--libs-only-L", "batchcore"])
        .output()
        .expect("cannot run pkg-config");
    if !out.status.success() {
        panic!(
            "pkg-config cannot find batchcore (set PKG_CONFIG_PATH to <prefix>/lib/pkgconfig): {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    for flag in String::from_utf8(out.stdout).expect("pkg-config output is not UTF-8").split_whitespace() {
        if let Some(dir) = flag.strip_prefix("-L") {
            println!("cargo:rustc-link-search=native={dir}");
            println!("cargo:rustc-link-arg=-Wl,-rpath,{dir}");
        }
    }
    println!("cargo:rustc-link-lib=dylib=batchcore");
}
