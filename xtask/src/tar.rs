//! A reproducible ustar writer: entries sorted by path, one fixed modification time, numeric
//! owners only, 512-byte blocks. What image layers and OCI archives need, nothing more.

use anyhow::{Result, bail};

/// What an entry is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    /// A directory.
    Dir,
    /// A regular file with its contents.
    File(Vec<u8>),
}

/// One entry of an archive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The path inside the archive, relative, `/`-separated, without a trailing `/`.
    pub path: String,
    /// Directory or file.
    pub kind: Kind,
    /// Permission bits (e.g. `0o755`, `0o1777`).
    pub mode: u32,
    /// Owner user id.
    pub uid: u32,
    /// Owner group id.
    pub gid: u32,
}

impl Entry {
    /// A directory owned by root.
    pub fn dir(path: impl Into<String>, mode: u32) -> Entry {
        Entry {
            path: path.into(),
            kind: Kind::Dir,
            mode,
            uid: 0,
            gid: 0,
        }
    }

    /// A file owned by root.
    pub fn file(path: impl Into<String>, mode: u32, contents: Vec<u8>) -> Entry {
        Entry {
            path: path.into(),
            kind: Kind::File(contents),
            mode,
            uid: 0,
            gid: 0,
        }
    }

    /// The same entry owned by `uid:gid`.
    pub fn owned_by(self, uid: u32, gid: u32) -> Entry {
        Entry { uid, gid, ..self }
    }
}

/// Adds a root-owned directory entry (mode 0755) for every missing parent of every entry.
pub fn add_parents(entries: &mut Vec<Entry>) {
    let mut missing = Vec::new();
    for entry in entries.iter() {
        let mut path = entry.path.as_str();
        while let Some((parent, _)) = path.rsplit_once('/') {
            let known = entries.iter().any(|e| e.path == parent)
                || missing.iter().any(|e: &Entry| e.path == parent);
            if !known {
                missing.push(Entry::dir(parent, 0o755));
            }
            path = parent;
        }
    }
    entries.extend(missing);
}

/// The archive of `entries` (sorted by path, duplicates refused), every entry dated `mtime`.
pub fn write(entries: &[Entry], mtime: u64) -> Result<Vec<u8>> {
    let mut sorted: Vec<&Entry> = entries.iter().collect();
    sorted.sort_by(|a, b| a.path.cmp(&b.path));
    if let Some(pair) = sorted.windows(2).find(|pair| pair[0].path == pair[1].path) {
        bail!("`{}` is in the archive twice", pair[0].path);
    }
    let mut out = Vec::new();
    for entry in sorted {
        let (name, typeflag, data): (String, u8, &[u8]) = match &entry.kind {
            Kind::Dir => (format!("{}/", entry.path), b'5', &[]),
            Kind::File(data) => (entry.path.clone(), b'0', data),
        };
        out.extend_from_slice(&header(&name, typeflag, entry, data.len() as u64, mtime)?);
        out.extend_from_slice(data);
        out.resize(out.len().next_multiple_of(512), 0);
    }
    // The end of the archive: two zero blocks.
    out.resize(out.len() + 1024, 0);
    Ok(out)
}

/// One ustar header block.
fn header(name: &str, typeflag: u8, entry: &Entry, size: u64, mtime: u64) -> Result<[u8; 512]> {
    if entry.path.is_empty()
        || entry.path.starts_with('/')
        || entry.path.split('/').any(|p| p == "..")
    {
        bail!("`{}` is not a relative path inside the archive", entry.path);
    }
    let (prefix, name) = split_name(name)?;
    let mut block = [0u8; 512];
    put(&mut block[0..100], name.as_bytes());
    put(
        &mut block[100..108],
        octal(u64::from(entry.mode), 8)?.as_bytes(),
    );
    put(
        &mut block[108..116],
        octal(u64::from(entry.uid), 8)?.as_bytes(),
    );
    put(
        &mut block[116..124],
        octal(u64::from(entry.gid), 8)?.as_bytes(),
    );
    put(&mut block[124..136], octal(size, 12)?.as_bytes());
    put(&mut block[136..148], octal(mtime, 12)?.as_bytes());
    block[148..156].fill(b' ');
    block[156] = typeflag;
    put(&mut block[257..263], b"ustar\0");
    put(&mut block[263..265], b"00");
    put(&mut block[329..337], octal(0, 8)?.as_bytes());
    put(&mut block[337..345], octal(0, 8)?.as_bytes());
    put(&mut block[345..500], prefix.as_bytes());
    let checksum: u32 = block.iter().map(|&b| u32::from(b)).sum();
    put(
        &mut block[148..156],
        format!("{checksum:06o}\0 ").as_bytes(),
    );
    Ok(block)
}

