//! Compiles `proto/profile/v1/profile.proto` with protox (pure Rust, no `protoc` on the
//! machine), generates the messages, the server and a client, and keeps the encoded
//! descriptor set for server reflection.

use std::path::PathBuf;

use prost::Message;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let manifest = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?);
    let proto_root = manifest.join("../../proto");
    let file = proto_root.join("profile/v1/profile.proto");
    println!("cargo:rerun-if-changed={}", file.display());

    // The set includes the imported well-known types, so reflection can describe them.
    let fds = protox::compile([&file], [&proto_root])?;
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(out.join("profile_v1_descriptor.bin"), fds.encode_to_vec())?;

    tonic_prost_build::configure().build_server(true).build_client(true).compile_fds(fds)?;
    Ok(())
}
