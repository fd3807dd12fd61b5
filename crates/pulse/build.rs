//! The dashboard is embedded at build time (`src/dashboard.rs`): rebuild
//! when any of its files changes, is added or removed.

fn main() {
    println!("cargo:rerun-if-changed=../../web/dashboard");
}
