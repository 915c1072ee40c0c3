//! Log setup: tracing to stderr, filtered by `$MITOSSH_LOG` (tracing's env-filter syntax).

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

/// The agent's subscriber: a plain level (`$MITOSSH_LOG` if it is one, else warnings),
/// without env-filter's directive parser (and the regex engine it brings), which would
/// otherwise make up a good part of the image every host is sent. Its stderr is the ssh
/// connection's, so no colours.
pub fn init_agent() {
    let level = std::env::var(crate::paths::LOG_ENV)
        .ok()
        .and_then(|l| l.parse::<LevelFilter>().ok())
        .unwrap_or(LevelFilter::WARN);
    let _ = tracing_subscriber::fmt()
        .with_max_level(level)
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_ansi(false)
        .try_init();
}