/// Splits a long name into ustar's prefix (155 bytes) and name (100 bytes) at a `/`.
fn split_name(name: &str) -> Result<(&str, &str)> {
    if name.len() <= 100 {
        return Ok(("", name));
    }
    let trimmed = name.trim_end_matches('/');
    for (index, _) in trimmed.match_indices('/') {
        let (prefix, rest) = (&name[..index], &name[index + 1..]);
        if prefix.len() <= 155 && rest.len() <= 100 {
            return Ok((prefix, rest));
        }
    }
    bail!("`{name}` is too long for a ustar header")
}

/// `value` in octal, zero-padded, NUL-terminated, in a field of `width` bytes.
fn octal(value: u64, width: usize) -> Result<String> {
    let text = format!("{value:0w$o}\0", w = width - 1);
    if text.len() > width {
        bail!("{value} does not fit a {width}-byte tar field");
    }
    Ok(text)
}

fn put(field: &mut [u8], bytes: &[u8]) {
    field[..bytes.len()].copy_from_slice(bytes);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    fn sample() -> Vec<Entry> {
        let long = format!("{}{}", "sub/".repeat(30), "f".repeat(90));
        let mut entries = vec![
            Entry::file("usr/local/bin/app", 0o755, b"#!binary".to_vec()),
            Entry::file(
                "etc/passwd",
                0o644,
                b"root:x:0:0::/:/sbin/nologin\n".to_vec(),
            ),
            Entry::dir("tmp", 0o1777),
            Entry::dir("var/lib/app", 0o755).owned_by(9999, 9999),
            Entry::file(long, 0o644, vec![b'x'; 1000]),
        ];
        add_parents(&mut entries);
        entries
    }

    #[test]
    fn the_archive_is_what_tar_reads() {
        let dir = std::env::temp_dir().join(format!("xtask-tar-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let archive = dir.join("a.tar");
        let bytes = write(&sample(), 1_700_000_000).unwrap();
        assert_eq!(bytes.len() % 512, 0);
        std::fs::write(&archive, &bytes).unwrap();
        let listing = Command::new("tar")
            .args(["--numeric-owner", "-tvf"])
            .arg(&archive)
            .output()
            .unwrap();
        assert!(listing.status.success(), "{listing:?}");
        let listing = String::from_utf8(listing.stdout).unwrap();
        let lines: Vec<&str> = listing.lines().collect();
        let names: Vec<&str> = lines
            .iter()
            .map(|l| l.rsplit(' ').next().unwrap())
            .collect();
        let mut sorted = names.clone();
        sorted.sort();
        assert_eq!(names, sorted, "sorted entries");
        assert!(names.contains(&"usr/"), "parents added: {names:?}");
        assert!(listing.contains("drwxrwxrwt 0/0"), "{listing}");
        assert!(listing.contains("9999/9999"), "{listing}");
        assert!(listing.contains("2023-11-14"), "mtime: {listing}");
        let out = dir.join("x");
        std::fs::create_dir_all(&out).unwrap();
        let extracted = Command::new("tar")
            .arg("-xf")
            .arg(&archive)
            .arg("-C")
            .arg(&out)
            .status()
            .unwrap();
        assert!(extracted.success());
        assert_eq!(
            std::fs::read(out.join("usr/local/bin/app")).unwrap(),
            b"#!binary"
        );
        let long = out.join("sub/".repeat(30)).join("f".repeat(90));
        assert_eq!(std::fs::read(long).unwrap().len(), 1000);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn the_same_entries_give_the_same_bytes_in_any_order() {
        let mut reversed = sample();
        reversed.reverse();
        assert_eq!(write(&sample(), 0).unwrap(), write(&reversed, 0).unwrap());
    }

    #[test]
    fn bad_entries_are_refused() {
        let twice = vec![Entry::dir("a", 0o755), Entry::dir("a", 0o755)];
        assert!(write(&twice, 0).unwrap_err().to_string().contains("twice"));
        for path in ["/abs", "a/../b", ""] {
            assert!(write(&[Entry::dir(path, 0o755)], 0).is_err(), "{path}");
        }
        let too_long = "x".repeat(300);
        assert!(write(&[Entry::dir(too_long, 0o755)], 0).is_err());
    }
}
