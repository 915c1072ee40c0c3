//! Test data: pseudo-random files, trees of them, and digests to compare trees by content.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

/// Deterministic pseudo-random bytes (xorshift), fast enough for hundreds of MiB.
pub fn random_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

/// Writes `len` pseudo-random bytes to `path` in chunks.
pub fn random_file(path: &Path, len: usize, seed: u64) {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).unwrap();
    }
    let mut f = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    let chunk = 8 << 20;
    let mut left = len;
    let mut s = seed;
    while left > 0 {
        let n = left.min(chunk);
        f.write_all(&random_bytes(n, s)).unwrap();
        left -= n;
        s = s
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
    }
    f.flush().unwrap();
}

/// A tree with `large` bytes in one big file and `small` little files in nested dirs.
pub fn make_tree(root: &Path, large: usize, small: usize) {
    random_file(&root.join("big.bin"), large, 42);
    for i in 0..small {
        let p = root.join(format!("d{}/e{}/f{i}.txt", i % 7, i % 3));
        random_file(&p, 1 + (i * 977) % 20000, i as u64 + 7);
    }
    std::fs::write(root.join("empty"), b"").unwrap();
}

/// Relative path → SHA-256 of every regular file under `root`.
pub fn tree_digest(root: &Path) -> BTreeMap<PathBuf, String> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let entry = entry.unwrap();
            let path = entry.path();
            let ty = entry.file_type().unwrap();
            if ty.is_dir() {
                stack.push(path);
            } else if ty.is_file() {
                let digest = Sha256::digest(std::fs::read(&path).unwrap());
                out.insert(path.strip_prefix(root).unwrap().to_path_buf(), hex(&digest));
            }
        }
    }
    out
}

/// Relative path, owner uid and SHA-256 of every regular file under `root`.
pub fn owners_and_digests(root: &Path) -> Vec<(PathBuf, u32, String)> {
    use std::os::unix::fs::MetadataExt;
    tree_digest(root)
        .into_iter()
        .map(|(rel, digest)| {
            let uid = std::fs::metadata(root.join(&rel)).unwrap().uid();
            (rel, uid, digest)
        })
        .collect()
}

/// Lowercase hex of `bytes`, as mitossh writes hashes and first frames.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
