//! The agent images: one static `mitossh-agent` executable per architecture, which the
//! master carries beside its own executable and uploads to a host that has no copy yet.
//!
//! - Which images a master has: every `mitossh-agent*` ELF executable in its own
//!   directory (or in `$MITOSSH_AGENT_DIR`), its architecture read from the ELF header.
//! - How a copy is named on a host: by architecture and content hash
//!   ([`AgentImage::file_name`]), so a host keeps one copy per build and architecture, and
//!   a master never starts an agent of another build.
//! - How an image travels: xz-compressed when the build shipped an xz copy beside it and
//!   the host's `xz` decodes its filters ([`Arch::xz_probe`]); else gzip-compressed when
//!   the host has `gzip` (once per master: at its start for an image without an xz copy,
//!   else when a host first asks); else as it is. The xz copy is made by `scripts/build-agents` (the xz CLI, BCJ filter where it
//!   helps), not by the master: a good xz costs half a second of CPU.
//! - Where an agent runs from: its cached copy, when it was started from one (a file of
//!   ours in a private 0700 directory, renamed into place whole and never written again):
//!   the kernel maps that file's pages shared, so a host's agents of one build hold one
//!   copy of the code between them. Otherwise it moves itself into an anonymous memory
//!   file (`memfd_create` + `fexecve`) when the kernel allows, so it depends on no file.
//!   Its children under sudo, su and doas, which cannot open a private file of ours,
//!   start from a memory file ([`image_for_others`]).

use std::ffi::CString;
use std::io::{self, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use bytes::Bytes;
use sha2::{Digest, Sha256};

/// Names the directory that holds the agent images, instead of the master's own.
pub(crate) const AGENT_DIR_ENV: &str = "MITOSSH_AGENT_DIR";

/// Agent images are the files whose names start with this.
const FILE_PREFIX: &str = "mitossh-agent";

/// Images up to this size (a release build is about 1 MiB) are compressed as soon as the
/// master starts, so that a first connect never waits for it. Larger ones (debug builds)
/// only when a host asks for one.
const COMPRESS_AHEAD_LIMIT: usize = 8 << 20;

/// Set in the environment of an agent that re-executed itself from memory.
const IN_MEMORY_ENV: &str = "MITOSSH_AGENT_IN_MEMORY";

/// [`Arch::xz_probe`] for the x86 BCJ filter, then LZMA2.
const XZ_PROBE_X86: &[u8] = &[
    0xfd, 0x37, 0x7a, 0x58, 0x5a, 0x00, 0x00, 0x01, 0x69, 0x22, 0xde, 0x36, 0x02, 0x01, 0x04, 0x00,
    0x21, 0x01, 0x12, 0x00, 0x09, 0x43, 0x59, 0x7b, 0x01, 0x00, 0x06, 0x6d, 0x69, 0x74, 0x6f, 0x73,
    0x73, 0x68, 0x00, 0x00, 0xc5, 0x18, 0x2d, 0x26, 0x00, 0x01, 0x1b, 0x07, 0x12, 0xeb, 0xd4, 0x17,
    0x90, 0x42, 0x99, 0x0d, 0x01, 0x00, 0x00, 0x00, 0x00, 0x01, 0x59, 0x5a,
];

/// [`Arch::xz_probe`] for LZMA2 alone.
const XZ_PROBE_LZMA2: &[u8] = &[
    0xfd, 0x37, 0x7a, 0x58, 0x5a, 0x00, 0x00, 0x01, 0x69, 0x22, 0xde, 0x36, 0x02, 0x00, 0x21, 0x01,
    0x12, 0x00, 0x00, 0x00, 0x23, 0xb8, 0x87, 0x2c, 0x01, 0x00, 0x06, 0x6d, 0x69, 0x74, 0x6f, 0x73,
    0x73, 0x68, 0x00, 0x00, 0xc5, 0x18, 0x2d, 0x26, 0x00, 0x01, 0x1b, 0x07, 0x12, 0xeb, 0xd4, 0x17,
    0x90, 0x42, 0x99, 0x0d, 0x01, 0x00, 0x00, 0x00, 0x00, 0x01, 0x59, 0x5a,
];

/// The filter flags (each filter's id and properties, as encoded) in the first block
/// header of an xz stream. The block header follows the 12-byte stream header: its size,
/// flags with the filter count, the sizes the flags announce, then per filter a varint id,
/// a varint properties size and the properties. `None` if it is not one.
fn xz_filters(stream: &[u8]) -> Option<&[u8]> {
    fn varint(b: &[u8], at: &mut usize) -> Option<u64> {
        let mut v = 0u64;
        for shift in (0..63).step_by(7) {
            let byte = *b.get(*at)?;
            *at += 1;
            v |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Some(v);
            }
        }
        None
    }
    if stream.get(..6)? != b"\xfd7zXZ\0" {
        return None;
    }
    let flags = *stream.get(13)?;
    let mut at = 14;
    if flags & 0x40 != 0 {
        varint(stream, &mut at)?; // compressed size
    }
    if flags & 0x80 != 0 {
        varint(stream, &mut at)?; // uncompressed size
    }
    let start = at;
    for _ in 0..=(flags & 3) {
        varint(stream, &mut at)?;
        let props = usize::try_from(varint(stream, &mut at)?).ok()?;
        at = at.checked_add(props)?;
    }
    stream.get(start..at)
}

