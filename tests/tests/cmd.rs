//! The transcripts in tests/cmd/*.md: what a user types and sees, run
//! without root or a libvirt daemon.

#[test]
fn transcripts_show_what_users_see() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("cmd");
    let bins = std::path::PathBuf::from(hv_testbench::bin("hv-ls"));
    let bins = bins.parent().unwrap();
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "md"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no transcripts in {}", dir.display());
    let failures: Vec<String> = files
        .iter()
        .flat_map(|f| hv_testbench::cmd::run_transcript(f, bins))
        .collect();
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}
