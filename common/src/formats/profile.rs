//! VM profiles: the JSON hv-define makes VMs from and hv-preflight checks
//! plans against, so both read one schema (docs/profiles.md,
//! docs/profile.schema.json). Strict on purpose: a misspelled `memroy`
//! ignored would make a VM nobody asked for, so an unknown field, a wrong
//! type or a bad size is an error that names the field's path
//! (`disks[1].size`) and the line it is on.

use crate::size;
use serde::de::{self, Deserializer};
use serde::Deserialize;
use std::fmt;
use std::path::PathBuf;

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Profile {
    pub name: String,
    /// The host it is made on, by alias or URI (docs/hosts.md); a run
    /// over several hosts sends each profile to its own.
    pub host: Option<String>,
    pub description: Option<String>,
    #[serde(default)]
    pub tags: Vec<String>,
    #[serde(default)]
    pub autostart: bool,
    /// The hypervisor: `kvm` (default) or `qemu` (software emulation, TCG).
    #[serde(rename = "type")]
    pub virt_type: Option<VirtType>,
    /// QEMU's machine type; `q35` by default.
    pub machine: Option<String>,
    #[serde(default, deserialize_with = "some_size")]
    pub memory: Option<u64>,
    pub memory_bytes: Option<u64>,
    pub vcpus: Option<u32>,
    pub cpu: Option<CpuMode>,
    pub firmware: Option<Firmware>,
    #[serde(default)]
    pub secure_boot: bool,
    #[serde(default)]
    pub tpm: bool,
    #[serde(default)]
    pub disks: Vec<DiskSpec>,
    /// Shorthand for one disk: a size (`"20G"`) or a disk object.
    pub disk: Option<DiskShorthand>,
    /// hv-preflight's older spelling of `disk` in bytes.
    pub disk_bytes: Option<u64>,
    /// Where disks and the cloud-init seed go unless a disk says otherwise:
    /// a libvirt storage pool (`default` when neither is given) or a directory.
    pub pool: Option<String>,
    pub dir: Option<PathBuf>,
    /// An image in the hv-iso library, by name, attached as a CD-ROM to boot from.
    pub iso: Option<String>,
    #[serde(default)]
    pub networks: Vec<NetworkSpec>,
    pub graphics: Option<Graphics>,
    /// Where VNC or SPICE listens; 127.0.0.1 unless the profile says otherwise.
    pub graphics_listen: Option<String>,
    /// PCI addresses of host devices passed through (`0000:01:00.0`).
    #[serde(default)]
    pub hostdev: Vec<String>,
    pub kernel: Option<PathBuf>,
    pub initrd: Option<PathBuf>,
    pub cmdline: Option<String>,
    pub cloud_init: Option<CloudInit>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum VirtType {
    Kvm,
    Qemu,
}

impl VirtType {
    pub fn as_str(self) -> &'static str {
        match self {
            VirtType::Kvm => "kvm",
            VirtType::Qemu => "qemu",
        }
    }
}

impl crate::Choice for VirtType {
    const ALL: &'static [VirtType] = &[VirtType::Kvm, VirtType::Qemu];