/// A processor architecture the agent is built for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Arch {
    X86_64,
    Aarch64,
    Armv7,
}

impl Arch {
    pub const ALL: [Arch; 3] = [Arch::X86_64, Arch::Aarch64, Arch::Armv7];

    /// The name in markers, cache file names and messages.
    pub fn name(self) -> &'static str {
        match self {
            Arch::X86_64 => "x86_64",
            Arch::Aarch64 => "aarch64",
            Arch::Armv7 => "armv7",
        }
    }

    pub fn from_name(name: &str) -> Option<Arch> {
        Arch::ALL.into_iter().find(|a| a.name() == name)
    }

    /// What `uname -m` says on a host that runs this architecture's executables, as a
    /// shell `case` pattern. A 32-bit ARM userland on a 64-bit kernel says `armv8l`.
    pub fn uname_pattern(self) -> &'static str {
        match self {
            Arch::X86_64 => "x86_64|amd64",
            Arch::Aarch64 => "aarch64|arm64",
            Arch::Armv7 => "armv7*|armv8l",
        }
    }

    /// A 60-byte xz stream (it decodes to `mitossh`) made with the filters and dictionary
    /// size `scripts/build-agents` compresses this architecture's image with: stage 1 uses
    /// the xz copy only where the host's `xz` decodes this (a host whose xz lacks a filter,
    /// or may not take a 2 MiB dictionary, gets gzip). x86 code gets the x86 BCJ filter
    /// (every xz-utils has it, busybox's xz does not); the others plain LZMA2, since
    /// xz-utils before 5.4 lacks the ARM64 filter.
    /// Made with `printf mitossh | xz --check=crc32 [--x86] --lzma2=preset=0,dict=2MiB`.
    pub fn xz_probe(self) -> &'static [u8] {
        match self {
            Arch::X86_64 => XZ_PROBE_X86,
            Arch::Aarch64 | Arch::Armv7 => XZ_PROBE_LZMA2,
        }
    }

    /// The architecture this program was built for.
    pub fn native() -> Arch {
        if cfg!(target_arch = "aarch64") {
            Arch::Aarch64
        } else if cfg!(target_arch = "arm") {
            Arch::Armv7
        } else {
            Arch::X86_64
        }
    }

    /// The architecture a little-endian ELF executable is for, from its first 20 bytes.
    pub fn of_elf(header: &[u8]) -> Option<Arch> {
        if header.len() < 20 || &header[..4] != b"\x7fELF" || header[5] != 1 {
            return None;
        }
        let machine = u16::from_le_bytes([header[18], header[19]]);
        match (header[4], machine) {
            (2, 62) => Some(Arch::X86_64),
            (2, 183) => Some(Arch::Aarch64),
            (1, 40) => Some(Arch::Armv7),
            _ => None,
        }
    }
}

