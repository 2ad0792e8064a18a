//! Hostlist expressions, compatible with pdsh / Slurm / FreeIPMI syntax.
//!
//! `web[001-100,105].dc1,db[1-3]` expands to `web001.dc1 .. web100.dc1, web105.dc1, db1,
//! db2, db3`. Items are separated by commas or whitespace outside brackets; each item may
//! hold several bracket groups (the cartesian product is taken, leftmost slowest); a range
//! whose start has a leading zero keeps that width (`[08-10]` -> `08 09 10`). Expansion is
//! capped before anything is materialized, and every error points at the character that
//! caused it. [`collapse`] turns names back into the compact form for display, so that
//! `expand(collapse(names))` is the same set of names.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

/// What is wrong with a hostlist expression.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum HostlistErrorKind {
    /// A `[` with no matching `]`.
    UnclosedBracket,
    /// A `]` with no `[` before it.
    UnexpectedCloseBracket,
    /// A `[` inside a bracket group.
    NestedBracket,
    /// A character that does not belong in a bracket group.
    ExpectedDigit {
        /// The character found.
        found: char,
    },
    /// An empty range (`[]`, `[1,]`, `[-3]`).
    EmptyRange,
    /// A range whose end is below its start.
    DescendingRange {
        /// Range start.
        start: u64,
        /// Range end.
        end: u64,
    },
    /// A number too long to be a host index.
    NumberTooLong,
    /// An empty item (two separators in a row, or a leading/trailing comma).
    EmptyItem,
    /// The expression expands to more names than allowed.
    TooManyHosts {
        /// How many names it would expand to (saturating).
        count: u64,
        /// The configured cap.
        cap: usize,
    },
}

/// A rejected hostlist expression, with the character position (0-based) of the problem.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct HostlistError {
    /// The whole input.
    pub input: String,
    /// Character position of the problem (0-based).
    pub position: usize,
    /// What is wrong.
    pub kind: HostlistErrorKind,
}

impl HostlistError {
    /// The input with a caret under the offending character, for terminals.
    pub fn caret(&self) -> String {
        format!("{}\n{}^", self.input, " ".repeat(self.position))
    }
}

impl fmt::Display for HostlistError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "hostlist {:?}, position {}: ", self.input, self.position)?;
        match &self.kind {
            HostlistErrorKind::UnclosedBracket => write!(f, "'[' is never closed"),
            HostlistErrorKind::UnexpectedCloseBracket => write!(f, "']' without a matching '['"),
            HostlistErrorKind::NestedBracket => write!(f, "'[' inside a bracket group"),
            HostlistErrorKind::ExpectedDigit { found } => {
                write!(f, "expected a digit, ',' or '-' in a range, found {found:?}")
            }
            HostlistErrorKind::EmptyRange => write!(f, "empty range"),
            HostlistErrorKind::DescendingRange { start, end } => {
                write!(f, "range {start}-{end} goes down; write the smaller bound first")
            }
            HostlistErrorKind::NumberTooLong => write!(f, "number longer than 18 digits"),
            HostlistErrorKind::EmptyItem => write!(f, "empty item"),
            HostlistErrorKind::TooManyHosts { count, cap } => {
                write!(f, "expands to {count} names; the limit is {cap}")
            }
        }
    }
}

/// Default cap on the number of names one expression may expand to.
pub const DEFAULT_EXPANSION_CAP: usize = 100_000;

#[derive(Debug, Clone, PartialEq, Eq)]
struct Range {
    start: u64,
    end: u64,
    width: usize,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Text(String),
    Group(Vec<Range>),
}

#[derive(Debug)]
struct Item {
    parts: Vec<Part>,
}

impl Item {
    fn count(&self) -> u64 {
        self.parts.iter().fold(1u64, |acc, p| match p {
            Part::Text(_) => acc,
            Part::Group(ranges) => {
                let n = ranges.iter().fold(0u64, |s, r| s.saturating_add(r.end - r.start + 1));
                acc.saturating_mul(n)
            }
        })
    }

