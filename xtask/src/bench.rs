pub fn ls(_n: usize, _u: &str) -> Result<(), String> {
    Err("todo".into())
}
