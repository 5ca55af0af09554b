//! The compile cache: compiled components, kept in the state directory so
//! that a handler compiles once, not at every start, reload and `check`.
//! Compiling a JavaScript or Python component (an interpreter of 10 to 40
//! MB) takes seconds; loading it from here takes milliseconds.
//!
//! An entry is named by the SHA-256 of the component's bytes and of the
//! engine's compatibility hash (wasmtime's version, its configuration and
//! the CPU features it compiles for), so an entry is only ever read by an
//! engine that could have written it, for the very bytes it was compiled
//! from, and by the CRC-32 of its contents (damage, not an adversary, is
//! what it guards against: see below): `<key>-<crc>.cwasm`. The file is
//! checked against its CRC before wasmtime maps it: a truncated or damaged
//! entry is compiled again, never loaded. The file is exactly what wasmtime
//! serialized, so it is mapped, not copied: the code is paged in as it
//! runs, and a handler's initial memory is mapped copy-on-write from the
//! file rather than copied into every instance. Entries are written to a
//! temporary file and renamed into place, so a crash leaves no partial
//! entry. The directory is rowhook's user's only (0700), like the state
//! store beside it: a compiled component is machine code that rowhook runs.
//!
//! At most [`MAX_ENTRIES`] entries are kept; the least recently used go
//! first.

use std::fs;
use std::hash::Hasher;
use std::io::{Read as _, Write as _};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use wasmtime::Engine;
use wasmtime::component::Component;

/// Entries kept; an entry per handler module version, each about the size
/// of its module (a few MB for JavaScript and Python handlers).
pub const MAX_ENTRIES: usize = 32;

/// A directory of compiled components.
#[derive(Debug, Clone)]
pub struct CompileCache {
    dir: PathBuf,
    /// The engine's compatibility hash, part of every key.
    engine_key: [u8; 32],
}

/// How a component was had.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// Read from the cache.
    Cached,
    /// Compiled (and written to the cache if there is one).
    Compiled,
}

impl CompileCache {
    /// The cache in `dir` for components compiled by `engine`.
    pub fn new(dir: PathBuf, engine: &Engine) -> CompileCache {
        let mut hasher = ShaHasher(Sha256::new());
        std::hash::Hash::hash(&engine.precompile_compatibility_hash(), &mut hasher);
        CompileCache {
            dir,
            engine_key: hasher.0.finalize().into(),
        }
    }

    /// The name an entry for `bytes` starts with: its key, then `-`.
    fn key(&self, bytes: &[u8]) -> String {
        let mut key = Sha256::new();
        key.update(self.engine_key);
        key.update(Sha256::digest(bytes));
        let mut name: String = key.finalize().iter().map(|b| format!("{b:02x}")).collect();
        name.push('-');
        name
    }

    /// The entry named `key`, with the CRC-32 its name gives, if there is one.
    fn find(&self, key: &str) -> Option<(PathBuf, u32)> {
        fs::read_dir(&self.dir).ok()?.flatten().find_map(|entry| {
            let name = entry.file_name();
            let crc = name.to_str()?.strip_prefix(key)?.strip_suffix(".cwasm")?;
            let crc = u32::from_str_radix(crc, 16).ok().filter(|_| crc.len() == 8)?;
            Some((entry.path(), crc))
        })
    }

    /// The component of `bytes`: from the cache when an intact entry is
    /// there, else compiled by `compile` and written to the cache. A cache
    /// that cannot be read or written costs a compile and a warning, never
    /// the load.
    pub fn load(
        &self,
        engine: &Engine,
        bytes: &[u8],
        compile: impl FnOnce() -> wasmtime::Result<Component>,
    ) -> wasmtime::Result<(Component, Origin)> {
        let key = self.key(bytes);
        if let Some(component) = self.find(&key).and_then(|(path, crc)| self.read(engine, &path, crc)) {
            return Ok((component, Origin::Cached));
        }
        let component = compile()?;
        if let Err(e) = self.write(&key, &component) {
            tracing::warn!(
                dir = %self.dir.display(),
                "could not write the compiled component to the compile cache ({e:#}): it will be compiled again at the next start"
            );
        }
        Ok((component, Origin::Compiled))
    }

    #[allow(unsafe_code)]
    fn read(&self, engine: &Engine, path: &Path, crc: u32) -> Option<Component> {
        if crc32_of(path).ok()? != crc {
            tracing::warn!(path = %path.display(), "a compile cache entry is damaged: compiling again");
            let _ = fs::remove_file(path);
            return None;
        }
        // Marks it used, for the pruning.
        let _ = fs::File::options()
            .append(true)
            .open(path)
            .and_then(|f| f.set_modified(std::time::SystemTime::now()));
        // SAFETY: wasmtime requires that the file be what
        // `Component::serialize` wrote for a compatible engine, and that it
        // not change while mapped. It is: the entry's name binds it to
        // these module bytes and this engine's compatibility hash, its
        // checksum to the bytes that were written; entries are only ever
        // created by a rename and removed, never written in place, and only
        // rowhook's user can write the directory. wasmtime checks the
        // version and configuration recorded inside again.
        match unsafe { Component::deserialize_file(engine, path) } {
            Ok(component) => Some(component),
            Err(e) => {
                tracing::warn!(path = %path.display(), "a compile cache entry does not load ({e:#}): compiling again");
                None
            }
        }
    }

