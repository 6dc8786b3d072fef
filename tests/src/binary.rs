//! Finding (or building, once) the `rswarm` binary under test.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

static BIN: OnceLock<PathBuf> = OnceLock::new();

/// The `rswarm` binary to test: `$RSWARM_BIN`, else `<target>/debug/rswarm` where
/// `<target>` is `$CARGO_TARGET_DIR` or `<workspace>/target`. When that file is missing it is
/// built once per test process with `cargo build -p rswarm`; a failed build panics with a
/// clear message.
pub fn rswarm_bin() -> &'static Path {
    BIN.get_or_init(find_or_build)
}

fn workspace_root() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().unwrap_or(manifest).to_owned()
}

fn find_or_build() -> PathBuf {
    if let Some(p) = std::env::var_os("RSWARM_BIN") {
        let p = PathBuf::from(p);
        assert!(
            p.is_file(),
            "RSWARM_BIN={} is not a file: point it at a built rswarm binary",
            p.display()
        );
        return p;
    }
    let root = workspace_root();
    let target = match std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from) {
        Some(t) if t.is_relative() => root.join(t),
        Some(t) => t,
        None => root.join("target"),
    };
    let bin = target.join("debug").join("rswarm");
    if bin.is_file() {
        return bin;
    }
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    eprintln!(
        "{} is missing: running `cargo build -p rswarm` in {}",
        bin.display(),
        root.display()
    );
    let status = Command::new(&cargo)
        .args(["build", "-p", "rswarm"])
        .current_dir(&root)
        .status();
    match status {
        Ok(s) if s.success() => {}
        Ok(s) => {
            panic!("`cargo build -p rswarm` failed ({s}): build the binary first or set RSWARM_BIN")
        }
        Err(e) => panic!(
            "could not run {} to build rswarm ({e}): build the binary first or set RSWARM_BIN",
            Path::new(&cargo).display()
        ),
    }
    assert!(
        bin.is_file(),
        "`cargo build -p rswarm` succeeded but {} does not exist: set RSWARM_BIN",
        bin.display()
    );
    bin
}
