//! `.env` files and a service's `env_file`s, read as docker compose reads them:
//! `KEY=VALUE` lines, `#` comments, an optional `export ` in front, values in single quotes
//! (literal), double quotes (escapes, may span lines) or bare (trailing ` # comment`
//! dropped, whitespace trimmed). Bare and double-quoted values are interpolated from the
//! variables above them in the file, then from the environment. A line with a key and no
//! `=` takes the variable from the environment, or is left out when it is not set there.

use crate::interpolate::substitute;
use std::collections::BTreeSet;

/// A problem on a line of the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct DotenvError {
    pub line: usize,
    pub message: String,
}

/// The variables of a file in order. `env` looks a variable up in the environment.
pub(crate) fn parse(
    text: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Vec<(String, String)>, DotenvError> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut vars: Vec<(String, String)> = Vec::new();
    let mut lines = text.split('\n').enumerate().peekable();
    while let Some((index, raw)) = lines.next() {
        let line_no = index + 1;
        let err = |message: String| DotenvError {
            line: line_no,
            message,
        };
        let line = raw.trim_end_matches('\r').trim_start();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let line = line
            .strip_prefix("export ")
            .map(str::trim_start)
            .unwrap_or(line);
        let (key, rest) = match line.split_once('=') {
            Some((k, v)) => (k.trim_end(), Some(v)),
            None => (line.trim_end(), None),
        };
        if !valid_key(key) {
            return Err(err(format!(
                "invalid variable name {key:?}: expected KEY=VALUE"
            )));
        }
        let Some(rest) = rest else {
            if let Some(v) = env(key) {
                vars.push((key.to_owned(), v));
            }
            continue;
        };
        let raw_rest = rest;
        let rest = rest.trim_start_matches([' ', '\t']);
        let lookup = |name: &str| {
            vars.iter()
                .rev()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.clone())
                .or_else(|| env(name))
        };
        let mut unset = BTreeSet::new();
        let value = if let Some(body) = rest.strip_prefix('\'') {
            let mut body = body.to_owned();
            loop {
                if let Some(end) = body.find('\'') {
                    body.truncate(end);
                    break body;
                }
                match lines.next() {
                    Some((_, next)) => {
                        body.push('\n');
                        body.push_str(next.trim_end_matches('\r'));
                    }
                    None => return Err(err("unterminated single-quoted value".to_owned())),
                }
            }
        } else if let Some(body) = rest.strip_prefix('"') {
            let mut body = body.to_owned();
            let raw_value = loop {
                if let Some(end) = closing_double_quote(&body) {
                    body.truncate(end);
                    break body;
                }
                match lines.next() {
                    Some((_, next)) => {
                        body.push('\n');
                        body.push_str(next.trim_end_matches('\r'));
                    }
                    None => return Err(err("unterminated double-quoted value".to_owned())),
                }
            };
            let unescaped = unescape(&raw_value);
            substitute(&unescaped, &lookup, &mut unset).map_err(|e| err(e.message(&unescaped)))?
        } else {
            let bare = strip_comment(raw_rest).trim_matches([' ', '\t']);
            substitute(bare, &lookup, &mut unset).map_err(|e| err(e.message(bare)))?
        };
        vars.push((key.to_owned(), value));
    }
    Ok(vars)
}

fn valid_key(key: &str) -> bool {
    let mut chars = key.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}

/// The index of the first `"` not escaped by a backslash.
fn closing_double_quote(s: &str) -> Option<usize> {
    let mut escaped = false;
    for (i, c) in s.char_indices() {
        match c {
            '\\' if !escaped => escaped = true,
            '"' if !escaped => return Some(i),
            _ => escaped = false,
        }
    }
    None
}

fn unescape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('n') => out.push('\n'),
            Some('r') => out.push('\r'),
            Some('t') => out.push('\t'),
            Some('\\') => out.push('\\'),
            Some('"') => out.push('"'),
            // `\$` stays an escaped dollar for the interpolation that follows.
            Some('$') => out.push_str("$$"),
            Some(other) => {
                out.push('\\');
                out.push(other);
            }
            None => out.push('\\'),
        }
    }
    out
}

/// A bare value ends at a `#` that follows whitespace.
fn strip_comment(s: &str) -> &str {
    let bytes = s.as_bytes();
    for (i, b) in bytes.iter().enumerate() {
        if *b == b'#' && i > 0 && (bytes[i - 1] == b' ' || bytes[i - 1] == b'\t') {
            return &s[..i];
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(k: &str) -> Option<String> {
        match k {
            "HOME" => Some("/home/me".into()),
            "FROM_ENV" => Some("env".into()),
            _ => None,
        }
    }

    #[test]
    fn reads_the_forms_compose_reads() {
        let text = "\u{feff}# comment\n\nA=1\nexport B = two words  \nC='single $A # not a comment'\nD=\"dq \\\"x\\\" \\n $A\"\nE=bare # comment\nF=#not-a-comment\nG=${A}-${HOME}\nFROM_ENV\nMISSING\nH=\"multi\nline\"\nI=\nJ='a\nb'\nK=\"\\$A\"\n";
        let vars = parse(text, &env).expect("parses");
        let want: Vec<(String, String)> = [
            ("A", "1"),
            ("B", "two words"),
            ("C", "single $A # not a comment"),
            ("D", "dq \"x\" \n 1"),
            ("E", "bare"),
            ("F", "#not-a-comment"),
            ("G", "1-/home/me"),
            ("FROM_ENV", "env"),
            ("H", "multi\nline"),
            ("I", ""),
            ("J", "a\nb"),
            ("K", "$A"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        assert_eq!(vars, want);
    }

    #[test]
    fn reports_the_line() {
        let e = parse("A=1\nnot a key=1\n", &env).expect_err("bad key");
        assert_eq!(e.line, 2);
        let e = parse("A=1\nB=\"open\nC=2\n", &env).expect_err("unterminated");
        assert_eq!(e.line, 2);
        assert!(e.message.contains("unterminated"), "{}", e.message);
        let e = parse("A=${B:?needed}\n", &env).expect_err("required");
        assert_eq!(e.message, "required variable B is missing a value: needed");
    }
}