    fn write(&self, key: &str, component: &Component) -> anyhow::Result<()> {
        use std::os::unix::fs::DirBuilderExt as _;
        fs::DirBuilder::new().recursive(true).mode(0o700).create(&self.dir)?;
        let body = component.serialize().map_err(|e| anyhow::anyhow!("{e:#}"))?;
        let path = self.dir.join(format!("{key}{:08x}.cwasm", crc32fast::hash(&body)));
        let tmp = path.with_extension(format!("tmp-{}", std::process::id()));
        let mut file = fs::File::create(&tmp)?;
        file.write_all(&body)?;
        file.sync_all()?;
        fs::rename(&tmp, &path)?;
        self.prune();
        Ok(())
    }

    /// Removes the least recently used entries past [`MAX_ENTRIES`], and
    /// temporary files a crash left.
    fn prune(&self) {
        let Ok(dir) = fs::read_dir(&self.dir) else { return };
        let mut entries: Vec<(std::time::SystemTime, PathBuf)> = Vec::new();
        for entry in dir.flatten() {
            let path = entry.path();
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if name.contains(".tmp-") && !name.ends_with(&format!(".tmp-{}", std::process::id())) {
                let _ = fs::remove_file(&path);
            } else if name.ends_with(".cwasm") {
                let used = entry
                    .metadata()
                    .and_then(|m| m.modified())
                    .unwrap_or(std::time::UNIX_EPOCH);
                entries.push((used, path));
            }
        }
        if entries.len() > MAX_ENTRIES {
            entries.sort();
            for (_, path) in &entries[..entries.len() - MAX_ENTRIES] {
                let _ = fs::remove_file(path);
            }
        }
    }
}

/// The CRC-32 of the file at `path`, read through a small buffer: the
/// pages stay in the page cache, where wasmtime maps them next.
fn crc32_of(path: &Path) -> std::io::Result<u32> {
    let mut file = fs::File::open(path)?;
    let mut crc = crc32fast::Hasher::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        match file.read(&mut buf)? {
            0 => return Ok(crc.finalize()),
            n => crc.update(&buf[..n]),
        }
    }
}

/// Feeds what a `Hash` writes into SHA-256: a hash that is the same in
/// every process, unlike std's.
struct ShaHasher(Sha256);

impl Hasher for ShaHasher {
    fn finish(&self) -> u64 {
        let digest = self.0.clone().finalize();
        u64::from_le_bytes(digest[..8].try_into().expect("8 bytes"))
    }

    fn write(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The smallest component: the preamble of an empty one.
    const EMPTY: &[u8] = b"\0asm\x0d\x00\x01\x00";

    fn engine() -> Engine {
        let mut config = wasmtime::Config::new();
        config.wasm_component_model(true);
        Engine::new(&config).unwrap()
    }

    #[test]
    fn a_component_is_compiled_once_then_read_back() {
        let dir = std::env::temp_dir().join(format!("rh-compile-cache-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let engine = engine();
        let cache = CompileCache::new(dir.clone(), &engine);
        let compile = || Component::new(&engine, EMPTY);
        let (_, first) = cache.load(&engine, EMPTY, compile).unwrap();
        assert_eq!(first, Origin::Compiled);
        let (_, second) = cache
            .load(&engine, EMPTY, || panic!("compiled again although cached"))
            .unwrap();
        assert_eq!(second, Origin::Cached);
        use std::os::unix::fs::PermissionsExt as _;
        assert_eq!(fs::metadata(&dir).unwrap().permissions().mode() & 0o777, 0o700);

        // A damaged entry is compiled again, and the entry rewritten.
        let key = cache.key(EMPTY);
        let (path, _) = cache.find(&key).unwrap();
        let mut bytes = fs::read(&path).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 0xff;
        fs::write(&path, &bytes).unwrap();
        let (_, again) = cache.load(&engine, EMPTY, compile).unwrap();
        assert_eq!(again, Origin::Compiled);
        let (_, healed) = cache.load(&engine, EMPTY, || panic!("not rewritten")).unwrap();
        assert_eq!(healed, Origin::Cached);

        // Other module bytes, or another engine configuration, have their own entry.
        let other = b"\0asm\x0d\x00\x01\x00\x00\x04\x03abc";
        assert_ne!(cache.key(other), key);
        let mut config = wasmtime::Config::new();
        config.wasm_component_model(true).epoch_interruption(true);
        let engine2 = Engine::new(&config).unwrap();
        assert_ne!(CompileCache::new(dir.clone(), &engine2).key(EMPTY), key);
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn the_least_recently_used_entries_go_past_the_cap() {
        let dir = std::env::temp_dir().join(format!("rh-compile-cache-prune-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        let old = std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_000_000);
        for i in 0..MAX_ENTRIES + 3 {
            let path = dir.join(format!("{i:064}.cwasm"));
            fs::write(&path, b"x").unwrap();
            let when = old + std::time::Duration::from_secs(i as u64);
            fs::File::options()
                .append(true)
                .open(&path)
                .unwrap()
                .set_modified(when)
                .unwrap();
        }
        fs::write(dir.join("abc.cwasm.tmp-1"), b"partial").unwrap();
        let engine = engine();
        CompileCache::new(dir.clone(), &engine).prune();
        let mut left: Vec<String> = fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        assert_eq!(left.len(), MAX_ENTRIES);
        assert_eq!(left[0], format!("{:064}.cwasm", 3));
        let _ = fs::remove_dir_all(&dir);
    }
}
