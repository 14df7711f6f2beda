//! Commands composed the way users compose them: through a shell pipe.

use hv_testbench::{connect, pipeline, records, run_prefix, GuestSpec};

#[test]
fn bench_listing_feeds_tagging_feeds_listing() {
    let conn = connect();
    let guests: Vec<_> = ["pipe a", "pipe b", "pipe c"]
        .iter()
        .map(|n| GuestSpec::new(n).define(&conn))
        .collect();
    guests[0].start_ready();
    let glob = format!("{}pipe*", run_prefix());
    let out = pipeline(&format!(
        "hv-ls --name '{glob}' --state shutoff | hv-tag --add cold -j 2 | hv-ls"
    ));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let recs = records(&out);
    let mut names: Vec<&str> = recs.iter().map(|r| r["name"].as_str().unwrap()).collect();
    names.sort();
    assert_eq!(
        names,
        vec![guests[1].name.as_str(), guests[2].name.as_str()]
    );
    assert!(recs
        .iter()
        .all(|r| r["tags"] == serde_json::json!(["cold"]) && r["state"] == "shutoff"));

    let tagged = pipeline(&format!("hv-ls --name '{glob}' --tag cold --format csv"));
    let text = String::from_utf8(tagged.stdout).unwrap();
    assert_eq!(text.lines().count(), 3, "header and two rows: {text}");
}