/// One agent executable, its content hash, and its compressed form once made.
#[derive(Debug)]
pub struct AgentImage {
    pub arch: Arch,
    pub bytes: Bytes,
    /// Hex SHA-256 prefix (128 bits) of `bytes`.
    pub hash: String,
    /// Where it was read from, for messages.
    pub origin: PathBuf,
    /// The xz copy shipped beside it ([`xz_name`]), if any.
    pub xz: Option<Bytes>,
    gzip: OnceLock<Bytes>,
}

impl AgentImage {
    pub fn new(arch: Arch, bytes: Bytes, origin: PathBuf) -> AgentImage {
        AgentImage {
            arch,
            hash: content_hash(&bytes),
            bytes,
            origin,
            xz: None,
            gzip: OnceLock::new(),
        }
    }

    /// The running agent's own image, mapped rather than copied: an agent that starts
    /// another over ssh (from a hop) sends what it runs. The mapping is of a running
    /// executable, which nobody can write to (ETXTBSY), so it cannot change underneath.
    pub fn own() -> io::Result<AgentImage> {
        let file = open_own()?;
        let map = crate::sys::memfd::map_running_executable(&file)?;
        let arch = Arch::of_elf(&map).ok_or_else(|| io::Error::other("not an ELF executable"))?;
        Ok(AgentImage::new(
            arch,
            Bytes::from_owner(map),
            PathBuf::from("/proc/self/exe"),
        ))
    }

    /// The name of the cached copy on a host.
    pub fn file_name(&self) -> String {
        cache_name(self.arch, &self.hash)
    }

    /// The image gzip-compressed, made on first use (blocking: call it on a thread that
    /// may block) and kept.
    pub fn gzip(&self) -> Bytes {
        self.gzip
            .get_or_init(|| {
                let mut enc = flate2::write::GzEncoder::new(
                    Vec::with_capacity(self.bytes.len() / 2),
                    flate2::Compression::default(),
                );
                // Writing to a Vec cannot fail.
                let _ = enc.write_all(&self.bytes);
                Bytes::from(enc.finish().unwrap_or_default())
            })
            .clone()
    }
}

/// The cached copy's file name for an image of `arch` with content hash `hash`.
pub fn cache_name(arch: Arch, hash: &str) -> String {
    format!("{FILE_PREFIX}-{}-{hash}", arch.name())
}

/// The name of an image's xz copy beside it: its cache name, so that a copy left from
/// another build is never taken for this one's.
fn xz_name(arch: Arch, hash: &str) -> String {
    format!("{}.xz", cache_name(arch, hash))
}

/// Hex SHA-256 prefix (128 bits).
pub fn content_hash(bytes: &[u8]) -> String {
    let digest = Sha256::digest(bytes);
    super::to_hex(&digest[..16])
}

/// What a bootstrap may send: images by architecture, and how to compress them.
#[derive(Debug, Clone)]
pub(crate) struct Offer {
    pub images: Vec<Arc<AgentImage>>,
    /// The master's: [`AgentImage::gzip`]. An agent starting another over ssh sends its
    /// own image as it is: reached only through this pointer, the compressor stays out
    /// of the agent's image.
    pub gzip: Option<fn(&AgentImage) -> Bytes>,
}

impl Offer {
    pub(crate) fn image(&self, arch: Arch) -> Option<&Arc<AgentImage>> {
        self.images.iter().find(|i| i.arch == arch)
    }
}

/// The images a master carries, found once at start.
#[derive(Debug)]
pub(crate) struct AgentImages {
    pub offer: Offer,
    /// Where they were found.
    pub dir: PathBuf,
}

