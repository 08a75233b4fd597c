//! SDK dispatch benchmark (filled in below).
fn main() {}
