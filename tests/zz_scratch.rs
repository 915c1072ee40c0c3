mod common;
use common::*;
use std::time::Duration;
#[test]
fn hold() {
    let sshd = Sshd::start();
    let hosts = host_names("h", 1000);
    let dir = std::path::Path::new("/tmp/w11");
    let cfg = FleetConfig::new().hosts(&sshd, &hosts, "").write(dir);
    std::fs::write(
        dir.join("ready"),
        format!("{}\n{}\n", cfg.display(), sshd.pid()),
    )
    .unwrap();
    let _ = std::fs::remove_file(dir.join("stop"));
    wait_until(Duration::from_secs(3000), "stop", || {
        dir.join("stop").exists()
    });
}
