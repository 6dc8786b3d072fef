//! Fuzzing the loader with proptest: random YAML-ish text, arbitrary strings and mutations
//! of the corpus files. Nothing may panic; whatever loads must convert, print as YAML, and
//! load again from that YAML to the same specs.

use proptest::prelude::*;
use rswarm_stack::{convert, load_sources, Env, Source};
use std::path::{Path, PathBuf};

/// Pieces of Compose files and of YAML's syntax.
const TOKENS: &[&str] = &[
    "\n",
    "\n",
    "\n",
    "  ",
    "  ",
    "    ",
    "- ",
    ": ",
    ":",
    ",",
    "{",
    "}",
    "[",
    "]",
    "'",
    "\"",
    "#",
    "&a ",
    "*a",
    "<<: ",
    "!!str ",
    "!tag ",
    "? ",
    "|\n",
    ">\n",
    "---\n",
    "...\n",
    "~",
    "\t",
    "version: \"3.8\"",
    "services:",
    "web:",
    "db:",
    "image: busybox",
    "image:",
    "command: ",
    "entrypoint: ",
    "environment:",
    "env_file: ",
    "labels:",
    "deploy:",
    "replicas: ",
    "mode: ",
    "global",
    "replicated",
    "ports:",
    "\"8080:80\"",
    "80",
    "8000-8001:80-81",
    "target: ",
    "published: ",
    "protocol: udp",
    "volumes:",
    "./data:/data:ro",
    "data:/data",
    "/tmp",
    "type: ",
    "bind",
    "tmpfs",
    "source: ",
    "networks:",
    "front",
    "aliases: ",
    "secrets:",
    "configs:",
    "file: ",
    "external: true",
    "name: ",
    "healthcheck:",
    "test: ",
    "NONE",
    "CMD",
    "interval: ",
    "10s",
    "1m30s",
    "resources:",
    "limits:",
    "cpus: ",
    "0.5",
    "memory: ",
    "512M",
    "restart_policy:",
    "condition: ",
    "on-failure",
    "placement:",
    "constraints: ",
    "node.role==worker",
    "preferences:",
    "spread: ",
    "update_config:",
    "parallelism: ",
    "endpoint_mode: dnsrr",
    "x-ext:",
    "$",
    "$$",
    "${A}",
    "${A:-d}",
    "${B?e}",
    "${",
    "}",
    "$A",
    "${A:+x}",
    "0440",
    "mode: ",
    "-1",
    "1.5",
    "true",
    "yes",
    "null",
    "é",
    "\u{0}",
    "\r",
    "build: .",
    "restart: always",
    "stop_grace_period: ",
    "user: ",
    "1000",
];

fn env() -> Env {
    [("A", "1"), ("EMPTY", "")]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

/// Loads a file, and if it loads, checks that it converts and round-trips.
fn exercise(name: &str, text: &str, dir: &Path) -> Result<(), TestCaseError> {
    let env = env();
    let source = Source {
        name: name.to_owned(),
        text: text.to_owned(),
    };
    let Ok(loaded) = load_sources(&[source], dir, &env) else {
        return Ok(());
    };
    let Ok(spec) = convert("fuzz", &loaded.compose) else {
        return Ok(());
    };
    let yaml = loaded
        .to_yaml()
        .map_err(|e| TestCaseError::fail(format!("cannot print: {e}")))?;
    let again = load_sources(
        &[Source {
            name: "printed.yml".to_owned(),
            text: yaml.clone(),
        }],
        dir,
        &env,
    )
    .map_err(|e| {
        TestCaseError::fail(format!(
            "printed YAML does not load: {e}\n--- input\n{text}\n--- printed\n{yaml}"
        ))
    })?;
    let spec_again = convert("fuzz", &again.compose)
        .map_err(|e| TestCaseError::fail(format!("printed YAML does not convert: {e}")))?;
    prop_assert_eq!(
        spec,
        spec_again,
        "printed YAML converts differently\n--- input\n{}\n--- printed\n{}",
        text,
        yaml
    );
    Ok(())
}

fn corpus_files() -> Vec<(PathBuf, String)> {
    fn walk(dir: &Path, out: &mut Vec<(PathBuf, String)>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                walk(&p, out);
            } else if p.extension().is_some_and(|x| x == "yml" || x == "yaml")
                && p.file_name().is_none_or(|n| n != "expected.yml")
            {
                if let Ok(text) = std::fs::read_to_string(&p) {
                    out.push((p, text));
                }
            }
        }
    }
    let mut out = Vec::new();
    walk(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/corpus"),
        &mut out,
    );
    out.sort();
    out
}