impl AgentImages {
    /// Reads every agent image in `$MITOSSH_AGENT_DIR`, or else beside this executable.
    /// Errors (one line, saying what to do) when there is none.
    pub(crate) fn find() -> io::Result<AgentImages> {
        let dir = match std::env::var_os(AGENT_DIR_ENV) {
            Some(dir) => PathBuf::from(dir),
            None => std::fs::read_link("/proc/self/exe")?
                .parent()
                .map(Path::to_path_buf)
                .unwrap_or_default(),
        };
        let images = read_images(&dir)?;
        if images.is_empty() {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!(
                    "no agent image (mitossh-agent, built with mitossh) in {}; keep the agents \
                     beside mitossh or name their directory in ${AGENT_DIR_ENV}",
                    dir.display()
                ),
            ));
        }
        Ok(AgentImages {
            offer: Offer {
                images,
                gzip: Some(AgentImage::gzip),
            },
            dir,
        })
    }

    /// Gzips the images of release size that have no xz copy on a thread of its own, so
    /// that the first host that needs one does not wait. With an xz copy, gzip is for the
    /// odd host without a working xz and is made when one asks: made at every start, it
    /// would take a core from a master's first connect.
    pub(crate) fn compress_ahead(&self) {
        let small: Vec<Arc<AgentImage>> = (self.offer.images.iter())
            .filter(|i| i.xz.is_none() && i.bytes.len() <= COMPRESS_AHEAD_LIMIT)
            .cloned()
            .collect();
        let _ = std::thread::Builder::new()
            .name("compress-agents".into())
            .spawn(move || small.iter().for_each(|i| drop(i.gzip())));
    }

    /// "x86_64, aarch64": for messages and the log.
    pub(crate) fn arches(&self) -> String {
        let names: Vec<&str> = self.offer.images.iter().map(|i| i.arch.name()).collect();
        names.join(", ")
    }
}

/// The agent images in `dir`, one per architecture (the first by name wins).
fn read_images(dir: &Path) -> io::Result<Vec<Arc<AgentImage>>> {
    let entries = std::fs::read_dir(dir)
        .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", dir.display())))?;
    let mut names: Vec<PathBuf> = entries
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n.as_bytes().starts_with(FILE_PREFIX.as_bytes()))
        })
        .collect();
    names.sort();
    let mut images: Vec<Arc<AgentImage>> = Vec::new();
    for path in names {
        let Some(arch) = elf_arch(&path) else {
            continue; // cargo's `.d` files, compressed copies, …
        };
        if let Some(first) = images.iter().find(|i| i.arch == arch) {
            tracing::warn!(
                "ignoring {}: {} is the {} agent",
                path.display(),
                first.origin.display(),
                arch.name()
            );
            continue;
        }
        // Read, not mapped: a file beside the master may be replaced in place (`cp`)
        // while the master runs, which would break a mapping.
        let bytes = std::fs::read(&path)
            .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))?;
        let mut image = AgentImage::new(arch, bytes.into(), path);
        image.xz = shipped_xz(dir, &image);
        images.push(Arc::new(image));
    }
    Ok(images)
}

/// The xz copy of `image` in `dir`, if there is one made with the filters stage 1 probes
/// the host's `xz` for. (Its content is not checked here: that needs a decoder, and the
/// copy is as trusted as the image beside it; stage 1 checks its size, xz its CRC.)
fn shipped_xz(dir: &Path, image: &AgentImage) -> Option<Bytes> {
    let path = dir.join(xz_name(image.arch, &image.hash));
    let xz = std::fs::read(&path).ok()?;
    let why = if xz_filters(&xz) != xz_filters(image.arch.xz_probe()) {
        "not made with the filters stage 1 probes for"
    } else if xz.len() >= image.bytes.len() {
        "no smaller than the image"
    } else {
        return Some(xz.into());
    };
    tracing::warn!("ignoring {}: {why}", path.display());
    None
}

