//! The table-driven checker behind every name validator.
//!
//! Each name kind is a [`Rule`]: a length range in characters, a character
//! class for the first, middle and last character, and whether `--` is
//! banned. Hand-written classes keep the crate free of a regex engine and let
//! errors point at the exact character.

use super::{NameError, NameKind};

/// A name rule: length bounds plus per-position character classes.
pub(super) struct Rule {
    kind: NameKind,
    min: usize,
    max: usize,
    start: fn(char) -> bool,
    body: fn(char) -> bool,
    end: fn(char) -> bool,
    no_double_hyphen: bool,
}

impl Rule {
    /// Checks `s` against the rule.
    ///
    /// Every valid name is ASCII, so a valid one is accepted in one pass
    /// over its bytes, with the rule's classes inlined (names are checked
    /// on every call, at some 0.2 µs a call before this pass); anything
    /// else goes through [`explain`](Self::explain), which names the fault.
    /// The pass is always inlined, and the validators are `#[inline]`, so a
    /// caller in another crate checks against the constant rule directly:
    /// the classes become inline tests rather than a call through a
    /// function pointer per byte (a service and a method name: 70 to 80 ns
    /// before, 30 to 40 after, in a throwaway loop; see docs/performance.md).
    #[inline]
    pub(super) fn check(&self, s: &str) -> Result<(), NameError> {
        if self.accepts(s.as_bytes()) {
            Ok(())
        } else {
            self.explain(s)
        }
    }

    /// Whether `bytes` is a valid name: the same rule as
    /// [`explain`](Self::explain), for ASCII (a non-ASCII byte never passes
    /// a class, so non-ASCII names are refused here and explained there).
    #[inline(always)]
    fn accepts(&self, bytes: &[u8]) -> bool {
        let (Some(&first), Some(&last)) = (bytes.first(), bytes.last()) else {
            return false;
        };
        if bytes.len() < self.min || bytes.len() > self.max || !bytes.is_ascii() {
            return false;
        }
        if !(self.start)(char::from(first)) || (bytes.len() > 1 && !(self.end)(char::from(last))) {
            return false;
        }
        let body_ok = bytes[1..].iter().all(|&b| (self.body)(char::from(b)));
        body_ok && !(self.no_double_hyphen && bytes.windows(2).any(|w| w == b"--"))
    }

    /// The fault in a name [`accepts`](Self::accepts) refused, in characters.
    #[cold]
    #[inline(never)]
    fn explain(&self, s: &str) -> Result<(), NameError> {
        let kind = self.kind;
        if s.is_empty() {
            return Err(NameError::Empty { kind });
        }
        let len = s.chars().count();
        if len < self.min {
            return Err(NameError::TooShort {
                kind,
                min: self.min,
            });
        }
        if len > self.max {
            return Err(NameError::TooLong {
                kind,
                max: self.max,
            });
        }
        let mut prev = None;
        for (position, ch) in s.chars().enumerate() {
            if position == 0 {
                if !(self.start)(ch) {
                    return Err(NameError::InvalidStart { kind, ch });
                }
            } else if !(self.body)(ch) {
                return Err(NameError::InvalidChar { kind, ch, position });
            }
            if self.no_double_hyphen && ch == '-' && prev == Some('-') {
                return Err(NameError::DoubleHyphen { kind });
            }
            prev = Some(ch);
        }
        if let Some(ch) = prev
            && len > 1
            && !(self.end)(ch)
        {
            return Err(NameError::InvalidEnd { kind, ch });
        }
        Ok(())
    }
}

fn lower_alpha(c: char) -> bool {
    c.is_ascii_lowercase()
}

fn lower_alnum(c: char) -> bool {
    c.is_ascii_lowercase() || c.is_ascii_digit()
}

fn lower_alnum_hyphen(c: char) -> bool {
    lower_alnum(c) || c == '-'
}

fn lower_alnum_underscore_hyphen(c: char) -> bool {
    lower_alnum(c) || c == '_' || c == '-'
}

fn alpha(c: char) -> bool {
    c.is_ascii_alphabetic()
}

fn alnum(c: char) -> bool {
    c.is_ascii_alphanumeric()
}

fn alnum_underscore(c: char) -> bool {
    alnum(c) || c == '_'
}

fn alnum_underscore_hyphen(c: char) -> bool {
    alnum(c) || c == '_' || c == '-'
}

fn any(_: char) -> bool {
    true
}

pub(super) const SERVICE: Rule = Rule {
    kind: NameKind::Service,
    min: 3,
    max: 64,
    start: lower_alpha,
    body: lower_alnum_hyphen,
    end: lower_alnum,
    no_double_hyphen: true,
};

pub(super) const INSTANCE: Rule = Rule {
    kind: NameKind::Instance,
    min: 1,
    max: 128,
    start: alnum,
    body: alnum_underscore_hyphen,
    end: any,
    no_double_hyphen: false,
};

pub(super) const METHOD: Rule = Rule {
    kind: NameKind::Method,
    min: 1,
    max: 128,
    start: alpha,
    body: alnum_underscore,
    end: any,
    no_double_hyphen: false,
};

pub(super) const GROUP: Rule = Rule {
    kind: NameKind::Group,
    max: 64,
    ..INSTANCE
};

pub(super) const DOMAIN: Rule = Rule {
    kind: NameKind::Domain,
    min: 1,
    max: 64,
    start: lower_alpha,
    body: lower_alnum_underscore_hyphen,
    end: any,
    no_double_hyphen: false,
};

pub(super) const ACTION: Rule = Rule {
    kind: NameKind::Action,
    ..DOMAIN
};

pub(super) const COMMAND: Rule = Rule {
    kind: NameKind::Command,
    ..METHOD
};

#[cfg(test)]
mod tests {
    use super::*;

    /// Every string of up to four characters over an alphabet with one
    /// character of each class (and one outside ASCII): the one-pass check
    /// accepts exactly the names the explaining check accepts.
    #[test]
    fn the_fast_pass_agrees_with_the_explanation() {
        let alphabet = ['a', 'Z', '7', '-', '_', '.', 'é'];
        let rules = [SERVICE, INSTANCE, METHOD, GROUP, DOMAIN, ACTION, COMMAND];
        let mut names = vec![String::new()];
        let mut last = vec![String::new()];
        for _ in 0..4 {
            last = last
                .iter()
                .flat_map(|s| alphabet.iter().map(move |c| format!("{s}{c}")))
                .collect();
            names.extend(last.iter().cloned());
        }
        // Bounds: the shortest and longest names each rule allows, and one over.
        for rule in &rules {
            for len in [rule.min, rule.max, rule.max + 1] {
                names.push(format!("a{}", "b".repeat(len.saturating_sub(1))));
            }
        }
        for rule in &rules {
            for name in &names {
                assert_eq!(
                    rule.accepts(name.as_bytes()),
                    rule.explain(name).is_ok(),
                    "{:?} on {name:?}",
                    rule.kind
                );
            }
        }
    }
}