#[derive(Debug, Clone)]
enum Mutation {
    Insert(usize, usize),
    Delete(usize, usize),
    DuplicateLine(usize),
    SwapLines(usize, usize),
    Indent(usize, usize),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<usize>(), 0..TOKENS.len()).prop_map(|(at, t)| Mutation::Insert(at, t)),
        (any::<usize>(), 1usize..12).prop_map(|(at, n)| Mutation::Delete(at, n)),
        any::<usize>().prop_map(Mutation::DuplicateLine),
        (any::<usize>(), any::<usize>()).prop_map(|(a, b)| Mutation::SwapLines(a, b)),
        (any::<usize>(), 0usize..6).prop_map(|(l, n)| Mutation::Indent(l, n)),
    ]
}

/// A char boundary of `s` from an arbitrary number.
fn boundary(s: &str, at: usize) -> usize {
    let mut i = if s.is_empty() { 0 } else { at % (s.len() + 1) };
    while !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

fn apply(text: &str, m: &Mutation) -> String {
    let mut lines: Vec<String> = text.split('\n').map(str::to_owned).collect();
    match *m {
        Mutation::Insert(at, t) => {
            let i = boundary(text, at);
            format!("{}{}{}", &text[..i], TOKENS[t], &text[i..])
        }
        Mutation::Delete(at, n) => {
            let i = boundary(text, at);
            let j = boundary(text, i + n).max(i);
            format!("{}{}", &text[..i], &text[j..])
        }
        Mutation::DuplicateLine(l) => {
            let i = l % lines.len();
            let line = lines[i].clone();
            lines.insert(i, line);
            lines.join("\n")
        }
        Mutation::SwapLines(a, b) => {
            let n = lines.len();
            lines.swap(a % n, b % n);
            lines.join("\n")
        }
        Mutation::Indent(l, n) => {
            let i = l % lines.len();
            lines[i] = format!("{}{}", " ".repeat(n), lines[i].trim_start());
            lines.join("\n")
        }
    }
}

fn scratch_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/corpus/valid/full")
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn yamlish_token_soup_never_panics(tokens in prop::collection::vec(0..TOKENS.len(), 0..60)) {
        let text: String = tokens.iter().map(|t| TOKENS[*t]).collect();
        exercise("soup.yml", &text, &scratch_dir())?;
    }

    #[test]
    fn arbitrary_strings_never_panic(text in any::<String>()) {
        exercise("any.yml", &text, &scratch_dir())?;
    }

    #[test]
    fn mutated_corpus_files_never_panic(
        pick in any::<prop::sample::Index>(),
        mutations in prop::collection::vec(mutation(), 1..6),
    ) {
        let files = corpus_files();
        prop_assume!(!files.is_empty());
        let (path, original) = &files[pick.index(files.len())];
        let mut text = original.clone();
        for m in &mutations {
            text = apply(&text, m);
        }
        let dir = path.parent().unwrap_or(Path::new("."));
        let name = path.file_name().unwrap_or_default().to_string_lossy().into_owned();
        exercise(&name, &text, dir)?;
    }

    /// Every corpus file and its round trip, under generated environments.
    #[test]
    fn corpus_files_under_random_environments(
        pick in any::<prop::sample::Index>(),
        a in "[ -~]{0,12}",
    ) {
        let files = corpus_files();
        prop_assume!(!files.is_empty());
        let (path, text) = &files[pick.index(files.len())];
        let dir = path.parent().unwrap_or(Path::new("."));
        let mut env = env();
        for k in ["A", "TAG", "REGISTRY", "SET", "REPLICAS", "GREETING", "PORT"] {
            env.insert(k.to_owned(), a.clone());
        }
        let source = Source { name: "f.yml".to_owned(), text: text.clone() };
        if let Ok(loaded) = load_sources(&[source], dir, &env) {
            let _ = convert("fuzz", &loaded.compose);
            let yaml = loaded.to_yaml().map_err(|e| TestCaseError::fail(e.to_string()))?;
            let again = load_sources(&[Source { name: "p.yml".to_owned(), text: yaml.clone() }], dir, &env)
                .map_err(|e| TestCaseError::fail(format!("{e}\n{yaml}")))?;
            prop_assert_eq!(&loaded.compose, &again.compose);
        }
    }
}

