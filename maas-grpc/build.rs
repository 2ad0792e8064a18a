//! Compiles proto/maas/v1/maas.proto with protox (no protoc needed) into the tonic/prost
//! code, and writes the encoded descriptor set to OUT_DIR for gRPC server reflection.

use prost::Message;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto");
    let fds = protox::compile(["maas/v1/maas.proto"], ["proto"])?;
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(out.join("maas_v1_descriptor.bin"), fds.encode_to_vec())?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        // Every message is also JSON with the proto's field names: host records are files
        // (`maasctl hosts import`, `hosts list --json`), and the Python module exchanges
        // requests and answers with its Rust half as JSON.
        .type_attribute(".", "#[derive(serde::Serialize, serde::Deserialize)]")
        .message_attribute(".", "#[serde(default)]")
        .message_attribute("maas.v1.Host", "#[serde(deny_unknown_fields)]")
        .enum_attribute("maas.v1.Action.kind", "#[serde(rename_all = \"snake_case\")]")
        .compile_fds(fds)?;
    Ok(())
}