    fn name(self) -> &'static str {
        self.as_str()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum CpuMode {
    HostPassthrough,
    HostModel,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Firmware {
    Bios,
    Uefi,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Graphics {
    None,
    Vnc,
    Spice,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DiskFormat {
    #[default]
    Qcow2,
    Raw,
}

impl DiskFormat {
    pub fn as_str(self) -> &'static str {
        match self {
            DiskFormat::Qcow2 => "qcow2",
            DiskFormat::Raw => "raw",
        }
    }
}

impl crate::Choice for DiskFormat {
    const ALL: &'static [DiskFormat] = &[DiskFormat::Qcow2, DiskFormat::Raw];

    fn name(self) -> &'static str {
        self.as_str()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Bus {
    #[default]
    Virtio,
    Sata,
    Scsi,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DiskSpec {
    #[serde(default, deserialize_with = "some_size")]
    pub size: Option<u64>,
    pub size_bytes: Option<u64>,
    pub pool: Option<String>,
    pub dir: Option<PathBuf>,
    pub format: Option<DiskFormat>,
    pub bus: Option<Bus>,
    /// An existing image: copied, or with `linked` used as the backing
    /// file of a new qcow2 overlay.
    pub from: Option<PathBuf>,
    #[serde(default)]
    pub linked: bool,
}

/// `"disk": "20G"` or `"disk": {…}`.
#[derive(Debug, Clone, PartialEq)]
pub struct DiskShorthand(pub DiskSpec);

impl<'de> Deserialize<'de> for DiskShorthand {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visit;
        impl<'de> de::Visitor<'de> for Visit {
            type Value = DiskShorthand;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a size like \"20G\" or a disk object like {\"size\": \"20G\"}")
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<DiskShorthand, E> {
                let size = size::parse(s).map_err(E::custom)?;
                Ok(DiskShorthand(DiskSpec {
                    size: Some(size),
                    ..DiskSpec::default()
                }))
            }
            fn visit_map<A: de::MapAccess<'de>>(self, map: A) -> Result<DiskShorthand, A::Error> {
                DiskSpec::deserialize(de::value::MapAccessDeserializer::new(map)).map(DiskShorthand)
            }
        }
        d.deserialize_any(Visit)
    }
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetworkSpec {
    /// A libvirt network by name.
    pub network: Option<String>,
    /// A host bridge by name.
    pub bridge: Option<String>,
    /// `virtio` by default.
    pub model: Option<String>,
    pub mac: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CloudInit {
    pub hostname: Option<String>,
    #[serde(default)]
    pub ssh_authorized_keys: Vec<String>,
    /// A whole user-data document (`#cloud-config …` or a script), used as given.
    pub user_data: Option<String>,
    /// Network configuration (version 1 or 2), as YAML text or a JSON object.
    pub network_config: Option<serde_json::Value>,
}

fn some_size<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    struct Visit;
    impl de::Visitor<'_> for Visit {
        type Value = Option<u64>;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a size with a unit like \"4G\" (or the field's _bytes form for a number)")
        }
        fn visit_str<E: de::Error>(self, s: &str) -> Result<Option<u64>, E> {
            size::parse(s).map(Some).map_err(E::custom)
        }
    }
    d.deserialize_any(Visit)
}

/// A disk as it will be made: where it goes, resolved from the disk's own
/// `pool`/`dir`, else the profile's, else the pool `default`.
#[derive(Debug, Clone, PartialEq)]
pub struct PlannedDisk {
    /// `None` for a disk that copies or links `from` without a size given.
    pub size: Option<u64>,
    pub place: Place,
    pub format: DiskFormat,
    pub bus: Bus,
    pub from: Option<PathBuf>,
    pub linked: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Place {
    Pool(String),
    Dir(PathBuf),
}

impl Place {
    pub fn of(pool: &Option<String>, dir: &Option<PathBuf>) -> Option<Place> {
        match (pool, dir) {
            (Some(p), _) => Some(Place::Pool(p.clone())),
            (None, Some(d)) => Some(Place::Dir(d.clone())),
            (None, None) => None,
        }
    }
}

impl fmt::Display for Place {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        match self {
            Place::Pool(p) => write!(f, "pool {p}"),
            Place::Dir(d) => write!(f, "directory {}", d.display()),
        }
    }
}

impl Profile {
    pub fn memory(&self) -> Option<u64> {
        self.memory.or(self.memory_bytes)
    }

    /// Where this VM's files go unless a disk says otherwise.
    pub fn place(&self) -> Place {
        Place::of(&self.pool, &self.dir).unwrap_or(Place::Pool("default".into()))
    }

    /// Every disk, the `disk` shorthand first.
    pub fn planned_disks(&self) -> Vec<PlannedDisk> {
        let shorthand = self.disk.as_ref().map(|d| d.0.clone()).or_else(|| {
            self.disk_bytes.map(|b| DiskSpec {
                size_bytes: Some(b),
                ..DiskSpec::default()
            })
        });
        shorthand
            .iter()
            .chain(&self.disks)
            .map(|d| PlannedDisk {
                size: d.size.or(d.size_bytes),
                place: Place::of(&d.pool, &d.dir).unwrap_or_else(|| self.place()),
                format: d.format.unwrap_or_default(),
                bus: d.bus.unwrap_or_default(),
                from: d.from.clone(),
                linked: d.linked,
            })
            .collect()
    }

