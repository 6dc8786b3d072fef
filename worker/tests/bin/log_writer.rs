//! Stands in for `rswarm log-writer FILE` in the executor tests: containerd's shim runs it
//! as a container's `binary://` logger (see `rswarm_worker::containerd::logwriter`).

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let path = match args.as_slice() {
        [_, mode, path] if mode == "log-writer" => path,
        _ => {
            eprintln!("usage: rswarm-test-log-writer log-writer FILE");
            std::process::exit(64);
        }
    };
    if let Err(e) = rswarm_worker::containerd::run_log_writer(std::path::Path::new(path)) {
        eprintln!("log-writer: {path}: {e}");
        std::process::exit(1);
    }
}
