//! Isolated roots for the exec method's tests: a directory holding what a minimal
//! container image holds (a static busybox as `/bin/sh` and its tools, the host's rsync
//! with the libraries it links, `/etc/passwd`, `/dev/null`, `/tmp`), entered with
//! `chroot` or `unshare --root`; and a real podman container made from it.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use super::helpers::check;

/// The file inside every root that says which one it is.
pub const ROOT_MARKER: &str = "etc/mitossh-rootfs";

/// A root directory, removed when dropped.
pub struct Rootfs {
    dir: tempfile::TempDir,
    pub marker: String,
}

impl Rootfs {
    /// Builds a root whose `/etc/mitossh-rootfs` holds `marker`.
    pub fn build(marker: &str) -> Rootfs {
        let dir = tempfile::Builder::new()
            .prefix("mitossh-rootfs-")
            .tempdir()
            .unwrap();
        let root = dir.path();
        for (d, mode) in [
            ("bin", 0o755),
            ("etc", 0o755),
            ("dev", 0o755),
            ("proc", 0o555),
            ("srv", 0o755),
            ("root", 0o700),
            ("tmp", 0o1777),
            ("usr/bin", 0o755),
        ] {
            std::fs::create_dir_all(root.join(d)).unwrap();
            std::fs::set_permissions(root.join(d), std::fs::Permissions::from_mode(mode)).unwrap();
        }
        let busybox = Path::new("/bin/busybox");
        assert!(
            busybox.exists(),
            "busybox-static is missing: run scripts/prepare"
        );
        std::fs::copy(busybox, root.join("bin/busybox")).unwrap();
        let applets = check(&Command::new(busybox).arg("--list").output().unwrap());
        for applet in applets.lines().filter(|a| !a.is_empty() && *a != "busybox") {
            std::os::unix::fs::symlink("busybox", root.join("bin").join(applet)).unwrap();
        }
        copy_with_libraries(Path::new("/usr/bin/rsync"), root);
        std::fs::write(root.join("etc/passwd"), "root:x:0:0:root:/root:/bin/sh\n").unwrap();
        std::fs::write(root.join("etc/group"), "root:x:0:\n").unwrap();
        std::fs::write(root.join(ROOT_MARKER), format!("{marker}\n")).unwrap();
        let null = root.join("dev/null");
        check(
            &Command::new("mknod")
                .args(["-m", "666"])
                .arg(&null)
                .args(["c", "1", "3"])
                .output()
                .unwrap(),
        );
        Rootfs {
            dir,
            marker: marker.to_string(),
        }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Whether process `p` runs inside this root (its `/` is this directory).
    pub fn holds(&self, p: &super::procs::Proc) -> bool {
        std::fs::read_link(format!("/proc/{}/root", p.pid)).is_ok_and(|r| r == self.dir.path())
    }

    /// A path inside the root, as seen from outside.
    pub fn join(&self, inside: &str) -> PathBuf {
        self.dir.path().join(inside.trim_start_matches('/'))
    }
}

/// Copies `program` into `root` at the same path, with every library `ldd` names.
fn copy_with_libraries(program: &Path, root: &Path) {
    let ldd = check(&Command::new("ldd").arg(program).output().unwrap());
    let libs = ldd.lines().filter_map(|l| {
        let path = match l.split_once("=>") {
            Some((_, rest)) => rest.split_whitespace().next(),
            None => l.split_whitespace().next(),
        }?;
        path.starts_with('/').then(|| PathBuf::from(path))
    });
    for file in std::iter::once(program.to_path_buf()).chain(libs) {
        let to = root.join(file.strip_prefix("/").unwrap());
        std::fs::create_dir_all(to.parent().unwrap()).unwrap();
        std::fs::copy(&file, &to).unwrap();
    }
}

/// A running podman container made from a [`Rootfs`]: imported as an image, started
/// with no network (nothing but loopback is touched), removed with its image when dropped.
pub struct Container {
    pub name: String,
    image: String,
}

impl Container {
    pub fn start(rootfs: &Rootfs) -> Container {
        let name = format!("mitossh-test-{}", rootfs.marker);
        let image = format!("localhost/{name}:latest");
        let tar = rootfs.path().with_extension("tar");
        check(
            &Command::new("tar")
                .arg("-C")
                .arg(rootfs.path())
                .arg("-cf")
                .arg(&tar)
                .arg(".")
                .output()
                .unwrap(),
        );
        let imported = podman()
            .arg("import")
            .arg(&tar)
            .arg(&image)
            .output()
            .unwrap();
        let _ = std::fs::remove_file(&tar);
        check(&imported);
        let container = Container { name, image };
        // runc: crun refuses this machine's hybrid cgroup layout. The limits: podman's
        // default (1048576 open files) is above what a process without CAP_SYS_RESOURCE
        // may set.
        check(
            &podman()
                .args(["--runtime", "runc", "run", "-d", "--network", "none"])
                .args([
                    "--ulimit",
                    "nofile=1024:1024",
                    "--ulimit",
                    "nproc=4096:4096",
                ])
                .args(["--name", &container.name, &container.image])
                .args(["/bin/sleep", "3600"])
                .output()
                .unwrap(),
        );
        container
    }

    /// The host name the container has (its short id).
    pub fn hostname(&self) -> String {
        check(
            &podman()
                .args(["inspect", "-f", "{{.Config.Hostname}}", &self.name])
                .output()
                .unwrap(),
        )
        .trim()
        .to_string()
    }

    /// The command lines of the processes running in the container.
    pub fn processes(&self) -> Vec<String> {
        let out = check(&podman().args(["top", &self.name, "args"]).output().unwrap());
        out.lines().skip(1).map(|l| l.trim().to_string()).collect()
    }

    /// Copies `inside` out of the container to `to`.
    pub fn copy_out(&self, inside: &str, to: &Path) {
        check(
            &podman()
                .arg("cp")
                .arg(format!("{}:{inside}", self.name))
                .arg(to)
                .output()
                .unwrap(),
        );
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        let _ = podman().args(["rm", "-f", "-t", "0", &self.name]).output();
        let _ = podman().args(["rmi", "-f", &self.image]).output();
    }
}

fn podman() -> Command {
    assert!(
        Path::new("/usr/bin/podman").exists(),
        "podman is missing: run scripts/prepare"
    );
    Command::new("/usr/bin/podman")
}
