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
    pub(super) fn check(&self, s: &str) -> Result<(), NameError> {
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