    fn expand_into(&self, out: &mut Vec<String>) {
        let mut acc = vec![String::new()];
        for part in &self.parts {
            match part {
                Part::Text(t) => acc.iter_mut().for_each(|s| s.push_str(t)),
                Part::Group(ranges) => {
                    let mut next = Vec::with_capacity(acc.len());
                    for prefix in &acc {
                        for r in ranges {
                            for v in r.start..=r.end {
                                next.push(format!("{prefix}{v:0width$}", width = r.width));
                            }
                        }
                    }
                    acc = next;
                }
            }
        }
        out.extend(acc);
    }
}

struct Parser<'a> {
    input: &'a str,
    chars: Vec<char>,
    pos: usize,
}

impl<'a> Parser<'a> {
    fn err(&self, position: usize, kind: HostlistErrorKind) -> HostlistError {
        HostlistError { input: self.input.to_string(), position, kind }
    }

    fn is_separator(c: char) -> bool {
        c == ',' || c.is_whitespace()
    }

    fn items(&mut self) -> Result<Vec<Item>, HostlistError> {
        let mut items = Vec::new();
        // Leading/trailing whitespace is fine; commas must separate non-empty items.
        while self.pos < self.chars.len() {
            while self.pos < self.chars.len() && self.chars[self.pos].is_whitespace() {
                self.pos += 1;
            }
            if self.pos >= self.chars.len() {
                break;
            }
            if self.chars[self.pos] == ',' {
                return Err(self.err(self.pos, HostlistErrorKind::EmptyItem));
            }
            items.push(self.item()?);
            while self.pos < self.chars.len() && self.chars[self.pos].is_whitespace() {
                self.pos += 1;
            }
            if self.pos < self.chars.len() && self.chars[self.pos] == ',' {
                let comma = self.pos;
                self.pos += 1;
                let rest_blank = self.chars[self.pos..].iter().all(|c| c.is_whitespace());
                if rest_blank {
                    return Err(self.err(comma, HostlistErrorKind::EmptyItem));
                }
            }
        }
        Ok(items)
    }

    fn item(&mut self) -> Result<Item, HostlistError> {
        let mut parts = Vec::new();
        let mut text = String::new();
        while self.pos < self.chars.len() {
            let c = self.chars[self.pos];
            if Self::is_separator(c) {
                break;
            }
            match c {
                '[' => {
                    if !text.is_empty() {
                        parts.push(Part::Text(std::mem::take(&mut text)));
                    }
                    parts.push(Part::Group(self.group()?));
                }
                ']' => return Err(self.err(self.pos, HostlistErrorKind::UnexpectedCloseBracket)),
                _ => {
                    text.push(c);
                    self.pos += 1;
                }
            }
        }
        if !text.is_empty() {
            parts.push(Part::Text(text));
        }
        Ok(Item { parts })
    }

    /// Parses `[ranges]` starting at the `[`.
    fn group(&mut self) -> Result<Vec<Range>, HostlistError> {
        let open = self.pos;
        self.pos += 1;
        let mut ranges = Vec::new();
        loop {
            let (start, start_txt) = self.number(open)?;
            let mut end = start;
            let mut end_txt = start_txt.clone();
            if self.peek(open)? == '-' {
                self.pos += 1;
                (end, end_txt) = self.number(open)?;
            }
            if end < start {
                return Err(self.err(self.pos - 1, HostlistErrorKind::DescendingRange { start, end }));
            }
            let padded = |t: &str| t.len() > 1 && t.starts_with('0');
            let width = if padded(&start_txt) {
                start_txt.len()
            } else if padded(&end_txt) {
                end_txt.len()
            } else {
                0
            };
            ranges.push(Range { start, end, width });
            match self.peek(open)? {
                ',' => self.pos += 1,
                ']' => {
                    self.pos += 1;
                    return Ok(ranges);
                }
                '[' => return Err(self.err(self.pos, HostlistErrorKind::NestedBracket)),
                found => return Err(self.err(self.pos, HostlistErrorKind::ExpectedDigit { found })),
            }
        }
    }

