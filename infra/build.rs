// `sqlx::migrate!` embeds the migration files at compile time; without this, adding a migration
// file would not rebuild this crate and the new migration would silently not run.
fn main() {
    println!("cargo:rerun-if-changed=../migrations");
}
