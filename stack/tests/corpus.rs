//! The corpus of Compose files in `tests/corpus/`.
//!
//! - `valid/CASE/`: the files of a stack (`stack.yml` unless `case.json` names others in
//!   `files`, merged in order; `env` the environment; `stack` the stack's name, `demo` by
//!   default), with `expected.json` (the warnings and the converted [`StackSpec`]) and
//!   `expected.yml` (what `stack config` prints). Each also makes a round trip: the
//!   printed YAML loads again to the same specs and prints the same.
//! - `invalid/NAME.yml` with `NAME.err`, the one error line expected; or `invalid/NAME/`
//!   with `case.json` as above and `expected.err`.
//!
//! Absolute paths under the case's directory are written `$DIR` in expectations.
//! `RSWARM_BLESS=1 cargo test -p rswarm-stack --test corpus` rewrites the expectations
//! from what the code does; review the diff.

use rswarm_stack::{convert, load, load_sources, Env, Source};
use serde_json::json;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

fn corpus() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/corpus")
}

fn bless() -> bool {
    std::env::var_os("RSWARM_BLESS").is_some()
}

struct Case {
    files: Vec<String>,
    env: Env,
    stack: String,
}

fn read_case(dir: &Path) -> Case {
    let mut case = Case {
        files: vec!["stack.yml".to_owned()],
        env: BTreeMap::new(),
        stack: "demo".to_owned(),
    };
    if let Ok(text) = std::fs::read_to_string(dir.join("case.json")) {
        let v: serde_json::Value = serde_json::from_str(&text).expect("case.json is JSON");
        if let Some(files) = v["files"].as_array() {
            case.files = files
                .iter()
                .map(|f| f.as_str().expect("file names").to_owned())
                .collect();
        }
        if let Some(env) = v["env"].as_object() {
            case.env = env
                .iter()
                .map(|(k, v)| (k.clone(), v.as_str().expect("env values").to_owned()))
                .collect();
        }
        if let Some(stack) = v["stack"].as_str() {
            case.stack = stack.to_owned();
        }
    }
    case
}

fn subdirs(dir: &Path) -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(dir)
        .expect("corpus dir")
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.is_dir())
        .collect();
    dirs.sort();
    dirs
}

/// Compares `actual` with the file, or writes it when blessing; a mismatch is described
/// in `failures`.
fn check(path: &Path, actual: &str, failures: &mut Vec<String>) {
    if bless() {
        std::fs::write(path, actual).expect("write expectation");
        return;
    }
    match std::fs::read_to_string(path) {
        Ok(expected) if expected == actual => {}
        Ok(expected) => failures.push(format!(
            "{}: differs\n--- expected\n{expected}\n--- actual\n{actual}",
            path.display()
        )),
        Err(_) => failures.push(format!(
            "{}: missing (RSWARM_BLESS=1 writes it)\n--- actual\n{actual}",
            path.display()
        )),
    }
}

fn report(kind: &str, count: usize, failures: Vec<String>) {
    assert!(count > 0, "no {kind} cases found");
    assert!(
        failures.is_empty(),
        "{} of {count} {kind} cases failed:\n\n{}",
        failures.len(),
        failures.join("\n\n")
    );
}

#[test]
fn valid_files_convert_to_the_expected_specs_and_round_trip() {
    let mut failures = Vec::new();
    let dirs = subdirs(&corpus().join("valid"));
    for dir in &dirs {
        let name = dir.file_name().unwrap_or_default().to_string_lossy();
        let case = read_case(dir);
        let files: Vec<PathBuf> = case.files.iter().map(|f| dir.join(f)).collect();
        let loaded = match load(&files, &case.env) {
            Ok(l) => l,
            Err(e) => {
                failures.push(format!("{name}: does not load: {e}"));
                continue;
            }
        };
        let spec = match convert(&case.stack, &loaded.compose) {
            Ok(s) => s,
            Err(e) => {
                failures.push(format!("{name}: does not convert: {e}"));
                continue;
            }
        };
        let dir_text = dir.display().to_string();
        let expected_json = json!({ "warnings": loaded.warnings, "spec": spec });
        let text = serde_json::to_string_pretty(&expected_json).expect("json") + "\n";
        check(
            &dir.join("expected.json"),
            &text.replace(&dir_text, "$DIR"),
            &mut failures,
        );
        let yaml = loaded.to_yaml().expect("yaml");
        check(&dir.join("expected.yml"), &yaml, &mut failures);

        // The printed file loads again to the same thing, and prints the same.
        let again = load_sources(
            &[Source {
                name: "config.yml".to_owned(),
                text: yaml.clone(),
            }],
            dir,
            &case.env,
        );
        match again {
            Err(e) => failures.push(format!(
                "{name}: the stack config output does not load: {e}\n{yaml}"
            )),
            Ok(again) => {
                match convert(&case.stack, &again.compose) {
                    Ok(s) if s == spec => {}
                    Ok(s) => failures.push(format!(
                        "{name}: the stack config output converts differently:\n{}",
                        serde_json::to_string_pretty(&s).unwrap_or_default()
                    )),
                    Err(e) => failures.push(format!("{name}: round trip does not convert: {e}")),
                }
                if again.to_yaml().expect("yaml") != yaml {
                    failures.push(format!("{name}: printing twice is not stable"));
                }
            }
        }
    }
    report("valid", dirs.len(), failures);
}

/// Loads a failing case's files with their bare names, so that errors read
/// `NAME.yml:6:17: ...`.
fn load_error(dir: &Path, case: &Case) -> String {
    let sources: Vec<Source> = case
        .files
        .iter()
        .map(|f| Source {
            name: f.clone(),
            text: std::fs::read_to_string(dir.join(f)).expect("case file"),
        })
        .collect();
    match load_sources(&sources, dir, &case.env) {
        Ok(loaded) => match convert(&case.stack, &loaded.compose) {
            Ok(_) => "(loads and converts without error)".to_owned(),
            Err(e) => e.to_string(),
        },
        Err(e) => {
            let mut text = e.to_string();
            let mut source = std::error::Error::source(&e);
            while let Some(s) = source {
                text.push_str(&format!(": {s}"));
                source = s.source();
            }
            text
        }
    }
}

#[test]
fn invalid_files_fail_with_the_expected_error() {
    let mut failures = Vec::new();
    let root = corpus().join("invalid");
    let mut count = 0;
    let mut files: Vec<PathBuf> = std::fs::read_dir(&root)
        .expect("invalid dir")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "yml"))
        .collect();
    files.sort();
    for file in files {
        count += 1;
        let name = file
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned();
        let case = Case {
            files: vec![name],
            env: BTreeMap::new(),
            stack: "demo".to_owned(),
        };
        let actual = load_error(&root, &case) + "\n";
        check(&file.with_extension("err"), &actual, &mut failures);
    }
    for dir in subdirs(&root) {
        count += 1;
        let case = read_case(&dir);
        let actual = load_error(&dir, &case).replace(&dir.display().to_string(), "$DIR") + "\n";
        check(&dir.join("expected.err"), &actual, &mut failures);
    }
    report("invalid", count, failures);
}
