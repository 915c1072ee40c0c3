//! Log setup: tracing to stderr, filtered by `$MITOSSH_LOG` (tracing's env-filter syntax).

use tracing_subscriber::EnvFilter;

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