// ---- Generated Compose files: valid in shape, arbitrary in content ----

/// A YAML double-quoted scalar (JSON's escapes are YAML's).
fn quoted(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| "\"\"".to_owned())
}

/// Text with `$` escaped, so that most generated files interpolate.
fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>().prop_map(|s| s.replace('$', "$$")),
        "[a-zA-Z0-9 ._:/=-]{0,16}",
        Just("${A}".to_owned()),
        Just("${UNSET:-dflt}".to_owned()),
        Just("yes".to_owned()),
        Just("0755".to_owned()),
        Just("a\nb\n".to_owned()),
        Just("  spaced  ".to_owned()),
        Just("x".repeat(200)),
        Just("'\"#&*!|>%@`".to_owned()),
    ]
}

fn scalar() -> impl Strategy<Value = String> {
    prop_oneof![
        text().prop_map(|t| quoted(&t)),
        any::<i64>().prop_map(|i| i.to_string()),
        any::<bool>().prop_map(|b| b.to_string()),
        Just("1.5".to_owned()),
        Just("null".to_owned()),
        "[a-z][a-z0-9_]{0,8}",
    ]
}

fn words() -> impl Strategy<Value = String> {
    prop::collection::vec(text(), 0..4).prop_map(|ws| {
        let items: Vec<String> = ws.iter().map(|w| quoted(w)).collect();
        format!("[{}]", items.join(", "))
    })
}

const IMAGES: &[&str] = &[
    "busybox",
    "busybox:1.36",
    "198.18.0.250:5000/busybox:latest",
    "${A}img",
];
const PORTS: &[&str] = &[
    "80",
    "\"8080:80\"",
    "\"53:53/udp\"",
    "\"9000-9001:9000-9001\"",
    "\"127.0.0.1:81:81\"",
    "{target: 82, published: 8082, mode: host}",
    "{target: 83}",
    "\"5000-5001:5000\"",
];
const VOLUMES: &[&str] = &[
    "/data",
    "\"./a:/a:ro\"",
    "\"/b:/b\"",
    "\"named:/n:nocopy\"",
    "{type: tmpfs, target: /t, tmpfs: {size: 1k}}",
    "{type: bind, source: ./x, target: /x, bind: {propagation: rshared}}",
    "\"~/h:/h\"",
];
const DURATIONS: &[&str] = &["10s", "1m30s", "500ms", "0", "2h"];

