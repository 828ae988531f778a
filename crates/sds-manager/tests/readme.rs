//! The README's Rust example is the quickstart example, which `cargo test` compiles.

#[test]
fn the_readme_shows_the_quickstart_example_as_it_is() {
    let readme = include_str!("../../../README.md");
    let example = include_str!("../examples/quickstart.rs");
    assert!(
        readme.contains(&format!("```rust\n{example}```")),
        "README.md's Rust example differs from crates/sds-manager/examples/quickstart.rs"
    );
}
