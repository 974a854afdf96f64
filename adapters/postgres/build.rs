//! Rebuilds the crate when a migration changes: `embed_migrations!` reads the folders at
//! compile time, and cargo does not know about them otherwise.

fn main() {
    println!("cargo:rerun-if-changed=../../migrations_main/postgres");
    println!("cargo:rerun-if-changed=../../migrations_profiles/postgres");
}
