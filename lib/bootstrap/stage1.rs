//! The first stage: a short `/bin/sh` script that starts a cached agent or receives one.
//!
//! It is handed to the remote login shell (which may be bash, zsh, csh or fish) wrapped as
//! `/bin/sh -c '<script>'`, so the script is one line without single quotes or `!`. It
//! needs only `/bin/sh`, `uname`, `id`, `mkdir`, `chmod`, `printf`, `head`, `wc`, `mv` and
//! `rm`, and uses `xz` or `gzip` when the host has them.
//!
//! Which agent: the one offered for the kernel's architecture, read from
//! [`ARCH_FILE`] by the shell itself (Linux 6.1 and later; no process started on a cached
//! connect), else the one `uname -m` names; a host of any other architecture is told
//! plainly that there is none (exit [`CANNOT_SERVE`]).
//!
//! Where the agent is kept: the first usable of `$XDG_RUNTIME_DIR/mitossh`,
//! `~/.cache/mitossh`, `${TMPDIR:-/tmp}/mitossh-$UID` and `/dev/shm/mitossh-$UID`. A
//! directory is usable when it is ours, not a symlink, mode 0700, writable, and allows
//! executing files (a `#!/bin/sh` script is run as a probe: on a `noexec` mount that
//! fails; an empty file would need the shell's own fallback for files without `#!`, which
//! busybox's sh makes through `/proc/self/exe`, absent in a bare chroot). The `#!` is
//! written with printf's octal escapes, since the script may not contain `!`.
//! The file is named after the architecture and the image's content hash, written under a
//! temporary name and renamed into place, so concurrent connects never see half an agent.
//!
//! How it arrives: the script asks with `MITOSSH-UPLOAD <nonce> <arch> <format>` (format
//! `xz` when the master has an xz copy and the host's `xz` decodes a probe made with its
//! filters, else `gz` when the master offers gzip and the host has `gzip`, else `raw`); the
//! master answers with one line holding the byte count, then that many bytes. The script
//! reads exactly those bytes (`head -c`), so whatever follows on stdin is the agent's.
//!
//! The master writes the agent's first frames before it knows which way the script goes
//! (`skip` bytes): a cached agent reads them; before asking for the image the script
//! throws them away (`head -c` reads exactly that many), and the master sends them again
//! after the image.

use super::image::{Offer, cache_name};
use super::{FirstFrames, UPLOAD_MARKER};

/// Inputs to the script.
#[derive(Debug, Clone)]
pub(crate) struct Stage1<'a> {
    /// The images there are, by architecture.
    pub offer: &'a Offer,
    /// Random token echoed in markers so that stray output cannot fake them.
    pub nonce: &'a str,
    /// Arguments for the agent after the executable path.
    pub agent_args: &'a [&'a str],
    /// The master's first frames: in hex in the script, exported to the agent in
    /// [`FIRST_ENV`](super::FIRST_ENV) (so that they are in no command line once it runs),
    /// or sent ahead on stdin for a cached agent, to be skipped before an image.
    pub first: &'a FirstFrames,
}