/// The architecture of the executable at `path`, if it is a regular ELF file.
fn elf_arch(path: &Path) -> Option<Arch> {
    use std::io::Read;
    if !std::fs::metadata(path).ok()?.is_file() {
        return None;
    }
    let mut header = [0u8; 20];
    std::fs::File::open(path)
        .ok()?
        .read_exact(&mut header)
        .ok()?;
    Arch::of_elf(&header)
}

/// The memory file this agent runs from, once [`run_from_memory`] moved it there.
static IN_MEMORY: OnceLock<OwnedFd> = OnceLock::new();

/// This process's own executable, opened afresh (closed when dropped): the memory file
/// it runs from; else the file `/proc/self/exe` names, if it is there; else
/// `/proc/self/exe` itself. Under qemu-user, opening `/proc/self/exe` yields a descriptor
/// qemu has already closed (which may by then be another file's), and its link can name
/// a descriptor, not a file: only a descriptor of our own says surely what we run.
pub(crate) fn open_own() -> io::Result<std::fs::File> {
    let reopen = |fd: &OwnedFd| std::fs::File::open(format!("/proc/self/fd/{}", fd.as_raw_fd()));
    if let Some(fd) = IN_MEMORY.get() {
        return reopen(fd);
    }
    if let Ok(path) = std::fs::read_link("/proc/self/exe")
        && path.is_absolute()
        && let Ok(file) = std::fs::File::open(&path)
        && is_native_executable(&file)
    {
        return Ok(file);
    }
    std::fs::File::open("/proc/self/exe")
}

/// Whether `file` is an ELF executable of the architecture this program was built for.
fn is_native_executable(file: &std::fs::File) -> bool {
    use std::os::unix::fs::FileExt;
    let mut header = [0u8; 20];
    file.read_exact_at(&mut header, 0).is_ok() && Arch::of_elf(&header) == Some(Arch::native())
}

/// In a freshly started agent: re-execute from a memfd unless already running from one or
/// from a cached copy (see the module's notes). Returns only when staying as is.
///
/// The memfd stays open across the exec (its number in [`IN_MEMORY_ENV`]), so that the
/// new image holds a descriptor of what it runs; it is made close-on-exec there at once.
pub(crate) fn run_from_memory() {
    if runs_from_private_cache() {
        return;
    }
    if let Some(fd) = std::env::var(IN_MEMORY_ENV)
        .ok()
        .and_then(|v| v.parse().ok())
        && let Some(memory) = adopt_memory(fd)
    {
        let _ = IN_MEMORY.set(memory);
        return;
    }
    if let Ok(exe) = std::fs::read_link("/proc/self/exe")
        && exe.as_os_str().as_bytes().starts_with(b"/memfd:")
    {
        return;
    }
    if let Err(e) = reexec_from_memfd() {
        tracing::debug!("staying on disk: cannot run from memory: {e}");
    }
}

/// The descriptor the previous image left us, if it is what it should be: an executable
/// of ours. Close-on-exec from here on, so that nothing this agent starts inherits it.
fn adopt_memory(fd: i32) -> Option<OwnedFd> {
    let file = std::fs::File::from(crate::sys::memfd::adopt_inherited(fd)?);
    if !is_native_executable(&file) {
        // Not ours after all (a stray variable): leave the descriptor as it was.
        std::mem::forget(file);
        return None;
    }
    Some(OwnedFd::from(file))
}

/// Whether this process runs a cached agent: a file named like one, ours and written by
/// nobody else, in a directory of ours that only we may enter (as stage 1 makes them).
/// Its pages are shared with every other agent that runs it; a memory file would be a
/// private copy in each.
fn runs_from_private_cache() -> bool {
    use std::os::unix::fs::MetadataExt;
    let Ok(exe) = std::fs::read_link("/proc/self/exe") else {
        return false;
    };
    let me = nix::unistd::geteuid().as_raw();
    let cached_name = exe.file_name().is_some_and(|n| {
        n.as_bytes()
            .starts_with(format!("{FILE_PREFIX}-").as_bytes())
    });
    let private_file = std::fs::symlink_metadata(&exe)
        .is_ok_and(|m| m.is_file() && m.uid() == me && m.mode() & 0o022 == 0);
    let private_dir = exe.parent().is_some_and(|d| {
        std::fs::symlink_metadata(d)
            .is_ok_and(|m| m.is_dir() && m.uid() == me && m.mode() & 0o777 == 0o700)
    });
    cached_name && private_file && private_dir
}

