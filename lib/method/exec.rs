//! A child context inside something else on this host: a container (`docker exec -i`,
//! `podman exec -i`, `kubectl exec -i`, `lxc exec`), a chroot, another process's
//! namespaces (`nsenter`), a systemd machine — anything entered by a command prefix that
//! runs a command there with this agent's pipes as its stdin and stdout.
//!
//! The prefix is followed by `/bin/sh -c` and the same one-word stage 1 that ssh hands to
//! a login shell: the shell inside runs it, finds the agent cached there or asks for it,
//! and the image goes over the prefix's stdin (the filesystem there is not this one). So
//! all that must exist inside is `/bin/sh` and the few tools stage 1 uses.

use super::{Child, SpawnError};
use crate::bootstrap::ssh::SshCommand;
use crate::proto::ContextId;

/// Runs `argv` (the prefix) with stage 1 after it and starts an agent inside.
pub(crate) async fn start(
    child: ContextId,
    argv: &[Vec<u8>],
    label: &str,
) -> Result<Child, SpawnError> {
    let command = command(argv, label)?;
    super::ssh::over(child, &command).await
}

/// The prefix, then `/bin/sh -c`: stage 1 comes after as the script's one word.
fn command(argv: &[Vec<u8>], label: &str) -> Result<SshCommand, SpawnError> {
    use std::ffi::{OsStr, OsString};
    use std::os::unix::ffi::OsStrExt;
    let (program, prefix) = argv
        .split_first()
        .filter(|(p, _)| !p.is_empty())
        .ok_or_else(|| SpawnError::Failed("an empty exec command".into()))?;
    let args = prefix
        .iter()
        .map(|w| OsStr::from_bytes(w).to_os_string())
        .chain([OsString::from("/bin/sh"), OsString::from("-c")])
        .collect();
    Ok(SshCommand {
        program: OsStr::from_bytes(program).into(),
        args,
        label: label.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(ws: &[&str]) -> Vec<Vec<u8>> {
        ws.iter().map(|w| w.as_bytes().to_vec()).collect()
    }

    #[test]
    fn the_prefix_is_run_with_a_shell_for_stage_1() {
        let c = command(&words(&["docker", "exec", "-i", "app"]), "app").unwrap();
        assert_eq!(c.program, std::path::Path::new("docker"));
        assert_eq!(c.args, ["exec", "-i", "app", "/bin/sh", "-c"]);
    }

    #[test]
    fn an_empty_prefix_is_an_error() {
        assert!(command(&[], "x").is_err());
        assert!(command(&words(&[""]), "x").is_err());
    }

    /// The word ssh hands a login shell works as the script of the prefix's `/bin/sh -c`:
    /// stage 1 runs and asks for the image.
    #[test]
    fn stage_1_runs_through_the_prefix() {
        use crate::bootstrap::UPLOAD_MARKER;
        use crate::bootstrap::image::{AgentImage, Arch, Offer};
        use crate::bootstrap::stage1::Stage1;
        use std::io::BufRead;
        let home = tempfile::tempdir().unwrap();
        let image = AgentImage::new(Arch::native(), b"x".to_vec().into(), Default::default());
        let offer = Offer {
            images: vec![std::sync::Arc::new(image)],
            gzip: None,
        };
        let s = Stage1 {
            offer: &offer,
            nonce: "n0nce",
            agent_args: &["--nonce", "n0nce"],
            first: &crate::bootstrap::FirstFrames::Stdin(Vec::new()),
        };
        // `env -i HOME=…` as the prefix: runs what follows elsewhere, as `chroot DIR` does.
        let home_var = format!("HOME={}", home.path().display());
        let c = command(
            &words(&["env", "-i", &home_var, "PATH=/usr/bin:/bin"]),
            "env",
        )
        .unwrap();
        let mut child = std::process::Command::new(&c.program)
            .args(&c.args)
            .arg(s.remote_command())
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut first = String::new();
        std::io::BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut first)
            .unwrap();
        drop(child.stdin.take());
        let _ = child.wait();
        let arch = Arch::native().name();
        assert_eq!(first, format!("{UPLOAD_MARKER} n0nce {arch} raw\n"));
    }
}
