//! A stopped domain's disks, remembered between scrapes. libvirt reports
//! their capacity and allocation by opening every image of every stopped
//! domain on every scrape; on a host with many stopped VMs (or images on
//! network storage) that is most of the scrape's cost, for values that
//! change only when an image file does. So `--listen` keeps them and asks
//! libvirt again for a domain when one of its image files changes (size,
//! modification time or inode, by `stat`), when a file cannot be checked,
//! and at least every [`MAX_AGE`], which bounds how late a disk added to
//! a stopped VM's definition shows up. State, vCPUs and memory are read
//! fresh every scrape (libvirt takes them from the definition, cheaply).

use hv_common::ffi::{Param, Stats};
use std::collections::HashMap;
use std::os::unix::fs::MetadataExt;
use std::time::{Duration, Instant, SystemTime};

pub const MAX_AGE: Duration = Duration::from_secs(60);

/// What identifies a file's content closely enough for a size report.
#[derive(PartialEq, Eq)]
struct Stamp {
    len: u64,
    modified: SystemTime,
    inode: u64,
}

fn stamp(path: &str) -> Option<Stamp> {
    let meta = std::fs::metadata(path).ok()?;
    Some(Stamp {
        len: meta.len(),
        modified: meta.modified().ok()?,
        inode: meta.ino(),
    })
}

struct Entry {
    /// The `block.*` parameters libvirt gave.
    block: Vec<(String, Param)>,
    files: Vec<(String, Option<Stamp>)>,
    read_at: Instant,
}

impl Entry {
    fn still_true(&self, now: Instant) -> bool {
        now.duration_since(self.read_at) < MAX_AGE
            && self
                .files
                .iter()
                .all(|(path, then)| then.is_some() && stamp(path) == *then)
    }
}

#[derive(Default)]
pub struct StoppedDisks {
    entries: HashMap<String, Entry>,
}

impl StoppedDisks {
    /// Splits stopped domains (by UUID) into those whose disks are known
    /// and those libvirt must be asked about; forgets domains no longer
    /// stopped.
    pub fn split<'a, T>(&mut self, stopped: &'a [(String, T)]) -> (Vec<&'a T>, Vec<&'a T>) {
        let now = Instant::now();
        let current: std::collections::HashSet<&str> =
            stopped.iter().map(|(uuid, _)| uuid.as_str()).collect();
        self.entries
            .retain(|uuid, entry| current.contains(uuid.as_str()) && entry.still_true(now));
        let (mut known, mut unknown) = (Vec::new(), Vec::new());
        for (uuid, item) in stopped {
            match self.entries.contains_key(uuid) {
                true => known.push(item),
                false => unknown.push(item),
            }
        }
        (known, unknown)
    }

    /// Adds the remembered disks to a stopped domain's fresh statistics.
    pub fn fill(&self, stats: &mut Stats) {
        if let Some(entry) = self.entries.get(&stats.uuid) {
            for (key, value) in &entry.block {
                stats.params.insert(key.clone(), value.clone());
            }
        }
    }

    /// Remembers what libvirt just said about a stopped domain's disks.
    pub fn remember(&mut self, stats: &Stats) {
        let block: Vec<(String, Param)> = stats
            .params
            .iter()
            .filter(|(key, _)| key.starts_with("block."))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let files = block
            .iter()
            .filter(|(key, _)| key.ends_with(".path"))
            .filter_map(|(_, value)| value.as_str())
            .map(|path| (path.to_owned(), stamp(path)))
            .collect();
        let entry = Entry {
            block,
            files,
            read_at: Instant::now(),
        };
        self.entries.insert(stats.uuid.clone(), entry);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stats(uuid: &str, path: &str) -> Stats {
        let mut s = Stats {
            uuid: uuid.into(),
            ..Stats::default()
        };
        s.params
            .insert("block.0.path".into(), Param::Str(path.into()));
        s.params
            .insert("block.0.capacity".into(), Param::UInt(1 << 30));
        s.params.insert("state.state".into(), Param::Int(5));
        s
    }

    #[test]
    fn a_changed_image_is_asked_about_again() {
        let dir = std::env::temp_dir().join(format!("hv-metrics-stopped-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let image = dir.join("a.qcow2");
        std::fs::write(&image, b"one").unwrap();
        let path = image.to_str().unwrap();
        let mut cache = StoppedDisks::default();
        let stopped = vec![("u1".to_owned(), 1), ("u2".to_owned(), 2)];
        assert_eq!(cache.split(&stopped), (vec![], vec![&1, &2]));
        cache.remember(&stats("u1", path));
        assert_eq!(cache.split(&stopped), (vec![&1], vec![&2]));

        let mut fresh = Stats {
            uuid: "u1".into(),
            ..Stats::default()
        };
        cache.fill(&mut fresh);
        assert_eq!(fresh.u64("block.0.capacity"), Some(1 << 30));
        assert_eq!(fresh.u64("state.state"), None, "only disks are remembered");

        std::fs::write(&image, b"grown by a write").unwrap();
        assert_eq!(cache.split(&stopped), (vec![], vec![&1, &2]));
        cache.remember(&stats("u1", path));
        std::fs::remove_file(&image).unwrap();
        assert_eq!(cache.split(&stopped), (vec![], vec![&1, &2]), "gone");
        cache.remember(&stats("u1", path));
        assert_eq!(cache.split(&stopped[1..]), (vec![], vec![&2]), "started");
        assert!(cache.entries.is_empty());
        std::fs::remove_dir_all(dir).unwrap();
    }
}
