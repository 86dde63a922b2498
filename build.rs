// Rebuild when a migration is added: `sqlx::migrate!` embeds the folder at compile time and
// does not otherwise notice new files.
fn main() {
    println!("cargo:rerun-if-changed=migrations");
}
