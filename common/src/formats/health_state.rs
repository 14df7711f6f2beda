//! The repairs part of hv-health's state file (docs/health.md, "The
//! state file"): hv-health --fix writes it, hv-metrics reports from it, so
//! an alert can say that hv-health gave up on a VM.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::Path;

/// One VM's repairs, kept between runs.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct History {
    /// Its name when last seen, for `--reset` and messages.
    pub name: String,
    /// When each attempt within the window was made (Unix seconds), oldest
    /// first.
    #[serde(default)]
    pub attempts: Vec<i64>,
    #[serde(default)]
    pub gave_up: Option<GaveUp>,
}

/// hv-health stopped trying: what for, when, after how many attempts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GaveUp {
    pub check: String,
    pub at: i64,
    pub attempts: u32,
}

/// Every VM's history, by UUID (`host/UUID` in a run that names hosts).
pub type Histories = BTreeMap<String, History>;

/// The UUID of a [`Histories`] key.
pub fn uuid_of(key: &str) -> &str {
    key.rsplit('/').next().unwrap_or(key)
}

/// The repairs in the state file at `path`; a missing file or one written
/// before `--fix` has none.
pub fn read_fixes(path: &Path) -> crate::Result<Histories> {
    #[derive(Deserialize)]
    struct Fixes {
        #[serde(default)]
        fixes: Histories,
    }
    let text = match crate::fsutil::read_limited(path, 64 << 20) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Histories::new()),
        Err(e) => return Err(crate::Error::io(path.display(), e)),
    };
    let value: serde_json::Value = serde_json::from_slice(&text).map_err(|e| {
        crate::Error::new(
            crate::Code::Corrupt,
            format!("{}: not an hv-health state file: {e}", path.display()),
        )
    })?;
    if value.get("problems").is_none() {
        return Ok(Histories::new());
    }
    let fixes: Fixes = serde_json::from_value(value).map_err(|e| {
        crate::Error::new(
            crate::Code::Corrupt,
            format!("{}: its fixes are unreadable: {e}", path.display()),
        )
    })?;
    Ok(fixes.fixes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixes_read_from_old_and_new_files() {
        let dir = std::env::temp_dir().join(format!("hv-health-state-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("health.json");
        assert!(read_fixes(&path).unwrap().is_empty(), "no file yet");
        std::fs::write(&path, r#"{"vm.crashed name=web": {"check": "vm.crashed"}}"#).unwrap();
        assert!(
            read_fixes(&path).unwrap().is_empty(),
            "written before --fix"
        );
        std::fs::write(
            &path,
            r#"{"problems": {}, "fixes": {"h1/u1": {"name": "web", "attempts": [5], "gave_up": {"check": "vm.crashed", "at": 9, "attempts": 3}}}}"#,
        )
        .unwrap();
        let fixes = read_fixes(&path).unwrap();
        assert_eq!(fixes["h1/u1"].gave_up.as_ref().unwrap().attempts, 3);
        assert_eq!(uuid_of("h1/u1"), "u1");
        assert_eq!(uuid_of("u1"), "u1");
        std::fs::write(&path, "{").unwrap();
        assert_eq!(read_fixes(&path).unwrap_err().code, crate::Code::Corrupt);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
