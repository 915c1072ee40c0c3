//! What sudo, su and doas say on their terminal, and what it means: a password prompt, a
//! wrong password, a refusal. Pure functions over the transcript, so they can be tested
//! against the exact texts each tool (and sudo-rs) prints.

use crate::proto::BecomeMethod;

/// The verdict on a transcript so far.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Seen {
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
pub struct Dialect {
    method: BecomeMethod,
    /// Text that marks a prompt (our unique sudo prompt, or "password:").
    prompt: String,
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
    pub fn new(method: BecomeMethod, nonce: &str) -> Dialect {
        let prompt = match method {
            BecomeMethod::Sudo => sudo_prompt(nonce),
            BecomeMethod::Su | BecomeMethod::Doas => "password:".into(),
        };
        Dialect { method, prompt }
    }

    /// The text to pass to `sudo -p` (sudo prints it verbatim; sudo-rs wraps it).
    pub fn prompt(&self) -> &str {
        &self.prompt
    }

    /// Reads the transcript so far.
    pub fn scan(&self, transcript: &str) -> Seen {
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
            BecomeMethod::Sudo => transcript.matches(self.prompt.trim_end()).count(),
            BecomeMethod::Su | BecomeMethod::Doas => transcript
                .to_ascii_lowercase()
                .matches(&self.prompt)
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
    pub fn last_words(&self, transcript: &str) -> String {
        transcript
            .lines()
            .rev()
            .map(clean)
            .find(|l| {
                !l.is_empty()
                    && !l
                        .to_ascii_lowercase()
                        .contains(self.prompt.trim_end().to_ascii_lowercase().as_str())
            })
            .unwrap_or_else(|| format!("{} exited without saying why", self.method.name()))
    }
}

fn sudo_prompt(nonce: &str) -> String {
    format!("[mitossh-{nonce}] password: ")
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
        assert_eq!(d.prompt(), "[mitossh-n1] password: ");
        assert_eq!(d.scan(""), Seen::Nothing);
        assert_eq!(d.scan("[mitossh-n1] password: "), Seen::Prompts(1));
        // sudo 1.9's answer to a wrong password, then the prompt again.
        assert_eq!(
            d.scan("[mitossh-n1] password: \r\nSorry, try again.\r\n[mitossh-n1] password: "),
            Seen::Incorrect
        );
    }

    #[test]
    fn a_second_prompt_alone_counts() {
        let d = Dialect::new(BecomeMethod::Sudo, "n1");
        assert_eq!(
            d.scan("[mitossh-n1] password: \r\n[mitossh-n1] password: "),
            Seen::Prompts(2)
        );
    }

    #[test]
    fn sudo_rs_wraps_the_prompt() {
        let d = Dialect::new(BecomeMethod::Sudo, "n2");
        assert_eq!(
            d.scan("[sudo: [mitossh-n2] password: ] Password: "),
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
    fn last_words_skip_prompts_and_control_characters() {
        let d = Dialect::new(BecomeMethod::Sudo, "n");
        assert_eq!(
            d.last_words("sudo: unable to resolve host\r\n[mitossh-n] password: \r\n"),
            "sudo: unable to resolve host"
        );
        assert_eq!(d.last_words(""), "sudo exited without saying why");
    }
}
