//! What sudo, su and doas say on their terminal, and what it means: a password prompt, a
//! wrong password, a refusal. Pure functions over the transcript, so they can be tested
//! against the exact texts each tool (and sudo-rs) prints.

use crate::proto::BecomeMethod;

/// The verdict on a transcript so far.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Seen {
    /// Nothing decisive yet.
    Nothing,
    /// The tool has asked for the password `n` times in all.
    Prompts(usize),
    /// The password was wrong.
    Incorrect,
    /// The tool refused for another reason; the line that says why.
    Refused(String),
}

/// How one tool talks.
#[derive(Debug, Clone)]
pub(crate) struct Dialect {
    method: BecomeMethod,
    /// What sudo is told to prompt with (`sudo -p`); empty for su and doas.
    prompt: String,
    /// Text that marks a prompt (the start of our unique sudo prompt, or "password:").
    marker: String,
}

/// Lines after which no password will help.
const REFUSALS: &[&str] = &[
    "is not in the sudoers file",
    "is not allowed to execute",
    "may not run sudo",
    "a password is required",
    "a terminal is required",
    "no tty present",
    "you must have a tty",
    "does not exist",
    "unknown user",
    "Operation not permitted",
    "not permitted",
];

/// Lines that say the password was wrong.
const INCORRECT: &[&str] = &[
    "Sorry, try again",
    "incorrect password attempt",
    "Authentication failure",
    "Authentication failed",
    "authentication failed",
];

impl Dialect {
    /// `nonce` makes sudo's prompt unique (`sudo -p`); su and doas cannot be told their
    /// prompt, so theirs is recognised by its usual ending in the C locale.
    pub(crate) fn new(method: BecomeMethod, nonce: &str) -> Dialect {
        let (prompt, marker) = match method {
            // sudo expands %p to the user whose password it wants (the invoking user's,
            // or the target's or root's under targetpw/rootpw).
            BecomeMethod::Sudo => (format!("{} %p: ", sudo_marker(nonce)), sudo_marker(nonce)),
            BecomeMethod::Su | BecomeMethod::Doas => (String::new(), "password:".into()),
        };
        Dialect {
            method,
            prompt,
            marker,
        }
    }

    /// The text to pass to `sudo -p` (sudo prints it with `%p` expanded; sudo-rs wraps it).
    pub(crate) fn prompt(&self) -> &str {
        &self.prompt
    }

    /// Whose password the tool asks for, from its last prompt: `target` for su (it wants
    /// the target's own), the name sudo put for `%p` or doas in `doas (user@host)`, else
    /// `invoker` (both ask for the invoking user's by default). One line, no control
    /// characters, at most 64 of them.
    pub(crate) fn whose_password(&self, transcript: &str, target: &str, invoker: &str) -> String {
        let named = match self.method {
            BecomeMethod::Su => Some(target.to_string()),
            BecomeMethod::Sudo => {
                transcript
                    .rsplit_once(self.marker.as_str())
                    .and_then(|(_, rest)| {
                        let name = rest.split(':').next().unwrap_or("").trim();
                        (!name.is_empty() && !name.contains('%')).then(|| name.to_string())
                    })
            }
            BecomeMethod::Doas => transcript
                .rsplit_once("doas (")
                .and_then(|(_, rest)| rest.split_once('@'))
                .map(|(name, _)| name.to_string()),
        };
        let name = clean(named.as_deref().unwrap_or(invoker));
        name.chars().take(64).collect()
    }

    /// Reads the transcript so far.
    pub(crate) fn scan(&self, transcript: &str) -> Seen {
        for line in transcript.lines() {
            if INCORRECT.iter().any(|m| line.contains(m)) {
                return Seen::Incorrect;
            }
        }
        for line in transcript.lines() {
            if REFUSALS.iter().any(|m| line.contains(m)) {
                return Seen::Refused(clean(line));
            }
        }
        let prompts = match self.method {
            BecomeMethod::Sudo => transcript.matches(&self.marker).count(),
            BecomeMethod::Su | BecomeMethod::Doas => transcript
                .to_ascii_lowercase()
                .matches(&self.marker)
                .count(),
        };
        if prompts > 0 {
            Seen::Prompts(prompts)
        } else {
            Seen::Nothing
        }
    }

    /// The most telling line of a transcript, for an error message when the tool exited
    /// without a verdict: its last non-empty line that is not a prompt.
    pub(crate) fn last_words(&self, transcript: &str) -> String {
        transcript
            .lines()
            .rev()
            .map(clean)
            .find(|l| {
                !l.is_empty()
                    && !l
                        .to_ascii_lowercase()
                        .contains(self.marker.to_ascii_lowercase().as_str())
            })
            .unwrap_or_else(|| format!("{} exited without saying why", self.method.name()))
    }
}

/// The start of our sudo prompt, unique per attempt.
fn sudo_marker(nonce: &str) -> String {
    format!("[mitossh-{nonce}] password for")
}

