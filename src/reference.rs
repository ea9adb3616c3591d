//! `NAME@REQ` references: parsing, and choosing a version.
//!
//! - `NAME` picks the highest version that is not a pre-release;
//! - `NAME@MAJOR.MINOR.PATCH` (a full version, with or without a
//!   pre-release, and no operator) that exact version, as npm reads a
//!   pinned version: naming a full version means that version;
//! - `NAME@REQ` the highest version matching a semver requirement (`1`,
//!   `1.2`, `^1.2`, `~1.2.3`, `=2.0.0-beta.1`, `>=1, <3`, `*`; a partial
//!   version without an operator is a caret range, as in Cargo), with
//!   Cargo's rules for pre-releases (a pre-release only matches a
//!   comparator that names the same `major.minor.patch` with a
//!   pre-release);
//! - `NAME@LABEL`, where LABEL starts with a letter, the version carrying
//!   that label.

use std::fmt;
use std::str::FromStr;

use semver::{Version, VersionReq};

use crate::error::{Error, ErrorKind};

/// A parsed template reference such as `support/triage@^2`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reference {
    name: String,
    selector: Selector,
}

/// Which version of a template a [`Reference`] asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Selector {
    /// No `@`: the highest version that is not a pre-release.
    Latest,
    /// `@REQ`: the highest version matching the requirement.
    Req(VersionReq),
    /// `@LABEL`: the version carrying this label.
    Label(String),
}

impl Reference {
    /// Parses `NAME`, `NAME@REQ` or `NAME@LABEL`.
    ///
    /// # Errors
    /// [`ErrorKind::Reference`] when the name is not a valid template name
    /// (see [`validate_name`]) or the part after `@` is neither a label nor a
    /// semver requirement.
    pub fn parse(s: &str) -> Result<Reference, Error> {
        let (name, rest) = match s.split_once('@') {
            Some((name, rest)) => (name, Some(rest.trim())),
            None => (s, None),
        };
        let name = name.trim();
        validate_name(name).map_err(|msg| {
            Error::new(
                ErrorKind::Reference,
                format!("invalid reference `{s}`: {msg}"),
            )
        })?;
        let selector = match rest {
            None => Selector::Latest,
            Some("") => {
                return Err(Error::new(
                    ErrorKind::Reference,
                    format!("invalid reference `{s}`: nothing after `@`"),
                ));
            }
            Some(rest) if rest.starts_with(|c: char| c.is_ascii_alphabetic()) => {
                if !is_label(rest) {
                    return Err(Error::new(
                        ErrorKind::Reference,
                        format!(
                            "invalid reference `{s}`: `{rest}` is not a label (letters, digits, `_`, `-`, `.`, starting with a letter)"
                        ),
                    ));
                }
                Selector::Label(rest.to_owned())
            }
            // A full version with no operator: exactly that version.
            Some(rest) if Version::parse(rest).is_ok() => {
                Selector::Req(VersionReq::parse(&format!("={rest}")).map_err(|e| {
                    Error::new(
                        ErrorKind::Reference,
                        format!("invalid reference `{s}`: bad version `{rest}`"),
                    )
                    .with_source(e)
                })?)
            }
            Some(rest) => Selector::Req(VersionReq::parse(rest).map_err(|e| {
                Error::new(
                    ErrorKind::Reference,
                    format!("invalid reference `{s}`: bad version requirement `{rest}`"),
                )
                .with_source(e)
            })?),
        };
        Ok(Reference {
            name: name.to_owned(),
            selector,
        })
    }

    /// The template name (`support/triage`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The version selector.
    pub fn selector(&self) -> &Selector {
        &self.selector
    }

    /// Chooses among `candidates` (version and labels of each), returning
    /// the index of the chosen one.
    pub(crate) fn select<'a, I>(&self, candidates: I) -> Option<usize>
    where
        I: IntoIterator<Item = (&'a Version, &'a [String])>,
    {
        let mut best: Option<(usize, &Version)> = None;
        for (i, (version, labels)) in candidates.into_iter().enumerate() {
            let ok = match &self.selector {
                Selector::Latest => version.pre.is_empty(),
                Selector::Req(req) => req.matches(version),
                Selector::Label(label) => labels.iter().any(|l| l == label),
            };
            if ok && best.is_none_or(|(_, b)| version > b) {
                best = Some((i, version));
            }
        }
        best.map(|(i, _)| i)
    }
}

impl FromStr for Reference {
    type Err = Error;

    fn from_str(s: &str) -> Result<Reference, Error> {
        Reference::parse(s)
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name)?;
        match &self.selector {
            Selector::Latest => Ok(()),
            // A bare full version is exact; it is written as it was typed.
            Selector::Req(req)
                if req.comparators.len() == 1
                    && req.comparators[0].op == semver::Op::Exact
                    && req.comparators[0].patch.is_some() =>
            {
                write!(f, "@{}", req.to_string().trim_start_matches('='))
            }
            Selector::Req(req) => write!(f, "@{req}"),
            Selector::Label(label) => write!(f, "@{label}"),
        }
    }
}

