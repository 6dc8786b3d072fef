//! Loading: files read, parsed, interpolated, checked one by one, merged in order, and the
//! result validated into a [`ComposeFile`].

use crate::compose::ComposeFile;
use crate::document::{self, Node};
use crate::dotenv;
use crate::error::{Diagnostic, LoadError, Located, OutputError};
use crate::interpolate::interpolate_tree;
use crate::merge::merge;
use crate::path::KeyPath;
use crate::schema::{self, Cx, Mode};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Variables for interpolation and for `environment: [KEY]`: the process's environment,
/// passed in so that loading is hermetic.
pub type Env = BTreeMap<String, String>;

/// A Compose file's text and the name to show in messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Source {
    pub name: String,
    pub text: String,
}

/// A loaded stack file.
#[derive(Debug, Clone)]
pub struct Loaded {
    /// The validated, typed result, for [`crate::convert`].
    pub compose: ComposeFile,
    /// One line each: unset variables, ignored options (all in one line), ...
    pub warnings: Vec<String>,
    /// The merged and interpolated document, as `stack config` prints it.
    document: Node,
}

impl Loaded {
    /// The merged, interpolated document as YAML. Every `$` left in a value is written
    /// `$$`, so that loading the output again gives the same result.
    pub fn to_yaml(&self) -> Result<String, OutputError> {
        document::to_yaml(&self.document).map_err(|e| OutputError(e.to_string()))
    }
}

/// Reads and loads Compose files, merged in order. Relative paths in them, and the `.env`
/// file, are relative to the directory of the first file.
pub fn load(files: &[PathBuf], env: &Env) -> Result<Loaded, LoadError> {
    let first = files.first().ok_or(LoadError::NoFiles)?;
    let sources = files
        .iter()
        .map(|path| {
            let name = path.display().to_string();
            std::fs::read_to_string(path)
                .map(|text| Source {
                    name: name.clone(),
                    text,
                })
                .map_err(|source| LoadError::Read { path: name, source })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let dir = first.parent().unwrap_or(Path::new(""));
    let dir = if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    };
    let working_dir = std::path::absolute(dir).unwrap_or_else(|_| dir.to_path_buf());
    load_sources(&sources, &working_dir, env)
}

/// Loads Compose files already read (e.g. from stdin). `working_dir` is where relative
/// paths and the `.env` file are.
pub fn load_sources(
    sources: &[Source],
    working_dir: &Path,
    env: &Env,
) -> Result<Loaded, LoadError> {
    if sources.is_empty() {
        return Err(LoadError::NoFiles);
    }
    let names: Vec<String> = sources.iter().map(|s| s.name.clone()).collect();
    let located = |l: Located| LoadError::Invalid(l.into_diagnostic(&names));

    let dotenv_vars = read_dotenv(working_dir, env)?;
    // The environment wins over `.env`.
    let lookup = |name: &str| env.get(name).or_else(|| dotenv_vars.get(name)).cloned();

    let mut unset = BTreeSet::new();
    let mut merged: Option<Node> = None;
    for (i, source) in sources.iter().enumerate() {
        let mut tree = document::parse(&source.text, i).map_err(|e| {
            LoadError::Invalid(Diagnostic {
                file: source.name.clone(),
                line: e.pos.line,
                column: e.pos.column,
                path: String::new(),
                message: e.message,
            })
        })?;
        interpolate_tree(&mut tree, &KeyPath::root(), &lookup, &mut unset).map_err(located)?;
        if sources.len() > 1 {
            let mut alone = tree.clone();
            alone.settle_tags();
            let mut cx = Cx {
                mode: Mode::File,
                working_dir,
                env: &lookup,
                ignored: BTreeSet::new(),
                warnings: Vec::new(),
            };
            schema::decode(&alone, &mut cx).map_err(located)?;
        }
        // `!reset` and `!override` act on what the files before set.
        let mut next = match merged {
            None => tree,
            Some(base) => merge(base, tree),
        };
        next.settle_tags();
        merged = Some(next);
    }
    let document = merged.ok_or(LoadError::NoFiles)?;

    let mut cx = Cx {
        mode: Mode::Merged,
        working_dir,
        env: &lookup,
        ignored: BTreeSet::new(),
        warnings: Vec::new(),
    };
    let compose = schema::decode(&document, &mut cx).map_err(located)?;

    let mut warnings: Vec<String> = unset
        .iter()
        .map(|name| format!("The {name:?} variable is not set. Defaulting to a blank string."))
        .collect();
    warnings.append(&mut cx.warnings);
    if !cx.ignored.is_empty() {
        let names: Vec<&str> = cx.ignored.iter().map(String::as_str).collect();
        warnings.push(format!(
            "Ignoring unsupported options: {}",
            names.join(", ")
        ));
    }
    Ok(Loaded {
        compose,
        warnings,
        document,
    })
}

/// The variables of `.env` in the working directory, if there is one.
fn read_dotenv(working_dir: &Path, env: &Env) -> Result<BTreeMap<String, String>, LoadError> {
    let path = working_dir.join(".env");
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(BTreeMap::new()),
        Err(e) if e.kind() == std::io::ErrorKind::NotADirectory => return Ok(BTreeMap::new()),
        Err(source) => {
            return Err(LoadError::Read {
                path: path.display().to_string(),
                source,
            })
        }
    };
    let lookup = |name: &str| env.get(name).cloned();
    let vars = dotenv::parse(&text, &lookup).map_err(|e| LoadError::EnvFile {
        file: path.display().to_string(),
        line: e.line,
        message: e.message,
    })?;
    Ok(vars.into_iter().collect())
}
