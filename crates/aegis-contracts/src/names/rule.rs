//! The table-driven checker behind every name validator.
//!
//! Each name kind is a [`Rule`]: a length range in characters, a character
//! [`Class`] for the first, middle and last character, and whether `--` is
//! banned. Hand-written classes keep the crate free of a regex engine and let
//! errors point at the exact character. A class is a set of bits looked up
//! in one table of the ASCII characters, so checking a byte is a load and a
//! mask.

use super::{NameError, NameKind};

/// A name rule: length bounds plus per-position character classes.
pub(super) struct Rule {
    kind: NameKind,
    min: usize,
    max: usize,
    start: Class,
    body: Class,
    end: Class,
    no_double_hyphen: bool,
}

/// A set of characters: the kinds of character it holds, as bits of
/// [`KINDS`]. [`Class::ANY`] holds every character: in the one-pass check,
/// where every valid name is ASCII, every ASCII one.
#[derive(Clone, Copy, PartialEq, Eq)]
struct Class(u8);

const LOWER: u8 = 1;
const UPPER: u8 = 1 << 1;
const DIGIT: u8 = 1 << 2;
const HYPHEN: u8 = 1 << 3;
const UNDERSCORE: u8 = 1 << 4;
/// Set for every ASCII character, so [`Class::ANY`] holds them all.
const ASCII: u8 = 1 << 5;

/// The kind bits of every byte; a byte of a character beyond ASCII has
/// none, so no class holds it in the one-pass check.
static KINDS: [u8; 256] = {
    let mut kinds = [0u8; 256];
    let mut b = 0;
    while b < 128 {
        kinds[b] = ASCII
            | match b as u8 {
                b'a'..=b'z' => LOWER,
                b'A'..=b'Z' => UPPER,
                b'0'..=b'9' => DIGIT,
                b'-' => HYPHEN,
                b'_' => UNDERSCORE,
                _ => 0,
            };
        b += 1;
    }
    kinds
};

impl Class {
    const ANY: Class = Class(ASCII);
    const LOWER_ALPHA: Class = Class(LOWER);
    const LOWER_ALNUM: Class = Class(LOWER | DIGIT);
    const LOWER_ALNUM_HYPHEN: Class = Class(LOWER | DIGIT | HYPHEN);
    const LOWER_ALNUM_UNDERSCORE_HYPHEN: Class = Class(LOWER | DIGIT | UNDERSCORE | HYPHEN);
    const ALPHA: Class = Class(LOWER | UPPER);
    const ALNUM: Class = Class(LOWER | UPPER | DIGIT);
    const ALNUM_UNDERSCORE: Class = Class(LOWER | UPPER | DIGIT | UNDERSCORE);
    const ALNUM_UNDERSCORE_HYPHEN: Class = Class(LOWER | UPPER | DIGIT | UNDERSCORE | HYPHEN);

    /// Whether the class holds byte `b` as a character of its own: never
    /// a byte of a character beyond ASCII.
    #[inline(always)]
    fn holds_byte(self, b: u8) -> bool {
        KINDS[usize::from(b)] & self.0 != 0
    }

    /// Whether the class holds `c`.
    fn holds(self, c: char) -> bool {
        self == Class::ANY || (c.is_ascii() && self.holds_byte(c as u8))
    }
}

impl Rule {
    /// Checks `s` against the rule.
    ///
    /// Every valid name is ASCII, so a valid one is accepted in one pass
    /// over its bytes, a table lookup per byte (names are checked on every
    /// call); anything else goes through [`explain`](Self::explain), which
    /// names the fault. Classes were functions called through a pointer
    /// per byte before: 528 instructions a call to check a call's names
    /// then, counted by callgrind in `bench rpc` (docs/performance.md).
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
        let (Some((&first, rest)), Some(&last)) = (bytes.split_first(), bytes.last()) else {
            return false;
        };
        if bytes.len() < self.min || bytes.len() > self.max {
            return false;
        }
        if !self.start.holds_byte(first) || (!rest.is_empty() && !self.end.holds_byte(last)) {
            return false;
        }
        let mut hyphen_before = false;
        for &b in rest {
            let kinds = KINDS[usize::from(b)];
            if kinds & self.body.0 == 0 {
                return false;
            }
            let hyphen = kinds & HYPHEN != 0;
            if self.no_double_hyphen && hyphen && hyphen_before {
                return false;
            }
            hyphen_before = hyphen;
        }
        // The first character is no hyphen in any rule that bans `--`.
        true
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
                if !self.start.holds(ch) {
                    return Err(NameError::InvalidStart { kind, ch });
                }
            } else if !self.body.holds(ch) {
                return Err(NameError::InvalidChar { kind, ch, position });
            }
            if self.no_double_hyphen && ch == '-' && prev == Some('-') {
                return Err(NameError::DoubleHyphen { kind });
            }
            prev = Some(ch);
        }
        if let Some(ch) = prev
            && len > 1
            && !self.end.holds(ch)
        {
            return Err(NameError::InvalidEnd { kind, ch });
        }
        Ok(())
    }
}

pub(super) const SERVICE: Rule = Rule {
    kind: NameKind::Service,
    min: 3,
    max: 64,
    start: Class::LOWER_ALPHA,
    body: Class::LOWER_ALNUM_HYPHEN,
    end: Class::LOWER_ALNUM,
    no_double_hyphen: true,
};

pub(super) const INSTANCE: Rule = Rule {
    kind: NameKind::Instance,
    min: 1,
    max: 128,
    start: Class::ALNUM,
    body: Class::ALNUM_UNDERSCORE_HYPHEN,
    end: Class::ANY,
    no_double_hyphen: false,
};

pub(super) const METHOD: Rule = Rule {
    kind: NameKind::Method,
    min: 1,
    max: 128,
    start: Class::ALPHA,
    body: Class::ALNUM_UNDERSCORE,
    end: Class::ANY,
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
    start: Class::LOWER_ALPHA,
    body: Class::LOWER_ALNUM_UNDERSCORE_HYPHEN,
    end: Class::ANY,
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
