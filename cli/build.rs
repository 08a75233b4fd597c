//! Link settings of the `tributary` binary.
//!
//! On Linux with glibc, relative relocations are packed (DT_RELR, glibc 2.36+, binutils 2.38+):
//! the position-independent binary keeps its ASLR, but the loader no longer reads a 2.5 MB
//! relocation table at every start, which stayed resident in every process.

fn main() {
    let os = std::env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    let env = std::env::var("CARGO_CFG_TARGET_ENV").unwrap_or_default();
    if os == "linux" && env == "gnu" {
        println!("cargo:rustc-link-arg-bins=-Wl,-z,pack-relative-relocs");
    }
    println!("cargo:rerun-if-changed=build.rs");
}