/// An executable another user (sudo's, su's or doas's target) can start this agent from:
/// the memory file it runs from; else a new memory file holding a copy of its image
/// (the cached file is private to this user), dropped once the child has it; else, if
/// the kernel makes no memory files, its own file as [`open_own`] finds it.
pub(crate) fn image_for_others() -> io::Result<std::fs::File> {
    if IN_MEMORY.get().is_some() {
        return open_own();
    }
    // Close-on-exec as any file we open: the child gets it as a standard stream.
    match crate::sys::memfd::executable_cloexec("mitossh-agent") {
        Ok(fd) => {
            let mut memory = std::fs::File::from(fd);
            io::copy(&mut open_own()?, &mut memory)?;
            Ok(memory)
        }
        Err(e) => {
            tracing::debug!("cannot make a memory file for a child: {e}");
            open_own()
        }
    }
}

fn reexec_from_memfd() -> io::Result<()> {
    let mut memory = std::fs::File::from(crate::sys::memfd::executable("mitossh-agent")?);
    // File to file: the kernel copies (copy_file_range or sendfile), no buffer of ours.
    io::copy(&mut open_own()?, &mut memory)?;

    let argv: Vec<CString> = std::env::args_os()
        .map(|a| CString::new(a.as_bytes().to_vec()))
        .collect::<Result<_, _>>()?;
    let mut envp: Vec<CString> = std::env::vars_os()
        .filter(|(k, _)| k != IN_MEMORY_ENV)
        .map(|(k, v)| {
            let mut kv = k;
            kv.push("=");
            kv.push(v);
            CString::new(kv.as_bytes().to_vec())
        })
        .collect::<Result<_, _>>()?;
    envp.push(CString::new(format!(
        "{IN_MEMORY_ENV}={}",
        memory.as_raw_fd()
    ))?);
    let Err(e) = nix::unistd::fexecve(&memory, &argv, &envp);
    Err(e.into())
}