    /// What serde cannot say: fields that exclude or need each other.
    fn validate(&self) -> Result<(), (String, String)> {
        let bad = |path: &str, why: String| Err((path.to_owned(), why));
        if self.name.trim().is_empty() {
            return bad("name", "must not be empty".into());
        }
        if self.name.contains('/') {
            return bad(
                "name",
                format!(
                    "{:?} contains '/', which libvirt refuses in a name",
                    self.name
                ),
            );
        }
        if self.name.len() > 200 {
            return bad("name", "is longer than 200 bytes".into());
        }
        if self.host.as_deref().is_some_and(|h| h.trim().is_empty()) {
            return bad(
                "host",
                "must not be blank: an alias of the hosts file or a libvirt URI".into(),
            );
        }
        if self.memory.is_some() && self.memory_bytes.is_some() {
            return bad(
                "memory_bytes",
                "give memory or memory_bytes, not both".into(),
            );
        }
        if self.memory() == Some(0) {
            return bad("memory", "must be more than 0".into());
        }
        if self.vcpus == Some(0) {
            return bad("vcpus", "must be at least 1".into());
        }
        if self.pool.is_some() && self.dir.is_some() {
            return bad(
                "dir",
                "give pool or dir, not both: the VM's files go to one of them".into(),
            );
        }
        if self.disk.is_some() && self.disk_bytes.is_some() {
            return bad("disk_bytes", "give disk or disk_bytes, not both".into());
        }
        for (i, t) in self.tags.iter().enumerate() {
            if let Err(why) = crate::domain::check_tag(t) {
                return bad(&format!("tags[{i}]"), why);
            }
        }
        if self.disk_bytes == Some(0) {
            return bad("disk_bytes", "must be more than 0".into());
        }
        if self.cpu == Some(CpuMode::HostPassthrough) && self.virt_type == Some(VirtType::Qemu) {
            return bad("cpu", "host-passthrough needs \"type\": \"kvm\"; under qemu (TCG) leave cpu out or use host-model".into());
        }
        if self.graphics_listen.is_some() && matches!(self.graphics, None | Some(Graphics::None)) {
            return bad(
                "graphics_listen",
                "needs \"graphics\": \"vnc\" or \"spice\"".into(),
            );
        }
        if self.secure_boot && self.firmware != Some(Firmware::Uefi) {
            return bad("secure_boot", "needs \"firmware\": \"uefi\"".into());
        }
        if (self.initrd.is_some() || self.cmdline.is_some()) && self.kernel.is_none() {
            return bad(
                if self.initrd.is_some() {
                    "initrd"
                } else {
                    "cmdline"
                },
                "needs \"kernel\"".into(),
            );
        }
        let specs = self.disk.iter().map(|d| ("disk".to_owned(), &d.0));
        let listed = self
            .disks
            .iter()
            .enumerate()
            .map(|(i, d)| (format!("disks[{i}]"), d));
        for (path, d) in specs.chain(listed) {
            if d.size.is_some() && d.size_bytes.is_some() {
                return bad(
                    &format!("{path}.size_bytes"),
                    "give size or size_bytes, not both".into(),
                );
            }
            if d.pool.is_some() && d.dir.is_some() {
                return bad(&format!("{path}.dir"), "give pool or dir, not both".into());
            }
            match (d.size.or(d.size_bytes), &d.from) {
                (None, None) => {
                    return bad(
                        &path,
                        "needs a size, or from (an image to copy or link)".into(),
                    )
                }
                (Some(0), _) => {
                    let field = if d.size_bytes.is_some() {
                        "size_bytes"
                    } else {
                        "size"
                    };
                    return bad(&format!("{path}.{field}"), "must be more than 0".into());
                }
                _ => {}
            }
            if d.linked && d.from.is_none() {
                return bad(
                    &format!("{path}.linked"),
                    "needs from: the image the new disk is linked to".into(),
                );
            }
            if d.linked && d.format == Some(DiskFormat::Raw) {
                return bad(
                    &format!("{path}.format"),
                    "a linked disk is a qcow2 overlay; it cannot be raw".into(),
                );
            }
        }
        for (i, n) in self.networks.iter().enumerate() {
            if n.network.is_some() == n.bridge.is_some() {
                return bad(
                    &format!("networks[{i}]"),
                    "needs exactly one of network (a libvirt network) or bridge (a host bridge)"
                        .into(),
                );
            }
            if let Some(mac) = &n.mac {
                if !valid_mac(mac) {
                    return bad(
                        &format!("networks[{i}].mac"),
                        format!("{mac:?} is not a MAC address like 52:54:00:12:34:56"),
                    );
                }
            }
        }
        for (i, h) in self.hostdev.iter().enumerate() {
            if pci_address(h).is_none() {
                return bad(
                    &format!("hostdev[{i}]"),
                    format!("{h:?} is not a PCI address like 0000:01:00.0"),
                );
            }
        }
        if let Some(c) = &self.cloud_init {
            if let Some(h) = &c.hostname {
                if h.is_empty()
                    || h.len() > 63
                    || !h.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
                    || h.starts_with('-')
                {
                    return bad(
                        "cloud_init.hostname",
                        format!("{h:?} is not a host name (letters, digits and '-', at most 63)"),
                    );
                }
            }
            if let Some(v) = &c.network_config {
                if !(v.is_string() || v.is_object()) {
                    return bad(
                        "cloud_init.network_config",
                        "must be YAML text or a JSON object".into(),
                    );
                }
            }
        }
        Ok(())
    }
}

