//! Names this build: a hash of the sources the agent is made of (the library, the agent's
//! `main`, the manifest and the lock file), so that a master and an
//! agent built from different sources (an agent image for another architecture left from
//! an older build) find out at their handshake. Exposed as `MITOSSH_BUILD`.

use std::path::{Path, PathBuf};

fn main() {
    let root = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("set by cargo"));
    let mut files = Vec::new();
    collect(&root.join("lib"), &mut files);
    println!("cargo:rerun-if-changed=lib");
    for file in ["bins/mitossh-agent.rs", "Cargo.toml", "Cargo.lock"] {
        files.push(root.join(file));
        println!("cargo:rerun-if-changed={file}");
    }
    files.sort();
    // FNV-1a: stable across builds and toolchains, and enough to tell builds apart.
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for file in &files {
        let name = file.strip_prefix(&root).unwrap_or(file);
        let content = std::fs::read(file).unwrap_or_default();
        for byte in name.to_string_lossy().bytes().chain([0]).chain(content) {
            hash ^= u64::from(byte);
            hash = hash.wrapping_mul(0x0100_0000_01b3);
        }
    }
    println!("cargo:rustc-env=MITOSSH_BUILD={hash:016x}");
}

fn collect(dir: &Path, files: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            collect(&path, files);
        } else if path.extension().is_some_and(|e| e == "rs") {
            files.push(path);
        }
    }
}
