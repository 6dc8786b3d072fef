//! Compose files for stacks, read the way `docker stack deploy` reads them.
//!
//! Owns: loading Compose files (format 3.x, or the Compose Specification without
//! `version:`) with YAML anchors, `<<` merge keys and `x-` extensions; variable
//! interpolation from a given environment and a `.env` file; `env_file`s; merging several
//! files in order; validation with errors that name the file, line, column and key path
//! (`stack.yml:6:17: services.web.deploy.replicas: expected an integer, found "three"`);
//! conversion into the service, network, volume, secret and config specs of a stack.
//!
//! Must not: talk to a daemon, read the process's environment (the caller passes it), or
//! do any I/O besides reading the Compose files, `.env`, `env_file`s, and checking that
//! secret and config files exist. It depends on `proto` only.
//!
//! Entry points: [`load`] (or [`load_sources`]) gives a [`Loaded`]: the typed
//! [`ComposeFile`], the warnings to show, and [`Loaded::to_yaml`] for `stack config`;
//! [`convert`] turns a [`ComposeFile`] into a [`StackSpec`].
//!
//! ```no_run
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let env = std::env::vars().collect();
//! let loaded = rswarm_stack::load(&["stack.yml".into()], &env)?;
//! for w in &loaded.warnings {
//!     eprintln!("{w}");
//! }
//! let spec = rswarm_stack::convert("demo", &loaded.compose)?;
//! assert!(spec.services.iter().all(|s| s.spec.name.starts_with("demo_")));
//! # Ok(()) }
//! ```

pub mod compose;
mod convert;
mod document;
mod dotenv;
mod error;
mod interpolate;
mod load;
mod merge;
mod path;
mod schema;
pub mod spec;
mod syntax;

pub use compose::ComposeFile;
pub use convert::convert;
pub use error::{ConvertError, Diagnostic, LoadError, OutputError};
pub use load::{load, load_sources, Env, Loaded, Source};
pub use spec::{
    EndpointMode, FailureAction, FileRef, NetworkAttachment, PortSpec, Protocol, PublishMode,
    StackConfig, StackNetwork, StackSecret, StackService, StackSpec, StackVolume, UpdateConfig,
    UpdateOrder,
};