/// A line without terminal control characters and surrounding blanks.
fn clean(line: &str) -> String {
    line.chars()
        .filter(|c| !c.is_control())
        .collect::<String>()
        .trim()
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sudo_prompt_then_wrong_password() {
        let d = Dialect::new(BecomeMethod::Sudo, "n1");
        assert_eq!(d.prompt(), "[mitossh-n1] password for %p: ");
        assert_eq!(d.scan(""), Seen::Nothing);
        assert_eq!(
            d.scan("[mitossh-n1] password for alice: "),
            Seen::Prompts(1)
        );
        // sudo 1.9's answer to a wrong password, then the prompt again.
        assert_eq!(
            d.scan("[mitossh-n1] password for alice: \r\nSorry, try again.\r\n[mitossh-n1] password for alice: "),
            Seen::Incorrect
        );
    }

    #[test]
    fn a_second_prompt_alone_counts() {
        let d = Dialect::new(BecomeMethod::Sudo, "n1");
        assert_eq!(
            d.scan("[mitossh-n1] password for a: \r\n[mitossh-n1] password for a: "),
            Seen::Prompts(2)
        );
    }

    #[test]
    fn sudo_rs_wraps_the_prompt() {
        let d = Dialect::new(BecomeMethod::Sudo, "n2");
        assert_eq!(
            d.scan("[sudo: [mitossh-n2] password for %p: ] Password: "),
            Seen::Prompts(1)
        );
        assert_eq!(
            d.scan("[sudo: authenticate] Password: \nsudo-rs: 1 incorrect password attempt\n"),
            Seen::Incorrect
        );
    }

    #[test]
    fn sudo_refusals_are_reported_verbatim() {
        let d = Dialect::new(BecomeMethod::Sudo, "n");
        assert_eq!(
            d.scan("mitossh-t1 is not in the sudoers file.  This incident will be reported.\r\n"),
            Seen::Refused(
                "mitossh-t1 is not in the sudoers file.  This incident will be reported.".into()
            )
        );
        assert_eq!(
            d.scan("sudo: a password is required\n"),
            Seen::Refused("sudo: a password is required".into())
        );
    }

    #[test]
    fn su_and_doas_prompts_and_failures() {
        let su = Dialect::new(BecomeMethod::Su, "x");
        assert_eq!(su.scan("Password: "), Seen::Prompts(1));
        assert_eq!(
            su.scan("Password: \r\nsu: Authentication failure\r\n"),
            Seen::Incorrect
        );
        assert_eq!(
            su.scan("su: user nobody2 does not exist or the user entry does not contain all the required fields\n"),
            Seen::Refused("su: user nobody2 does not exist or the user entry does not contain all the required fields".into())
        );
        let doas = Dialect::new(BecomeMethod::Doas, "x");
        assert_eq!(
            doas.scan("doas (mitossh-t1@vm) password: "),
            Seen::Prompts(1)
        );
        assert_eq!(
            doas.scan("doas (mitossh-t1@vm) password: \r\ndoas: Authentication failed\r\n"),
            Seen::Incorrect
        );
        assert_eq!(
            doas.scan("doas: Operation not permitted\n"),
            Seen::Refused("doas: Operation not permitted".into())
        );
    }

    #[test]
    fn whose_password_each_tool_wants() {
        let sudo = Dialect::new(BecomeMethod::Sudo, "n");
        let asked = "[mitossh-n] password for alice: ";
        assert_eq!(sudo.whose_password(asked, "root", "bob"), "alice");
        // rootpw / targetpw: sudo names root or the target.
        let asked = "[mitossh-n] password for root: ";
        assert_eq!(sudo.whose_password(asked, "www-data", "bob"), "root");
        // sudo-rs, if it leaves %p alone: the invoking user, sudo's default.
        let asked = "[sudo: [mitossh-n] password for %p: ] Password: ";
        assert_eq!(sudo.whose_password(asked, "root", "bob"), "bob");
        let asked = "[mitossh-n] password for \x1b[31mev\ril: ";
        assert_eq!(sudo.whose_password(asked, "root", "bob"), "[31mevil");
        let su = Dialect::new(BecomeMethod::Su, "n");
        assert_eq!(
            su.whose_password("Password: ", "postgres", "bob"),
            "postgres"
        );
        let doas = Dialect::new(BecomeMethod::Doas, "n");
        assert_eq!(
            doas.whose_password("doas (carol@vm) password: ", "root", "bob"),
            "carol"
        );
    }

    #[test]
    fn last_words_skip_prompts_and_control_characters() {
        let d = Dialect::new(BecomeMethod::Sudo, "n");
        assert_eq!(
            d.last_words("sudo: unable to resolve host\r\n[mitossh-n] password for a: \r\n"),
            "sudo: unable to resolve host"
        );
        assert_eq!(d.last_words(""), "sudo exited without saying why");
    }
}
