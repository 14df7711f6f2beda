//! Sizes as people type them. A bare number is refused rather than guessed:
//! virsh reads it as KiB, virt-install as MiB or GiB depending on the flag,
//! and a wrong guess makes a check pass that should fail.

pub fn parse(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let split = t
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let number: f64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a size; write it like 512M, 4G or 1.5T"))?;
    let scale: f64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" => {
            return Err(format!(
                "{text:?} has no unit; write {t}M, {t}G or {t}B (bytes)"
            ))
        }
        "b" => 1.0,
        "k" | "kib" => 1024.0,
        "m" | "mib" => 1024f64.powi(2),
        "g" | "gib" => 1024f64.powi(3),
        "t" | "tib" => 1024f64.powi(4),
        "kb" => 1e3,
        "mb" => 1e6,
        "gb" => 1e9,
        "tb" => 1e12,
        other => {
            return Err(format!(
            "{text:?}: unknown unit {other:?}; use K, M, G, T (powers of 1024) or KB, MB, GB, TB"
        ))
        }
    };
    Ok((number * scale).round() as u64)
}

#[cfg(test)]
mod tests {
    use super::parse;

    #[test]
    fn units_as_virsh_reads_them() {
        assert_eq!(parse("4G"), Ok(4 << 30));
        assert_eq!(parse("512MiB"), Ok(512 << 20));
        assert_eq!(parse("1.5T"), Ok(3 << 39));
        assert_eq!(parse("2GB"), Ok(2_000_000_000));
        assert_eq!(parse("4096 b"), Ok(4096));
        assert!(parse("4096").unwrap_err().contains("no unit"));
        assert!(parse("4Q").unwrap_err().contains("unknown unit"));
        assert!(parse("G").is_err());
    }
}