impl Stage1<'_> {
    /// The script, one line.
    pub(crate) fn script(&self) -> String {
        self.script_reading(ARCH_FILE)
    }

    /// The script, taking the architecture from `arch_file` when it can be read.
    fn script_reading(&self, arch_file: &str) -> String {
        let hex = match self.first {
            FirstFrames::Command(hex) => Some(hex.as_str()),
            FirstFrames::Stdin(_) => None,
        };
        let hashes = self.offer.images.iter().map(|i| i.hash.as_str());
        for s in [self.nonce, arch_file]
            .into_iter()
            .chain(hex)
            .chain(hashes)
            .chain(self.agent_args.iter().copied())
        {
            assert!(
                s.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_.=/".contains(&b)),
                "stage 1 arguments must be plain words: {s:?}"
            );
        }
        let run = format!("agent {}", self.agent_args.join(" "));
        let first_dirs =
            r#""${XDG_RUNTIME_DIR:+$XDG_RUNTIME_DIR/mitossh}" "${HOME:+$HOME/.cache/mitossh}""#;
        let uid_dirs = r#""${TMPDIR:-/tmp}/mitossh-$u" "/dev/shm/mitossh-$u""#;
        let dirs = format!("{first_dirs} {uid_dirs}");
        let nonce = self.nonce;
        let skip = match self.first.on_stdin().len() {
            0 => String::new(),
            k => format!("head -c {k} >/dev/null || exit 97; "),
        };
        let z = if self.offer.gzip.is_some() {
            "gz"
        } else {
            "raw"
        };
        // The architecture's image: a=its name, m=the cached file's name, n=its size,
        // x=the xz probe (in printf's escapes) when there is an xz copy.
        let arches: String = (self.offer.images.iter())
            .map(|i| {
                format!(
                    r#"{}) a={} m={} n={} x="{}";; "#,
                    i.arch.uname_pattern(),
                    i.arch.name(),
                    cache_name(i.arch, &i.hash),
                    i.bytes.len(),
                    i.xz.as_ref()
                        .map_or(String::new(), |_| octal(i.arch.xz_probe())),
                )
            })
            .collect();
        let first =
            hex.map(|hex| format!("{}={hex}; export {}", super::FIRST_ENV, super::FIRST_ENV));
        first
            .into_iter()
            .chain([
            // No agent for this architecture: say so plainly; the master reports it as
            // "cannot serve this host".
            format!(r#"{{ read -r a < {arch_file}; }} 2>/dev/null || a=$(uname -m 2>/dev/null); case "$a" in {arches}*) echo "mitossh: no agent for the $a architecture" >&2; exit 97;; esac"#),
            // Cached: start it. The user id (a process to run) only for the directories
            // named by it.
            format!(r#"cached() {{ for d; do if test -n "$d" && test -O "$d" && test -f "$d/$m" && test -x "$d/$m"; then test -L "$d" || exec "$d/$m" {run}; fi; done; }}; cached {first_dirs}"#),
            "u=$(id -u) || exit 97".into(),
            format!("cached {uid_dirs}"),
            // Not cached: how it can come, and where it can go; then ask, store, start.
            format!(r#"z={z}; test $z = gz && command -v gzip >/dev/null 2>&1 || z=raw"#),
            r#"test -n "$x" && command -v xz >/dev/null 2>&1 && test "$(printf "$x" | xz -dc 2>/dev/null)" = mitossh && z=xz"#.into(),
            format!(
                r#"for d in {dirs}; do test -n "$d" || continue; mkdir -p -m 700 "$d" 2>/dev/null; test -L "$d" && continue; test -d "$d" && test -O "$d" || continue; chmod 700 "$d" 2>/dev/null || continue; t="$d/.$m.$$"; rm -f "$t"; (printf "\043\041/bin/sh\n" > "$t" && chmod 700 "$t" && "$t") 2>/dev/null || {{ rm -f "$t"; continue; }}; {skip}echo "{UPLOAD_MARKER} {nonce} $a $z"; IFS= read -r c || exit 97; if case $z in xz) head -c "$c" | xz -dc;; gz) head -c "$c" | gzip -dc;; *) head -c "$c";; esac > "$t"; then s=$(wc -c < "$t"); if test "$((s))" = "$n" && mv -f "$t" "$d/$m"; then exec "$d/$m" {run}; fi; fi; rm -f "$t"; echo "mitossh: could not store the agent in $d" >&2; exit 97; done"#
            ),
            r#"echo "mitossh: no private writable directory to keep the agent in (tried XDG_RUNTIME_DIR, ~/.cache, TMPDIR or /tmp, /dev/shm)" >&2; exit 97"#.into(),
        ])
        .collect::<Vec<_>>()
        .join("; ")
    }

    /// The remote command for ssh: the script wrapped for whatever the login shell is.
    pub(crate) fn remote_command(&self) -> String {
        format!("/bin/sh -c '{}'", self.script())
    }
}

/// `bytes` in printf's octal escapes, every byte escaped: an escape never runs into a
/// digit that follows (bash reads up to three digits after `\0`).
fn octal(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("\\{b:03o}")).collect()
}

/// Where Linux (6.1 and later) says what `uname -m` would, without starting `uname`.
const ARCH_FILE: &str = "/proc/sys/kernel/arch";

/// Exit status stage 1 uses for "this host cannot run an agent".
pub(crate) const CANNOT_SERVE: i32 = 97;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bootstrap::image::{AgentImage, Arch};
    use std::io::{BufRead, BufReader, Read, Write};
    use std::path::{Path, PathBuf};
    use std::process::{Command, Stdio};
    use std::sync::Arc;

    /// A stand-in agent: a script saying which one it is and how it was started.
    fn fake(arch: Arch, name: &str) -> Arc<AgentImage> {
        let text = format!("#!/bin/sh\necho \"{name} ran with $*\"\n");
        Arc::new(AgentImage::new(
            arch,
            text.into_bytes().into(),
            PathBuf::new(),
        ))
    }

    /// Stand-ins for the x86_64 and the aarch64 agent, in that order.
    fn both_agents() -> [Arc<AgentImage>; 2] {
        [
            fake(Arch::X86_64, "x86 agent"),
            fake(Arch::Aarch64, "arm agent"),
        ]
    }

    fn offer(images: &[Arc<AgentImage>], gzip: bool) -> Offer {
        Offer {
            images: images.to_vec(),
            gzip: gzip.then_some(AgentImage::gzip as fn(&AgentImage) -> bytes::Bytes),
        }
    }

    /// A directory of the tools stage 1 needs (without gzip), and `uname` saying `arch`.
    fn tools(dir: &Path, arch: &str) -> PathBuf {
        let bin = dir.join("bin");
        std::fs::create_dir_all(&bin).unwrap();
        for tool in ["id", "mkdir", "chmod", "head", "wc", "mv", "rm"] {
            std::os::unix::fs::symlink(real(tool), bin.join(tool)).unwrap();
        }
        script(&bin.join("uname"), &format!("echo {arch}"));
        bin
    }

    /// Where this machine keeps `tool`.
    fn real(tool: &str) -> PathBuf {
        ["/usr/bin", "/bin"]
            .iter()
            .map(|d| Path::new(d).join(tool))
            .find(|p| p.exists())
            .unwrap()
    }

    /// Writes an executable `/bin/sh` script of `body` at `path`.
    fn script(path: &Path, body: &str) {
        std::fs::write(path, format!("#!/bin/sh\n{body}\n")).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
    }

    /// What a run of stage 1 did.
    struct Run {
        /// The upload marker's words after the nonce (architecture, format), if it asked.
        asked: Option<String>,
        out: String,
        err: String,
        code: Option<i32>,
    }

    /// Runs the script with /bin/sh in a private HOME and `path`, answering an upload
    /// request with what `answer` makes of the marker's words.
    fn run(home: &Path, path: &str, offer: &Offer, answer: impl Fn(&str) -> Vec<u8>) -> Run {
        run_after(home, path, offer, answer, FirstFrames::Stdin(Vec::new()))
    }

    /// Like [`run`], with `first` written ahead as the master writes an agent's first
    /// frames (and again after an image, as the master does).
    fn run_after(
        home: &Path,
        path: &str,
        offer: &Offer,
        answer: impl Fn(&str) -> Vec<u8>,
        frames: FirstFrames,
    ) -> Run {
        let s = Stage1 {
            offer,
            nonce: "n0nce",
            agent_args: &["--nonce", "n0nce"],
            first: &frames,
        };
        let first = frames.on_stdin();
        // The kernel's word on the architecture, when a test wrote one; else `uname -m`.
        let arch_file = home.join("kernel-arch");
        let mut child = Command::new("/bin/sh")
            .arg("-c")
            .arg(s.script_reading(arch_file.to_str().unwrap()))
            .env_clear()
            .env("HOME", home)
            .env("PATH", path)
            .env("TMPDIR", home.join("tmp"))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(first).unwrap();
        let mut out = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        out.read_line(&mut line).unwrap();
        let asked = line
            .strip_prefix(&format!("{UPLOAD_MARKER} n0nce "))
            .map(|w| w.trim_end().to_string());
        let mut rest = String::new();
        match &asked {
            Some(words) => {
                let _ = stdin.write_all(&answer(words));
                let _ = stdin.write_all(first);
            }
            None => rest.push_str(&line),
        }
        drop(stdin);
        out.read_to_string(&mut rest).unwrap();
        let mut err = String::new();
        child
            .stderr
            .take()
            .unwrap()
            .read_to_string(&mut err)
            .unwrap();
        let code = child.wait().unwrap().code();
        Run {
            asked,
            out: rest,
            err,
            code,
        }
    }

    /// How a test answers an upload request (the marker's words in, bytes out).
    type Answer<'a> = dyn Fn(&str) -> Vec<u8> + 'a;

    /// The master's answer: the byte count on a line, then the bytes.
    fn sized(bytes: &[u8]) -> Vec<u8> {
        let mut v = format!("{}\n", bytes.len()).into_bytes();
        v.extend_from_slice(bytes);
        v
    }

    /// Answers as the master does, from `offer`.
    fn master(offer: &Offer) -> impl Fn(&str) -> Vec<u8> + '_ {
        move |words| {
            let (arch, format) = words.split_once(' ').unwrap();
            let image = offer.image(Arch::from_name(arch).unwrap()).unwrap();
            match format {
                "xz" => sized(image.xz.as_ref().unwrap()),
                "gz" => sized(&image.gzip()),
                "raw" => sized(&image.bytes),
                other => panic!("format {other}"),
            }
        }
    }

    #[test]
    fn first_frames_in_the_script_reach_the_agent_in_its_environment_not_its_arguments() {
        let home = tempfile::tempdir().unwrap();
        let text = "#!/bin/sh\necho \"args=$* first=$MITOSSH_FIRST\"\n";
        let image = AgentImage::new(
            Arch::X86_64,
            text.as_bytes().to_vec().into(),
            PathBuf::new(),
        );
        let o = offer(&[Arc::new(image)], true);
        let path = format!("{}:/usr/bin:/bin", tools(home.path(), "x86_64").display());
        let want = "args=agent --nonce n0nce first=00ff\n";
        // Uploaded, then cached: the same either way, and nothing to skip on stdin.
        let r = run_after(
            home.path(),
            &path,
            &o,
            master(&o),
            FirstFrames::Command("00ff".into()),
        );
        assert_eq!(
            (r.asked.as_deref(), r.out.as_str()),
            (Some("x86_64 gz"), want),
            "{}",
            r.err
        );
        let r = run_after(
            home.path(),
            &path,
            &o,
            |_| panic!("asked again"),
            FirstFrames::Command("00ff".into()),
        );
        assert_eq!((r.asked, r.out.as_str()), (None, want), "{}", r.err);
    }

    #[test]
    fn script_has_no_single_quote_or_bang() {
        let images = [fake(Arch::X86_64, "x"), fake(Arch::Aarch64, "a")];
        let o = offer(&images, true);
        let s = Stage1 {
            offer: &o,
            nonce: "n",
            agent_args: &["--nonce", "n"],
            first: &FirstFrames::Stdin(Vec::new()),
        }
        .script();
        assert!(!s.contains('\''));
        assert!(!s.contains('!'));
        assert!(!s.contains('\n'));
    }

    #[test]
    fn uploads_once_compressed_then_runs_from_cache() {
        let home = tempfile::tempdir().unwrap();
        let images = both_agents();
        let o = offer(&images, true);
        let path = format!("{}:/usr/bin:/bin", tools(home.path(), "x86_64").display());
        let r = run(home.path(), &path, &o, master(&o));
        assert_eq!(r.asked.as_deref(), Some("x86_64 gz"), "{}", r.err);
        assert_eq!(r.out, "x86 agent ran with agent --nonce n0nce\n");

        let r = run(home.path(), &path, &o, |_| panic!("asked again"));
        assert_eq!(r.asked, None, "second connect must use the cache");
        assert_eq!(r.out, "x86 agent ran with agent --nonce n0nce\n");

        let cached = home
            .path()
            .join(".cache/mitossh")
            .join(format!("mitossh-agent-x86_64-{}", images[0].hash));
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&cached).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o700);
        let dir_mode = std::fs::metadata(cached.parent().unwrap()).unwrap();
        assert_eq!(dir_mode.permissions().mode() & 0o777, 0o700);
        assert_eq!(std::fs::read(&cached).unwrap(), images[0].bytes);
    }

    /// The master's first frames, written before it knows whether the host has the agent,
    /// reach the agent exactly once either way: stage 1 drops them before an upload.
    #[test]
    fn frames_sent_ahead_reach_the_agent_once_cached_or_not() {
        let home = tempfile::tempdir().unwrap();
        let text = "#!/bin/sh\necho ran; cat\n";
        let images = [Arc::new(AgentImage::new(
            Arch::X86_64,
            text.as_bytes().to_vec().into(),
            PathBuf::new(),
        ))];
        let o = offer(&images, false);
        let path = format!("{}:/usr/bin:/bin", tools(home.path(), "x86_64").display());
        // Printable, so that the output reads as text; any bytes would do for stage 1.
        let first: Vec<u8> = (b' '..=b'~').cycle().take(5000).collect();
        let want = [b"ran\n".as_slice(), first.as_slice()].concat();
        let r = run_after(
            home.path(),
            &path,
            &o,
            master(&o),
            FirstFrames::Stdin(first.clone()),
        );
        assert_eq!(r.asked.as_deref(), Some("x86_64 raw"), "{}", r.err);
        assert!(r.out.as_bytes() == want, "uploaded: {:?}", r.out.len());
        let r = run_after(
            home.path(),
            &path,
            &o,
            |_| panic!("asked again"),
            FirstFrames::Stdin(first.clone()),
        );
        assert_eq!(r.asked, None);
        assert!(r.out.as_bytes() == want, "cached: {:?}", r.out.len());
    }

    /// A copy in `~/.cache` starts without `id` (one process fewer on every connect).
    #[test]
    fn a_copy_cached_in_home_starts_without_asking_the_user_id() {
        let home = tempfile::tempdir().unwrap();
        let images = [fake(Arch::X86_64, "x86 agent")];
        let o = offer(&images, true);
        let bin = tools(home.path(), "x86_64");
        let path = format!("{}:/usr/bin:/bin", bin.display());
        assert!(run(home.path(), &path, &o, master(&o)).asked.is_some());
        std::fs::remove_file(bin.join("id")).unwrap();
        let r = run(home.path(), &bin.display().to_string(), &o, |_| {
            panic!("asked again")
        });
        assert_eq!(
            r.out, "x86 agent ran with agent --nonce n0nce\n",
            "{}",
            r.err
        );
    }

    #[test]
    fn uname_picks_the_image_and_names_the_copy() {
        let home = tempfile::tempdir().unwrap();
        let images = both_agents();
        let o = offer(&images, true);
        for (uname, arch, who) in [("aarch64", "aarch64", "arm"), ("arm64", "aarch64", "arm")] {
            let dir = tempfile::tempdir().unwrap();
            let path = format!("{}:/usr/bin:/bin", tools(dir.path(), uname).display());
            let r = run(home.path(), &path, &o, master(&o));
            assert_eq!(
                r.out,
                format!("{who} agent ran with agent --nonce n0nce\n"),
                "{}",
                r.err
            );
            let name = format!("mitossh-agent-{arch}-{}", images[1].hash);
            assert!(home.path().join(".cache/mitossh").join(name).exists());
        }
    }

    #[test]
    fn the_kernels_word_on_the_architecture_comes_before_unames() {
        let home = tempfile::tempdir().unwrap();
        let images = both_agents();
        let o = offer(&images, true);
        std::fs::write(home.path().join("kernel-arch"), "aarch64\n").unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = format!("{}:/usr/bin:/bin", tools(dir.path(), "x86_64").display());
        let r = run(home.path(), &path, &o, master(&o));
        assert_eq!(
            r.out, "arm agent ran with agent --nonce n0nce\n",
            "{}",
            r.err
        );
        assert_eq!(r.err, "");
    }

    /// `image` with an xz copy made as `scripts/build-agents` makes them.
    fn with_xz(image: &AgentImage) -> Arc<AgentImage> {
        let bcj = image.arch.xz_probe()[13] == 1; // two filters: BCJ, LZMA2
        let mut xz = Command::new("xz")
            .args(["--check=crc32", "-c"])
            .args(bcj.then_some("--x86"))
            .arg("--lzma2=preset=6,dict=2MiB")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("xz (scripts/prepare installs it)");
        xz.stdin.take().unwrap().write_all(&image.bytes).unwrap();
        let out = xz.wait_with_output().unwrap();
        let mut copy = AgentImage::new(image.arch, image.bytes.clone(), PathBuf::new());
        copy.xz = Some(out.stdout.into());
        Arc::new(copy)
    }

    #[test]
    fn the_probe_of_every_architecture_decodes_with_xz() {
        for arch in Arch::ALL {
            let mut xz = Command::new("xz")
                .arg("-dc")
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .spawn()
                .unwrap();
            xz.stdin.take().unwrap().write_all(arch.xz_probe()).unwrap();
            let out = xz.wait_with_output().unwrap();
            assert_eq!(out.stdout, b"mitossh", "{arch:?}");
        }
    }

    #[test]
    fn a_host_whose_xz_decodes_the_probe_is_sent_the_xz_copy() {
        let home = tempfile::tempdir().unwrap();
        // Large enough that the BCJ filter has x86 code to change.
        let text = format!(
            "#!/bin/sh\necho xz agent\nexit 0\n# {}\n",
            "\u{e8}".repeat(4000)
        );
        let plain = AgentImage::new(Arch::X86_64, text.into_bytes().into(), PathBuf::new());
        let images = [with_xz(&plain)];
        let o = offer(&images, true);
        let path = format!("{}:/usr/bin:/bin", tools(home.path(), "x86_64").display());
        let r = run(home.path(), &path, &o, master(&o));
        assert_eq!(r.asked.as_deref(), Some("x86_64 xz"), "{}", r.err);
        assert_eq!(r.out, "xz agent\n");
        let cached = home.path().join(".cache/mitossh").join(plain.file_name());
        assert_eq!(
            std::fs::read(cached).unwrap(),
            plain.bytes,
            "decoded byte for byte"
        );
    }

    /// An `xz` that cannot decode the filters (busybox's has no BCJ), or one whose memory
    /// limit is below the copy's dictionary: gzip.
    #[test]
    fn a_host_whose_xz_fails_the_probe_is_sent_gzip() {
        let limited = format!(
            "exec {} --memlimit-decompress=1MiB \"$@\"",
            real("xz").display()
        );
        for xz in [
            "echo 'xz: Unsupported filter chain' >&2; exit 1",
            limited.as_str(),
        ] {
            let home = tempfile::tempdir().unwrap();
            let images = [with_xz(&fake(Arch::X86_64, "x86 agent"))];
            let o = offer(&images, true);
            let bin = tools(home.path(), "x86_64");
            std::os::unix::fs::symlink(real("gzip"), bin.join("gzip")).unwrap();
            script(&bin.join("xz"), xz);
            let r = run(home.path(), &bin.display().to_string(), &o, master(&o));
            assert_eq!(r.asked.as_deref(), Some("x86_64 gz"), "{xz}: {}", r.err);
            assert_eq!(r.out, "x86 agent ran with agent --nonce n0nce\n");
            assert_eq!(r.err, "", "the probe's failure is not shown");
        }
    }

    #[test]
    fn without_gzip_it_asks_for_the_image_as_it_is() {
        let home = tempfile::tempdir().unwrap();
        let images = [fake(Arch::X86_64, "x86 agent")];
        let o = offer(&images, true);
        // Only the tools directory: no gzip there.
        let path = tools(home.path(), "x86_64").display().to_string();
        let r = run(home.path(), &path, &o, master(&o));
        assert_eq!(r.asked.as_deref(), Some("x86_64 raw"), "{}", r.err);
        assert_eq!(r.out, "x86 agent ran with agent --nonce n0nce\n");
    }

    #[test]
    fn an_offer_without_compression_is_asked_for_raw() {
        let home = tempfile::tempdir().unwrap();
        let images = [fake(Arch::X86_64, "x86 agent")];
        let o = offer(&images, false);
        let path = format!("{}:/usr/bin:/bin", tools(home.path(), "x86_64").display());
        let r = run(home.path(), &path, &o, master(&o));
        assert_eq!(r.asked.as_deref(), Some("x86_64 raw"));
    }

    #[test]
    fn another_architecture_is_told_there_is_no_agent() {
        let home = tempfile::tempdir().unwrap();
        let images = both_agents();
        let o = offer(&images, true);
        let path = format!("{}:/usr/bin:/bin", tools(home.path(), "riscv64").display());
        let r = run(home.path(), &path, &o, |_| panic!("asked for an image"));
        assert_eq!(r.code, Some(CANNOT_SERVE));
        assert_eq!(r.err, "mitossh: no agent for the riscv64 architecture\n");
    }

    #[test]
    fn a_new_hash_uploads_again() {
        let home = tempfile::tempdir().unwrap();
        let path = format!("{}:/usr/bin:/bin", tools(home.path(), "x86_64").display());
        let one = offer(&[fake(Arch::X86_64, "one")], true);
        assert!(run(home.path(), &path, &one, master(&one)).asked.is_some());
        let two = offer(&[fake(Arch::X86_64, "two")], true);
        let r = run(home.path(), &path, &two, master(&two));
        assert!(r.asked.is_some());
        assert_eq!(r.out, "two ran with agent --nonce n0nce\n");
    }

    #[test]
    fn a_short_or_corrupt_upload_is_not_cached() {
        let home = tempfile::tempdir().unwrap();
        let path = format!("{}:/usr/bin:/bin", tools(home.path(), "x86_64").display());
        let images = [fake(Arch::X86_64, "x86 agent")];
        let o = offer(&images, true);
        let gz = images[0].gzip();
        let mut flipped = gz.to_vec();
        let middle = flipped.len() / 2;
        flipped[middle] ^= 0xff;
        let answers: [Box<Answer<'_>>; 3] = [
            // The count promised, then end of file halfway.
            Box::new(|_| sized(&gz)[..gz.len() / 2].to_vec()),
            // Corrupt compressed data: gzip's check fails.
            Box::new(|_| sized(&flipped)),
            // Whole and sound, but not the size the script expects.
            Box::new(|_| sized(&fake(Arch::X86_64, "another, longer agent").gzip())),
        ];
        for answer in answers {
            let r = run(home.path(), &path, &o, answer);
            assert_eq!(r.code, Some(CANNOT_SERVE), "{}", r.err);
            assert!(r.err.contains("could not store the agent"), "{}", r.err);
            let left: Vec<_> = std::fs::read_dir(home.path().join(".cache/mitossh"))
                .unwrap()
                .collect();
            assert!(left.is_empty(), "nothing stays behind: {left:?}");
        }
    }
}
