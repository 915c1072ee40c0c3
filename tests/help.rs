//! `--help` says what it is written to say: placeholders such as `{n}` survive (clap
//! turns `{n}` into a line break), on a pipe and on a terminal, and every option and
//! argument has a line of help.

mod common;

use std::process::Command;
use std::time::Duration;

use common::*;

const T: Duration = Duration::from_secs(30);

const SUBCOMMANDS: &[&str] = &["master", "status", "tree", "proxy", "stop", "run"];

/// Removes ANSI escape sequences (`ESC [ … letter`).
fn strip_ansi(text: &str) -> String {
    let mut out = String::new();
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\x1b' {
            for d in chars.by_ref() {
                if d.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

const PLACEHOLDERS: &str =
    "In commands, {i} is a unique index per process name, {n} the index on its host,";

#[test]
fn run_help_keeps_its_placeholders_on_a_pipe_and_a_terminal() {
    let out = output_within(Command::new(bin("mitossh")).args(["run", "--help"]), b"", T);
    let piped = check(&out);
    assert!(piped.contains(PLACEHOLDERS), "{piped}");
    assert!(!piped.contains('\x1b'), "escapes on a pipe: {piped:?}");

    let mut cmd = Command::new(bin("mitossh"));
    cmd.args(["run", "--help"]).env_remove("NO_COLOR");
    let (term, mut child) = Terminal::spawn(&mut cmd, 50, 200);
    assert!(wait_child(&mut child, T, "mitossh run --help").success());
    term.expect("Exit status", T);
    let shown = strip_ansi(&term.text()).replace('\r', "");
    assert!(shown.contains(PLACEHOLDERS), "{shown}");
}

#[test]
fn every_option_and_argument_has_help() {
    let mut helps: Vec<(String, String)> = SUBCOMMANDS
        .iter()
        .map(|sub| {
            let out = output_within(Command::new(bin("mitossh")).args([sub, "-h"]), b"", T);
            (format!("mitossh {sub}"), check(&out))
        })
        .collect();
    let out = output_within(Command::new(bin("mitossh-env")).arg("-h"), b"", T);
    helps.push(("mitossh-env".into(), check(&out)));
    for (what, help) in &helps {
        assert!(
            !help.contains("{n}\n") && !help.contains("\n the index"),
            "{help}"
        );
        let mut section = "";
        let lines: Vec<&str> = help.lines().collect();
        for (i, line) in lines.iter().copied().enumerate() {
            if line.ends_with(':') && !line.starts_with(' ') {
                section = line;
                continue;
            }
            if section != "Options:" && section != "Arguments:" {
                continue;
            }
            // "  -n, --count <COUNT>  help" or "  <PLAN>  help"; when names are long, clap
            // puts the help on the next line, further right. A name with neither has none.
            let words: Vec<&str> = line.split_whitespace().collect();
            let named =
                line.starts_with("  -") || line.starts_with("  <") || line.starts_with("  [");
            let only_name = words.len() <= 3
                && words
                    .iter()
                    .all(|w| w.starts_with('-') || w.starts_with('<') || w.starts_with('['));
            let help_below = lines
                .get(i + 1)
                .is_some_and(|next| next.starts_with("          ") && !next.trim().is_empty());
            assert!(
                !(named && only_name && !help_below),
                "{what}: no help for {line:?}\n{help}"
            );
        }
    }
}