fn service() -> impl Strategy<Value = String> {
    (
        (
            0..IMAGES.len(),
            prop::option::of(prop_oneof![words(), text().prop_map(|t| quoted(&t))]),
            prop::option::of(words()),
            prop::collection::btree_map("[A-Z_][A-Z0-9_]{0,6}", scalar(), 0..4),
            prop::collection::vec("[A-Z][A-Z0-9_]{0,5}(=[a-z0-9 ]{0,5})?", 0..3),
            prop::collection::btree_map("[a-z][a-z.]{0,8}", scalar(), 0..3),
        ),
        (
            prop::option::of(scalar()),
            prop::option::of(0..DURATIONS.len()),
            prop::collection::vec(0..PORTS.len(), 0..4),
            prop::collection::vec(0..VOLUMES.len(), 0..3),
            prop::option::of(0u64..10),
            any::<bool>(),
            prop::collection::vec(text(), 0..3),
            prop::option::of(text()),
        ),
    )
        .prop_map(
            |(
                (image, command, entrypoint, env, env_list, labels),
                (user, grace, ports, volumes, replicas, global, constraints, health),
            )| {
                let mut y = format!("    image: {}\n", quoted(IMAGES[image]));
                if let Some(c) = command {
                    y += &format!("    command: {c}\n");
                }
                if let Some(e) = entrypoint {
                    y += &format!("    entrypoint: {e}\n");
                }
                if !env.is_empty() {
                    y += "    environment:\n";
                    for (k, v) in &env {
                        y += &format!("      {k}: {v}\n");
                    }
                } else if !env_list.is_empty() {
                    let items: Vec<String> = env_list.iter().map(|e| quoted(e)).collect();
                    y += &format!("    environment: [{}]\n", items.join(", "));
                }
                if !labels.is_empty() {
                    y += "    labels:\n";
                    for (k, v) in &labels {
                        y += &format!("      {}: {v}\n", quoted(k));
                    }
                }
                if let Some(u) = user {
                    y += &format!("    user: {u}\n");
                }
                if let Some(g) = grace {
                    y += &format!("    stop_grace_period: {}\n", DURATIONS[g]);
                }
                if !ports.is_empty() {
                    let items: Vec<&str> = ports.iter().map(|p| PORTS[*p]).collect();
                    y += &format!("    ports: [{}]\n", items.join(", "));
                }
                if !volumes.is_empty() {
                    let items: Vec<&str> = volumes.iter().map(|v| VOLUMES[*v]).collect();
                    y += &format!("    volumes: [{}]\n", items.join(", "));
                }
                if let Some(h) = health {
                    y += &format!(
                        "    healthcheck:\n      test: {}\n      interval: 5s\n",
                        quoted(&format!("x{h}"))
                    );
                }
                y += "    deploy:\n";
                if global {
                    y += "      mode: global\n";
                } else if let Some(r) = replicas {
                    y += &format!("      replicas: {r}\n");
                }
                if !constraints.is_empty() {
                    let items: Vec<String> = constraints
                        .iter()
                        .map(|c| quoted(&format!("node.labels.k=={c}x")))
                        .collect();
                    y += &format!("      placement: {{constraints: [{}]}}\n", items.join(", "));
                }
                y
            },
        )
}

fn compose_file() -> impl Strategy<Value = String> {
    (
        prop::collection::btree_map("[a-z][a-z0-9-]{0,6}", service(), 1..4),
        prop::option::of(scalar()),
    )
        .prop_map(|(services, ext)| {
            let mut y = String::from("services:\n");
            for (name, body) in &services {
                y += &format!("  {name}:\n{body}");
            }
            y += "volumes:\n  named: {}\n";
            if let Some(e) = ext {
                y += &format!("x-extra:\n  value: {e}\n  list: [{e}, {e}]\n");
            }
            y
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// Generated files: most load, and every one that loads round-trips.
    #[test]
    fn generated_files_round_trip(text in compose_file()) {
        exercise("generated.yml", &text, &scratch_dir())?;
    }

    /// Two generated files merged, then printed: the print loads to the same result.
    #[test]
    fn generated_merges_round_trip(a in compose_file(), b in compose_file()) {
        let env = env();
        let sources = [
            Source { name: "a.yml".to_owned(), text: a },
            Source { name: "b.yml".to_owned(), text: b },
        ];
        if let Ok(loaded) = load_sources(&sources, &scratch_dir(), &env) {
            let yaml = loaded.to_yaml().map_err(|e| TestCaseError::fail(e.to_string()))?;
            let printed = [Source { name: "p.yml".to_owned(), text: yaml.clone() }];
            let again = load_sources(&printed, &scratch_dir(), &env)
                .map_err(|e| TestCaseError::fail(format!("{e}\n{yaml}")))?;
            prop_assert_eq!(&loaded.compose, &again.compose, "{}", yaml);
        }
    }
}