    fn peek(&self, open: usize) -> Result<char, HostlistError> {
        self.chars.get(self.pos).copied().ok_or_else(|| self.err(open, HostlistErrorKind::UnclosedBracket))
    }

    fn number(&mut self, open: usize) -> Result<(u64, String), HostlistError> {
        let begin = self.pos;
        while self.pos < self.chars.len() && self.chars[self.pos].is_ascii_digit() {
            self.pos += 1;
        }
        if self.pos == begin {
            return match self.peek(open)? {
                ',' | ']' | '-' => Err(self.err(self.pos, HostlistErrorKind::EmptyRange)),
                '[' => Err(self.err(self.pos, HostlistErrorKind::NestedBracket)),
                found => Err(self.err(self.pos, HostlistErrorKind::ExpectedDigit { found })),
            };
        }
        if self.pos - begin > 18 {
            return Err(self.err(begin, HostlistErrorKind::NumberTooLong));
        }
        let txt: String = self.chars[begin..self.pos].iter().collect();
        let value = txt.parse::<u64>().map_err(|_| self.err(begin, HostlistErrorKind::NumberTooLong))?;
        Ok((value, txt))
    }
}

/// Expands `expr` into names, in the written order (duplicates kept; validation reports
/// them). Fails without allocating the names if there would be more than `cap`.
pub fn expand(expr: &str, cap: usize) -> Result<Vec<String>, HostlistError> {
    let mut parser = Parser { input: expr, chars: expr.chars().collect(), pos: 0 };
    let items = parser.items()?;
    let total = items.iter().fold(0u64, |acc, it| acc.saturating_add(it.count()));
    if total > cap as u64 {
        return Err(HostlistError {
            input: expr.to_string(),
            position: 0,
            kind: HostlistErrorKind::TooManyHosts { count: total, cap },
        });
    }
    let mut out = Vec::with_capacity(total as usize);
    for item in &items {
        item.expand_into(&mut out);
    }
    Ok(out)
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Seg {
    Text(String),
    Num(String),
}

fn segments(name: &str) -> Vec<Seg> {
    let mut segs: Vec<Seg> = Vec::new();
    let mut cur = String::new();
    let mut digits = false;
    for c in name.chars() {
        let d = c.is_ascii_digit();
        if !cur.is_empty() && d != digits {
            segs.push(if digits { Seg::Num(std::mem::take(&mut cur)) } else { Seg::Text(std::mem::take(&mut cur)) });
        }
        digits = d;
        cur.push(c);
    }
    if !cur.is_empty() {
        segs.push(if digits { Seg::Num(cur) } else { Seg::Text(cur) });
    }
    // Digit runs too long to be indices are plain text.
    segs.into_iter()
        .map(|s| match s {
            Seg::Num(n) if n.len() > 18 => Seg::Text(n),
            other => other,
        })
        .collect()
}

/// The width a range written starting with `s` pads to (0: no padding).
fn pad_of(s: &str) -> usize {
    if s.len() > 1 && s.starts_with('0') { s.len() } else { 0 }
}

/// Renders sorted, distinct numeric strings as bracket ranges: `1-3,7,09-11`.
fn render_ranges(nums: &[String]) -> String {
    let mut sorted: Vec<(u64, &String)> = nums.iter().map(|s| (s.parse::<u64>().unwrap_or(u64::MAX), s)).collect();
    sorted.sort_by(|a, b| a.0.cmp(&b.0).then(a.1.len().cmp(&b.1.len())).then(a.1.cmp(b.1)));
    let mut out = Vec::new();
    let mut i = 0;
    while i < sorted.len() {
        let start_txt = sorted[i].1;
        let pad = pad_of(start_txt);
        let mut j = i;
        while j + 1 < sorted.len() {
            let (v, txt) = sorted[j + 1];
            if v == sorted[j].0 + 1 && *txt == format!("{v:0pad$}") {
                j += 1;
            } else {
                break;
            }
        }
        if j == i {
            out.push(start_txt.clone());
        } else {
            out.push(format!("{start_txt}-{}", sorted[j].1));
        }
        i = j + 1;
    }
    out.join(",")
}

/// Collapses names into a compact hostlist expression (sorted, duplicates dropped), so that
/// [`expand`] of the result gives back the same set of names.
pub fn collapse<S: AsRef<str>>(names: &[S]) -> String {
    let distinct: BTreeSet<&str> = names.iter().map(|s| s.as_ref()).collect();
    // Group by shape: the text segments, with each number replaced by a slot.
    let mut shapes: BTreeMap<Vec<Option<String>>, Vec<Vec<Seg>>> = BTreeMap::new();
    for name in &distinct {
        let segs = segments(name);
        let shape = segs
            .iter()
            .map(|s| match s {
                Seg::Text(t) => Some(t.clone()),
                Seg::Num(_) => None,
            })
            .collect();
        shapes.entry(shape).or_default().push(segs);
    }
    let mut items: Vec<(String, String)> = Vec::new(); // (sort key, rendered)
    for (shape, members) in shapes {
        let slots: Vec<usize> = shape.iter().enumerate().filter(|(_, s)| s.is_none()).map(|(i, _)| i).collect();
        if slots.is_empty() {
            for m in members {
                let name = render_plain(&m);
                items.push((name.clone(), name));
            }
            continue;
        }
        // Vary the slot that leaves the fewest groups (ties: the rightmost, so racks stay
        // outside and nodes inside the brackets: `r1n[1-2]`).
        let group_by = |slot: usize| {
            let mut groups: BTreeMap<Vec<Seg>, Vec<String>> = BTreeMap::new();
            for m in &members {
                let mut key = m.clone();
                let num = match std::mem::replace(&mut key[slot], Seg::Num(String::new())) {
                    Seg::Num(n) => n,
                    Seg::Text(t) => t,
                };
                groups.entry(key).or_default().push(num);
            }
            groups
        };
        let best = slots
            .iter()
            .map(|&s| (group_by(s).len(), std::cmp::Reverse(s)))
            .min()
            .map(|(_, s)| s.0)
            .unwrap_or(slots[0]);
        for (key, nums) in group_by(best) {
            let rendered = if nums.len() == 1 {
                let mut full = key.clone();
                full[best] = Seg::Num(nums[0].clone());
                render_plain(&full)
            } else {
                let mut s = String::new();
                for (i, seg) in key.iter().enumerate() {
                    if i == best {
                        s.push('[');
                        s.push_str(&render_ranges(&nums));
                        s.push(']');
                    } else {
                        s.push_str(seg_str(seg));
                    }
                }
                s
            };
            let mut first = key.clone();
            first[best] = Seg::Num(nums.iter().min().cloned().unwrap_or_default());
            items.push((render_plain(&first), rendered));
        }
    }
    items.sort();
    items.into_iter().map(|(_, r)| r).collect::<Vec<_>>().join(",")
}

fn seg_str(s: &Seg) -> &str {
    match s {
        Seg::Text(t) | Seg::Num(t) => t,
    }
}

fn render_plain(segs: &[Seg]) -> String {
    segs.iter().map(seg_str).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn check(expr: &str, expected: &[&str]) {
        assert_eq!(expand(expr, 1000).unwrap(), expected, "expr {expr:?}");
    }

    fn check_err(expr: &str, expected: &str) {
        let e = expand(expr, 1000).unwrap_err();
        assert_eq!(e.to_string(), expected, "expr {expr:?}");
    }

    #[test]
    fn expands_pdsh_and_slurm_forms() {
        check("web1", &["web1"]);
        check("web[1-3]", &["web1", "web2", "web3"]);
        check("web[001-003,105].dc1", &["web001.dc1", "web002.dc1", "web003.dc1", "web105.dc1"]);
        check("n[08-10]", &["n08", "n09", "n10"]);
        check("n[8-10]", &["n8", "n9", "n10"]);
        check("n[098-100]", &["n098", "n099", "n100"]);
        check("r[1-2]n[1-2]", &["r1n1", "r1n2", "r2n1", "r2n2"]);
        check("a,b[1-2] c", &["a", "b1", "b2", "c"]);
        check("  a  ", &["a"]);
        check("", &[]);
        check("[1-2]x", &["1x", "2x"]);
    }

    #[test]
    fn errors_point_at_the_offending_character() {
        check_err("web[1-3", "hostlist \"web[1-3\", position 3: '[' is never closed");
        check_err("web1-3]", "hostlist \"web1-3]\", position 6: ']' without a matching '['");
        check_err("web[1-x]", "hostlist \"web[1-x]\", position 6: expected a digit, ',' or '-' in a range, found 'x'");
        check_err("web[]", "hostlist \"web[]\", position 4: empty range");
        check_err("web[1,]", "hostlist \"web[1,]\", position 6: empty range");
        check_err("web[5-2]", "hostlist \"web[5-2]\", position 6: range 5-2 goes down; write the smaller bound first");
        check_err("web[1[2]]", "hostlist \"web[1[2]]\", position 5: '[' inside a bracket group");
        check_err("a,,b", "hostlist \"a,,b\", position 2: empty item");
        check_err("a,", "hostlist \"a,\", position 1: empty item");
        check_err(",a", "hostlist \",a\", position 0: empty item");
        check_err(
            "n[1234567890123456789]",
            "hostlist \"n[1234567890123456789]\", position 2: number longer than 18 digits",
        );
        let e = expand("web[1-3", 10).unwrap_err();
        assert_eq!(e.caret(), "web[1-3\n   ^");
    }

    #[test]
    fn cap_is_checked_before_materializing() {
        let e = expand("n[1-1000000000][1-1000000000]", 100_000).unwrap_err();
        assert_eq!(e.kind, HostlistErrorKind::TooManyHosts { count: 1_000_000_000_000_000_000, cap: 100_000 });
        assert_eq!(expand("n[1-100]", 100).unwrap().len(), 100);
        assert!(expand("n[1-101]", 100).is_err());
        assert!(expand("n[1-50],m[1-51]", 100).is_err());
    }

    #[test]
    fn collapse_is_compact_and_keeps_padding() {
        let names = expand("web[001-100,105].dc1,db[1-3],lb", 1000).unwrap();
        assert_eq!(collapse(&names), "db[1-3],lb,web[001-100,105].dc1");
        assert_eq!(collapse(&["n8", "n9", "n10", "n12"]), "n[8-10,12]");
        assert_eq!(collapse(&["n098", "n099", "n100"]), "n[098-100]");
        assert_eq!(collapse(&["a1", "a1", "b"]), "a1,b");
        assert_eq!(collapse(&["r1n1", "r1n2", "r2n1", "r2n2"]), "r1n[1-2],r2n[1-2]");
        assert_eq!(collapse::<&str>(&[]), "");
    }

    fn name_strategy() -> impl Strategy<Value = String> {
        // Small alphabet so that shapes collide and ranges form.
        proptest::string::string_regex("[ab]{0,2}(0{0,2}[0-9]{1,3})?(\\.[a-c]{1,2}[0-9]?)?")
            .unwrap()
            .prop_filter("non-empty", |s| !s.is_empty())
    }

    proptest! {
        #[test]
        fn expand_of_collapse_is_the_same_set(names in proptest::collection::vec(name_strategy(), 0..60)) {
            let collapsed = collapse(&names);
            let back: BTreeSet<String> = expand(&collapsed, 100_000).unwrap().into_iter().collect();
            let orig: BTreeSet<String> = names.into_iter().collect();
            prop_assert_eq!(back, orig, "collapsed: {}", collapsed);
        }

        #[test]
        fn collapse_of_expand_is_a_fixed_point(a in 0u64..200, len in 0u64..50, pad in 0usize..4) {
            let expr = format!("h[{a:0pad$}-{}].x", a + len);
            let names = expand(&expr, 100_000).unwrap();
            let once = collapse(&names);
            let twice = collapse(&expand(&once, 100_000).unwrap());
            prop_assert_eq!(once, twice);
        }

        #[test]
        fn expand_never_panics(s in "\\PC{0,40}") {
            let _ = expand(&s, 10_000);
        }
    }
}
