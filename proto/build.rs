//! Compiles `proto/*.proto` with protox (pure Rust), so no system `protoc` is needed.
fn main() -> Result<(), Box<dyn std::error::Error>> {
    let files = [
        "proto/control.proto",
        "proto/dispatcher.proto",
        "proto/ca.proto",
        "proto/raft.proto",
        "proto/service.proto",
        "proto/node.proto",
        "proto/network.proto",
    ];
    // The whole directory: imported files (types.proto) count too.
    println!("cargo:rerun-if-changed=proto");
    let fds = protox::compile(files, ["proto"])?;
    tonic_prost_build::configure().compile_fds(fds)?;
    Ok(())
}