/// Checks a template name: `/`-separated segments of ASCII letters, digits,
/// `_`, `-` and `.`, none empty, none starting with `.`. This rules out
/// `..`, absolute paths, backslashes, NUL and `@`.
///
/// # Errors
/// A short description of what is wrong.
pub fn validate_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("empty template name".into());
    }
    for segment in name.split('/') {
        if segment.is_empty() {
            return Err(format!("empty path segment in `{name}`"));
        }
        if segment.starts_with('.') {
            return Err(format!("segment `{segment}` starts with `.`"));
        }
        if let Some(c) = segment
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.')))
        {
            return Err(format!(
                "character {c:?} is not allowed in a template name (letters, digits, `_`, `-`, `.`, `/`)"
            ));
        }
    }
    Ok(())
}

/// Whether `s` is a valid label: an ASCII letter, then letters, digits,
/// `_`, `-` or `.`.
pub fn is_label(s: &str) -> bool {
    let mut chars = s.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
}

/// Whether `s` is an identifier (a letter or `_`, then letters, digits and
/// `_`, ASCII): a parameter, block or Jinja variable name.
pub(crate) fn is_identifier(s: &str) -> bool {
    let mut chars = s.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &str) -> Version {
        Version::parse(s).unwrap()
    }

    fn pick(reference: &str, versions: &[(&str, &[&str])]) -> Option<String> {
        let owned: Vec<(Version, Vec<String>)> = versions
            .iter()
            .map(|(ver, labels)| (v(ver), labels.iter().map(|l| l.to_string()).collect()))
            .collect();
        let r = Reference::parse(reference).unwrap();
        r.select(owned.iter().map(|(v, l)| (v, l.as_slice())))
            .map(|i| owned[i].0.to_string())
    }

    const SET: &[(&str, &[&str])] = &[
        ("1.0.0", &[]),
        ("1.2.0", &["production"]),
        ("1.2.5", &[]),
        ("2.0.0-beta.1", &["canary"]),
        ("1.10.0", &[]),
    ];

    #[test]
    fn bare_name_takes_highest_release() {
        assert_eq!(pick("t", SET).as_deref(), Some("1.10.0"));
    }

    #[test]
    fn requirements_follow_semver() {
        assert_eq!(pick("t@^1.2", SET).as_deref(), Some("1.10.0"));
        assert_eq!(pick("t@~1.2.0", SET).as_deref(), Some("1.2.5"));
        assert_eq!(pick("t@=1.0.0", SET).as_deref(), Some("1.0.0"));
        // A full version is exact; a partial one is a caret range.
        assert_eq!(pick("t@1.2.0", SET).as_deref(), Some("1.2.0"));
        assert_eq!(pick("t@1.2.1", SET), None);
        assert_eq!(pick("t@1.2", SET).as_deref(), Some("1.10.0"));
        assert_eq!(pick("t@1", SET).as_deref(), Some("1.10.0"));
        assert_eq!(pick("t@2.0.0-beta.1", SET).as_deref(), Some("2.0.0-beta.1"));
        assert_eq!(pick("t@>=1, <1.2", SET).as_deref(), Some("1.0.0"));
        assert_eq!(pick("t@^2", SET), None); // pre-release needs an explicit comparator
        assert_eq!(
            pick("t@=2.0.0-beta.1", SET).as_deref(),
            Some("2.0.0-beta.1")
        );
        assert_eq!(pick("t@^3", SET), None);
    }

    #[test]
    fn labels_pick_their_version() {
        assert_eq!(pick("t@production", SET).as_deref(), Some("1.2.0"));
        assert_eq!(pick("t@canary", SET).as_deref(), Some("2.0.0-beta.1"));
        assert_eq!(pick("t@missing", SET), None);
    }

    #[test]
    fn only_prereleases_means_no_latest() {
        assert_eq!(pick("t", &[("1.0.0-rc.1", &[])]), None);
    }

    #[test]
    fn names_are_checked() {
        for bad in [
            "", "../x", "/abs", "a//b", "a\\b", "a\0b", ".hidden", "a/./b", "sp ace",
        ] {
            assert!(Reference::parse(bad).is_err(), "{bad:?} should be rejected");
        }
        assert!(Reference::parse("support/triage-v2.x_y").is_ok());
    }

    #[test]
    fn bad_selectors_are_errors() {
        let err = Reference::parse("t@^x").unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Reference);
        assert!(err.to_string().contains("bad version requirement"), "{err}");
        assert!(Reference::parse("t@").is_err());
        assert!(Reference::parse("t@prod!").is_err());
    }

    #[test]
    fn display_round_trips() {
        for s in ["a/b", "a/b@^1.2", "a/b@production", "a/b@>=1, <3"] {
            let r = Reference::parse(s).unwrap();
            assert_eq!(Reference::parse(&r.to_string()).unwrap(), r);
        }
    }
}