/// Removes mitossh's private variables from an environment about to be given to a child.
pub(crate) fn is_private_env(key: &[u8]) -> bool {
    key == IN_MEMORY_ENV.as_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn image(bytes: &'static [u8]) -> AgentImage {
        AgentImage::new(Arch::X86_64, Bytes::from_static(bytes), PathBuf::new())
    }

    #[test]
    fn hash_depends_on_content() {
        let (a, b) = (image(b"one"), image(b"two"));
        assert_ne!(a.hash, b.hash);
        assert_eq!(a.hash.len(), 32);
        assert_eq!(a.hash, image(b"one").hash);
    }

    #[test]
    fn the_cache_name_says_architecture_and_hash() {
        let a = image(b"one");
        assert_eq!(a.file_name(), format!("mitossh-agent-x86_64-{}", a.hash));
    }

    #[test]
    fn architectures_from_elf_headers() {
        let header = |class: u8, machine: u16| {
            let mut h = vec![0u8; 64];
            h[..4].copy_from_slice(b"\x7fELF");
            h[4] = class;
            h[5] = 1;
            h[18..20].copy_from_slice(&machine.to_le_bytes());
            h
        };
        assert_eq!(Arch::of_elf(&header(2, 62)), Some(Arch::X86_64));
        assert_eq!(Arch::of_elf(&header(2, 183)), Some(Arch::Aarch64));
        assert_eq!(Arch::of_elf(&header(1, 40)), Some(Arch::Armv7));
        assert_eq!(Arch::of_elf(&header(1, 62)), None);
        assert_eq!(Arch::of_elf(&header(2, 243)), None); // riscv
        assert_eq!(Arch::of_elf(b"#!/bin/sh\n"), None);
        let mut big_endian = header(2, 62);
        big_endian[5] = 2;
        assert_eq!(Arch::of_elf(&big_endian), None);
        for a in Arch::ALL {
            assert_eq!(Arch::from_name(a.name()), Some(a));
        }
    }

    #[test]
    fn this_test_program_is_an_image_of_the_native_architecture() {
        let own = AgentImage::own().unwrap();
        assert_eq!(own.arch, Arch::native());
        assert_eq!(
            own.bytes.len() as u64,
            std::fs::metadata("/proc/self/exe").unwrap().len()
        );
    }

    #[test]
    fn gzip_round_trips_and_is_made_once() {
        let data: Vec<u8> = (0..200_000u32)
            .flat_map(|i| (i % 251).to_le_bytes())
            .collect();
        let img = AgentImage::new(Arch::Aarch64, data.clone().into(), PathBuf::new());
        let gz = img.gzip();
        assert!(gz.len() < data.len() / 4, "{} of {}", gz.len(), data.len());
        assert_eq!(
            gz.as_ptr(),
            img.gzip().as_ptr(),
            "compressed once, then kept"
        );
        let mut back = Vec::new();
        flate2::read::GzDecoder::new(&gz[..])
            .read_to_end(&mut back)
            .unwrap();
        assert_eq!(back, data);
    }

    #[test]
    fn filters_read_from_the_block_header() {
        // Ids 0x04 (x86 BCJ, no properties) and 0x21 (LZMA2, one byte: 0x12 = 2 MiB).
        assert_eq!(
            xz_filters(XZ_PROBE_X86),
            Some(&[0x04, 0x00, 0x21, 0x01, 0x12][..])
        );
        assert_eq!(xz_filters(XZ_PROBE_LZMA2), Some(&[0x21, 0x01, 0x12][..]));
        assert_eq!(xz_filters(b"\x1f\x8b gzip"), None);
        assert_eq!(xz_filters(&XZ_PROBE_X86[..15]), None, "cut short");
    }

    /// The xz copy is taken under the image's own hash, made with the probed filters.
    #[test]
    fn an_xz_copy_is_taken_only_if_it_is_this_images_with_the_probed_filters() {
        let own = std::fs::read("/proc/self/exe").unwrap();
        let hash = content_hash(&own);
        let arch = Arch::native();
        let taken = |name: String, content: &[u8]| {
            let dir = tempfile::tempdir().unwrap();
            std::fs::write(dir.path().join("mitossh-agent"), &own).unwrap();
            std::fs::write(dir.path().join(name), content).unwrap();
            read_images(dir.path()).unwrap()[0].xz.is_some()
        };
        assert!(taken(xz_name(arch, &hash), arch.xz_probe()));
        let other = if arch.xz_probe() == XZ_PROBE_X86 {
            XZ_PROBE_LZMA2
        } else {
            XZ_PROBE_X86
        };
        assert!(!taken(xz_name(arch, &hash), other), "other filters");
        assert!(
            !taken(xz_name(arch, &"0".repeat(32)), arch.xz_probe()),
            "another build's"
        );
    }

    #[test]
    fn images_in_a_directory_one_per_architecture() {
        let dir = tempfile::tempdir().unwrap();
        let own = std::fs::read("/proc/self/exe").unwrap();
        std::fs::write(dir.path().join("mitossh-agent"), &own).unwrap();
        std::fs::write(dir.path().join("mitossh-agent-copy"), &own).unwrap();
        std::fs::write(dir.path().join("mitossh-agent.d"), b"deps: file\n").unwrap();
        std::fs::write(dir.path().join("other"), &own).unwrap();
        let images = read_images(dir.path()).unwrap();
        assert_eq!(images.len(), 1);
        assert_eq!(images[0].origin, dir.path().join("mitossh-agent"));
        assert_eq!(images[0].bytes.len(), own.len());
    }
}
