//! Key paths into a Compose file (`services.web.ports[0].target`), for error messages and
//! for the rules that depend on where a value sits.

use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq)]
enum Seg {
    Key(String),
    Index(usize),
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct KeyPath(Vec<Seg>);

impl KeyPath {
    pub fn root() -> Self {
        KeyPath(Vec::new())
    }

    pub fn key(&self, key: &str) -> Self {
        let mut segs = self.0.clone();
        segs.push(Seg::Key(key.to_owned()));
        KeyPath(segs)
    }

    pub fn index(&self, i: usize) -> Self {
        let mut segs = self.0.clone();
        segs.push(Seg::Index(i));
        KeyPath(segs)
    }

    /// Matches a pattern of keys where `*` is any key and `[]` any list index.
    pub fn matches(&self, pattern: &[&str]) -> bool {
        self.0.len() == pattern.len()
            && self.0.iter().zip(pattern).all(|(seg, pat)| match seg {
                Seg::Key(k) => *pat == "*" || pat == k,
                Seg::Index(_) => *pat == "[]",
            })
    }
}

impl fmt::Display for KeyPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, seg) in self.0.iter().enumerate() {
            match seg {
                Seg::Key(k) if i == 0 => f.write_str(k)?,
                Seg::Key(k) => write!(f, ".{k}")?,
                Seg::Index(n) => write!(f, "[{n}]")?,
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn displays_and_matches() {
        let p = KeyPath::root()
            .key("services")
            .key("web")
            .key("ports")
            .index(2);
        assert_eq!(p.to_string(), "services.web.ports[2]");
        assert!(p.matches(&["services", "*", "ports", "[]"]));
        assert!(!p.matches(&["services", "*", "ports"]));
        assert!(!p.matches(&["services", "*", "volumes", "[]"]));
    }
}