fn valid_mac(mac: &str) -> bool {
    let parts: Vec<&str> = mac.split(':').collect();
    parts.len() == 6
        && parts
            .iter()
            .all(|p| p.len() == 2 && p.chars().all(|c| c.is_ascii_hexdigit()))
}

/// `domain:bus:slot.function`, with the domain optional (`01:00.0`).
pub fn pci_address(text: &str) -> Option<(u32, u32, u32, u32)> {
    let (rest, function) = text.rsplit_once('.')?;
    let parts: Vec<&str> = rest.split(':').collect();
    let (domain, bus, slot) = match parts.as_slice() {
        [d, b, s] => (*d, *b, *s),
        [b, s] => ("0", *b, *s),
        _ => return None,
    };
    let hex = |s: &str, max: u32| u32::from_str_radix(s, 16).ok().filter(|v| *v <= max);
    Some((
        hex(domain, 0xffff)?,
        hex(bus, 0xff)?,
        hex(slot, 0x1f)?,
        hex(function, 7)?,
    ))
}

/// Why a profile was refused: where (its source and line), which field, what.
#[derive(Debug, Clone, PartialEq)]
pub struct ProfileError {
    /// `web.json line 3`, `stdin line 2`.
    pub at: String,
    /// The field's path (`disks[1].size`); empty for the profile as a whole.
    pub path: String,
    pub message: String,
    /// The profile's name when it could be read, for the failure record.
    pub name: Option<String>,
}

impl fmt::Display for ProfileError {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        match self.path.as_str() {
            "" => write!(f, "{}: {}", self.at, self.message),
            path => write!(f, "{}: {path}: {}", self.at, self.message),
        }
    }
}

/// One profile read from `source`, with the line its text starts on.
#[derive(Debug, Clone)]
pub struct Read {
    pub at: String,
    pub profile: Profile,
}

/// Every profile in `text`: one JSON object, or several one after another
/// (JSON lines, or pretty-printed objects). `source` names where the text
/// came from. A profile that fails is one error; the others are still read,
/// unless the text stops being JSON, which ends the source.
pub fn parse_all(text: &str, source: &str) -> Vec<Result<Read, ProfileError>> {
    let mut out = Vec::new();
    let mut stream = serde_json::Deserializer::from_str(text).into_iter::<de::IgnoredAny>();
    let mut start = 0;
    loop {
        let begin = start + text[start..].len() - text[start..].trim_start().len();
        match stream.next() {
            None => break,
            Some(Ok(_)) => {
                let end = stream.byte_offset();
                let line = 1 + text[..begin].matches('\n').count();
                out.push(parse_one(&text[begin..end], source, line));
                start = end;
            }
            Some(Err(e)) => {
                let line = 1 + text[..begin].matches('\n').count();
                out.push(Err(ProfileError {
                    at: format!("{source} line {}", e.line().max(line)),
                    path: String::new(),
                    message: format!("not JSON ({e}); a profile looks like {{\"name\": \"web1\", \"memory\": \"2G\", \"disk\": \"20G\"}}"),
                    name: None,
                }));
                break;
            }
        }
    }
    out
}

/// One profile's text, which starts on `line` of `source`.
pub fn parse_one(text: &str, source: &str, line: usize) -> Result<Read, ProfileError> {
    let name = serde_json::from_str::<serde_json::Value>(text)
        .ok()
        .and_then(|v| v.get("name")?.as_str().map(str::to_owned));
    let at = |l: usize| format!("{source} line {l}");
    let mut de = serde_json::Deserializer::from_str(text);
    let profile: Profile = match serde_path_to_error::deserialize(&mut de) {
        Ok(p) => p,
        Err(e) => {
            let path = e.path().to_string();
            let inner = e.into_inner();
            let message = inner.to_string();
            // serde_json appends " at line L column C"; the line is said in `at`.
            let message = match message.rfind(" at line ") {
                Some(i) => message[..i].to_owned(),
                None => message,
            };
            return Err(ProfileError {
                at: at(line + inner.line().saturating_sub(1)),
                path: if path == "." { String::new() } else { path },
                message: explain(&message),
                name,
            });
        }
    };
    if let Err((path, message)) = profile.validate() {
        return Err(ProfileError {
            at: at(line),
            path,
            message,
            name,
        });
    }
    Ok(Read {
        at: at(line),
        profile,
    })
}

