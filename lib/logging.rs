//! Log setup: tracing to stderr, filtered by `$MITOSSH_LOG`: tracing's env-filter syntax
//! for the master and `mitossh`'s commands, a plain level for the agent and the shims.

use tracing_subscriber::EnvFilter;
use tracing_subscriber::filter::LevelFilter;

/// Installs the subscriber; `default` applies when `$MITOSSH_LOG` is unset or invalid.
pub fn init(default: &str) {
    let filter = std::env::var(crate::paths::LOG_ENV)
        .ok()
        .and_then(|f| EnvFilter::try_new(f).ok())
        .unwrap_or_else(|| EnvFilter::new(default));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init();
}

/// The agent's subscriber: a plain level (see [`plain`]). Its stderr is the ssh
/// connection's, so no colours.
pub fn init_agent() {
    plain(LevelFilter::WARN, false);
}

/// The shims' subscriber: a plain level (see [`plain`]), warnings unless told.
pub fn init_shim() {
    plain(
        LevelFilter::WARN,
        std::io::IsTerminal::is_terminal(&std::io::stderr()),
    );
}

/// A plain level (`$MITOSSH_LOG` if it is one, else `default`), without env-filter's
/// directive parser and the regex engine it brings. The agent would carry the engine in
/// the image every host is sent; a shim, which starts on every call, would relocate its
/// tables on every start (it had 105 page faults with them, 45 without).
fn plain(default: LevelFilter, ansi: bool) {
    let level = std::env::var(crate::paths::LOG_ENV)
        .ok()
        .and_then(|l| l.parse::<LevelFilter>().ok())
        .unwrap_or(default);
    let _ = tracing_subscriber::fmt()
        .with_max_level(level)
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_ansi(ansi)
        .try_init();
}