/// serde's words, made to name the fix where it is not obvious.
fn explain(message: &str) -> String {
    if message.starts_with("unknown field") {
        return message.replace("expected one of", "the fields known here are");
    }
    if message.starts_with("missing field `name`") {
        return "no \"name\": every profile names its VM".to_owned();
    }
    message.to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(text: &str) -> Result<Profile, ProfileError> {
        parse_one(text, "t.json", 1).map(|r| r.profile)
    }

    #[test]
    fn a_full_profile_reads() {
        let p = one(r#"{"name": "web 1", "memory": "4G", "vcpus": 2, "disk": "20G", "pool": "fast",
            "disks": [{"size": "1G", "dir": "/srv", "format": "raw", "bus": "sata"}],
            "networks": [{"network": "default"}, {"bridge": "br0", "model": "e1000e", "mac": "52:54:00:aa:bb:cc"}],
            "firmware": "uefi", "secure_boot": true, "tpm": true, "graphics": "spice", "type": "qemu",
            "hostdev": ["0000:01:00.0"], "cloud_init": {"hostname": "web1", "ssh_authorized_keys": ["ssh-ed25519 AAAA k"]},
            "tags": ["prod"], "autostart": true, "description": "front"}"#).unwrap();
        assert_eq!(p.memory(), Some(4 << 30));
        let disks = p.planned_disks();
        assert_eq!(disks.len(), 2);
        assert_eq!(disks[0].place, Place::Pool("fast".into()));
        assert_eq!(disks[0].size, Some(20 << 30));
        assert_eq!(disks[1].place, Place::Dir("/srv".into()));
        assert_eq!(disks[1].format, DiskFormat::Raw);
        let p = one(r#"{"name": "a", "disk": {"size_bytes": 1024, "format": "raw"}}"#).unwrap();
        assert_eq!(p.planned_disks()[0].size, Some(1024));
        assert_eq!(p.planned_disks()[0].place, Place::Pool("default".into()));
    }

    #[test]
    fn errors_name_the_field_path_and_line() {
        let err = |text: &str| one(text).unwrap_err();
        let e = err(r#"{"name": "a", "disks": [{"size": "1G"}, {"size": "1Q"}]}"#);
        assert_eq!(e.path, "disks[1].size");
        assert!(e.message.contains("1Q"), "{e}");
        assert_eq!(e.name.as_deref(), Some("a"));
        let e = err(r#"{"name": "a", "memroy": "4G"}"#);
        assert!(e.message.contains("unknown field `memroy`"), "{e}");
        let e = err(r#"{"name": "a", "memory": 4096}"#);
        assert_eq!(e.path, "memory");
        assert!(e.message.contains("_bytes"), "{e}");
        let e = err(r#"{"name": "a", "vcpus": "two"}"#);
        assert_eq!(e.path, "vcpus");
        let e = err(r#"{"name": "a", "networks": [{"network": "n", "bridge": "b"}]}"#);
        assert_eq!(e.path, "networks[0]");
        let e = err(r#"{"name": "a", "disks": [{"linked": true, "size": "1G"}]}"#);
        assert_eq!(e.path, "disks[0].linked");
        assert!(err(r#"{"memory": "1G"}"#).message.contains("no \"name\""));
        assert_eq!(
            err(r#"{"name": "a", "disks": [{"size_bytes": 0}]}"#).path,
            "disks[0].size_bytes"
        );
        assert_eq!(err(r#"{"name": "a", "disk_bytes": 0}"#).path, "disk_bytes");
        assert_eq!(err(r#"{"name": "a", "tags": ["a b"]}"#).path, "tags[0]");
        assert_eq!(
            err(r#"{"name": "a", "type": "qemu", "cpu": "host-passthrough"}"#).path,
            "cpu"
        );
        assert_eq!(
            err(r#"{"name": "a", "graphics_listen": "0.0.0.0"}"#).path,
            "graphics_listen"
        );
        let e = err(r#"{"name": "a", "cloud_init": {"hostname": "a b"}}"#);
        assert_eq!(e.path, "cloud_init.hostname");
        let e = err("{\"name\": \"a\",\n \"disk\": {\"sise\": \"1G\"}}");
        assert_eq!(
            (e.path.as_str(), e.at.as_str()),
            ("disk.sise", "t.json line 2"),
            "{e}"
        );
    }

    #[test]
    fn a_source_holds_one_or_many_and_a_bad_one_spares_the_rest() {
        let text =
            "{\"name\": \"a\"}\n{\"name\": \"b\", \"vcpus\": 0}\n\n{\n  \"name\": \"c\"\n}\n";
        let all = parse_all(text, "f");
        assert_eq!(all.len(), 3);
        assert_eq!(all[0].as_ref().unwrap().at, "f line 1");
        assert_eq!(all[1].as_ref().unwrap_err().at, "f line 2");
        assert_eq!(all[2].as_ref().unwrap().profile.name, "c");
        assert_eq!(all[2].as_ref().unwrap().at, "f line 4");
        let broken = parse_all("{\"name\": \"a\"}\nweb1\n", "stdin");
        assert_eq!(broken.len(), 2);
        assert_eq!(broken[1].as_ref().unwrap_err().at, "stdin line 2");
    }

    #[test]
    fn pci_addresses() {
        assert_eq!(pci_address("0000:01:00.0"), Some((0, 1, 0, 0)));
        assert_eq!(pci_address("01:00.1"), Some((0, 1, 0, 1)));
        assert_eq!(pci_address("01:00"), None);
        assert_eq!(pci_address("0000:01:20.0"), None);
    }

    /// The fields serde accepts where `json` has the unknown field `zzz`,
    /// read from its own error: the types are the truth the docs follow.
    fn accepted(json: &str) -> Vec<String> {
        let e = parse_one(json, "t", 1).unwrap_err();
        let list = e
            .message
            .split("known here are")
            .nth(1)
            .unwrap_or_else(|| panic!("{e}"));
        list.split('`')
            .skip(1)
            .step_by(2)
            .map(str::to_owned)
            .collect()
    }

    fn docs() -> std::path::PathBuf {
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs")
    }

    /// docs/profiles.md's tables and docs/profile.schema.json name exactly
    /// the fields hv reads, in the same order.
    #[test]
    fn the_docs_and_the_schema_name_every_field() {
        let schema: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(docs().join("profile.schema.json")).unwrap(),
        )
        .unwrap();
        let keys = |v: &serde_json::Value| -> Vec<String> {
            v["properties"]
                .as_object()
                .unwrap()
                .keys()
                .cloned()
                .collect()
        };
        let defs = &schema["$defs"];
        for (probe, heading, in_schema) in [
            (r#"{"name": "a", "zzz": 1}"#, "## Fields", keys(&schema)),
            (
                r#"{"name": "a", "disks": [{"zzz": 1}]}"#,
                "### disks[]",
                keys(&defs["disk"]),
            ),
            (
                r#"{"name": "a", "networks": [{"zzz": 1}]}"#,
                "### networks[]",
                keys(&defs["network"]),
            ),
            (
                r#"{"name": "a", "cloud_init": {"zzz": 1}}"#,
                "### cloud_init",
                keys(&defs["cloud_init"]),
            ),
        ] {
            let fields = accepted(probe);
            assert_eq!(
                hv_testbench::documented_fields("profiles.md", heading),
                fields,
                "docs/profiles.md {heading}"
            );
            assert_eq!(in_schema, fields, "docs/profile.schema.json for {heading}");
        }
    }

    /// The worked examples are profiles hv reads, and the doc shows each
    /// file as it is.
    #[test]
    fn the_examples_are_valid_profiles_shown_in_the_doc() {
        let doc = std::fs::read_to_string(docs().join("profiles.md")).unwrap();
        let mut seen = 0;
        for entry in std::fs::read_dir(docs().join("examples")).unwrap() {
            let path = entry.unwrap().path();
            let text = std::fs::read_to_string(&path).unwrap();
            parse_one(&text, &path.display().to_string(), 1).unwrap_or_else(|e| panic!("{e}"));
            assert!(
                doc.contains(text.trim()),
                "docs/profiles.md does not show {}",
                path.display()
            );
            seen += 1;
        }
        assert_eq!(seen, 4, "the four examples of issue 22");
    }
}
