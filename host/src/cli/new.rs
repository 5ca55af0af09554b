//! `rowhook new`: writes a handler project that builds and passes its own
//! test out of the box: the handler's source, its build file, a config, a
//! recorded binlog with the golden output the handler must give for it, a
//! test script that runs `rowhook test`, a README, and the SDK of the
//! language, as this rowhook ships it (so the project builds without
//! fetching a rowhook package from anywhere).
//!
//! Every language's handler does the same: each new order of `shop.orders`
//! becomes `{"order":<id>,"amount":"<decimal>"}` on the sink `out`, keyed
//! by the order id, and is counted in the handler's state; so every
//! language's project shares one golden file.

use std::path::{Path, PathBuf};

/// The languages `rowhook new` writes projects in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lang {
    /// Rust, with `rowhook-guest`.
    Rust,
}

impl Lang {
    /// The names `--lang` takes.
    pub const NAMES: &[&str] = &["rust"];

    /// The language named `name`.
    pub fn parse(name: &str) -> Result<Lang, String> {
        match name {
            "rust" => Ok(Lang::Rust),
            other => Err(format!(
                "`{other}` is not a language rowhook new knows; use one of {}",
                Self::NAMES.join(", ")
            )),
        }
    }
}

/// One file of a project: its path in the project and its bytes.
type File = (&'static str, &'static [u8]);

/// Files every project has.
const COMMON: &[File] = &[
    ("rowhook.toml", include_bytes!("../../templates/common/rowhook.toml")),
    ("golden/out.out", include_bytes!("../../templates/common/out.out")),
    (
        "tests/shop-bin.000001",
        include_bytes!("../../../examples/binlog/shop-bin.000001"),
    ),
];

/// The Rust project: the handler crate, and the SDK crates beside it.
const RUST: &[File] = &[
    ("Cargo.toml", include_bytes!("../../templates/rust/Cargo.toml")),
    ("src/lib.rs", include_bytes!("../../templates/rust/src/lib.rs")),
    ("test.sh", include_bytes!("../../templates/rust/test.sh")),
    ("README.md", include_bytes!("../../templates/rust/README.md")),
    (
        "sdk/rowhook-guest/Cargo.toml",
        include_bytes!("../../templates/rust/sdk/rowhook-guest.Cargo.toml"),
    ),
    (
        "sdk/rowhook-guest/wit/handler.wit",
        include_bytes!("../../../guest-sdk/wit/handler.wit"),
    ),
    (
        "sdk/rowhook-guest/src/lib.rs",
        include_bytes!("../../../guest-sdk/src/lib.rs"),
    ),
    (
        "sdk/rowhook-guest/src/caps.rs",
        include_bytes!("../../../guest-sdk/src/caps.rs"),
    ),
    (
        "sdk/rowhook-guest/src/change.rs",
        include_bytes!("../../../guest-sdk/src/change.rs"),
    ),
    (
        "sdk/rowhook-guest/src/error.rs",
        include_bytes!("../../../guest-sdk/src/error.rs"),
    ),
    (
        "sdk/rowhook-guest/src/json.rs",
        include_bytes!("../../../guest-sdk/src/json.rs"),
    ),
    (
        "sdk/rowhook-guest/src/testing.rs",
        include_bytes!("../../../guest-sdk/src/testing.rs"),
    ),
    (
        "sdk/rowhook-abi/Cargo.toml",
        include_bytes!("../../templates/rust/sdk/rowhook-abi.Cargo.toml"),
    ),
    (
        "sdk/rowhook-abi/SPEC.md",
        include_bytes!("../../../guest-sdk/abi/SPEC.md"),
    ),
    (
        "sdk/rowhook-abi/src/lib.rs",
        include_bytes!("../../../guest-sdk/abi/src/lib.rs"),
    ),
    (
        "sdk/rowhook-abi/src/read.rs",
        include_bytes!("../../../guest-sdk/abi/src/read.rs"),
    ),
    (
        "sdk/rowhook-abi/src/write.rs",
        include_bytes!("../../../guest-sdk/abi/src/write.rs"),
    ),
];

/// Whether `name` can name a project (and a Rust crate, a file, a handler):
/// lowercase ASCII letters, digits and `-`, starting with a letter.
fn valid_name(name: &str) -> bool {
    name.len() <= 64
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
}

/// Writes a `lang` project named `name` into `dir` (which must not exist, or
/// be empty); returns the files written.
pub fn new_project(lang: Lang, name: &str, dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    anyhow::ensure!(
        valid_name(name),
        "`{name}` cannot name a handler project: use lowercase letters, digits and `-`, starting with a letter (e.g. `orders-feed`)"
    );
    if let Ok(mut entries) = std::fs::read_dir(dir) {
        anyhow::ensure!(
            entries.next().is_none(),
            "{} exists and is not empty: choose another name or --dir",
            dir.display()
        );
    }
    let (files, module, memory_mb): (&[File], String, u32) = match lang {
        Lang::Rust => (
            RUST,
            format!("target/wasm32-wasip2/release/{}.wasm", name.replace('-', "_")),
            16,
        ),
    };
    let mut written = Vec::new();
    for (path, bytes) in COMMON.iter().chain(files) {
        let target = dir.join(path);
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent).map_err(|e| anyhow::anyhow!("creating {}: {e}", parent.display()))?;
        }
        let bytes: Vec<u8> = if path.ends_with(".bin") || path.contains("-bin.") {
            bytes.to_vec()
        } else {
            String::from_utf8_lossy(bytes)
                .replace("{{name}}", name)
                .replace("{{module}}", &module)
                .replace("{{memory_mb}}", &memory_mb.to_string())
                .replace("{{version}}", env!("CARGO_PKG_VERSION"))
                .into_bytes()
        };
        std::fs::write(&target, bytes).map_err(|e| anyhow::anyhow!("writing {}: {e}", target.display()))?;
        if path.ends_with(".sh") {
            use std::os::unix::fs::PermissionsExt as _;
            std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o755))?;
        }
        written.push(target);
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_languages_are_checked() {
        assert!(valid_name("orders-feed") && valid_name("h2"));
        for bad in ["", "Orders", "2fast", "a b", "a_b", "a/b", "../x"] {
            assert!(!valid_name(bad), "{bad}");
        }
        assert_eq!(Lang::parse("rust"), Ok(Lang::Rust));
        assert!(Lang::parse("cobol").unwrap_err().contains("use one of rust"));
    }

    #[test]
    fn a_project_is_written_with_its_names_filled_in_and_refused_over_files() {
        let dir = std::env::temp_dir().join(format!("rh-new-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let files = new_project(Lang::Rust, "orders-feed", &dir).unwrap();
        assert!(files.iter().any(|f| f.ends_with("sdk/rowhook-guest/src/change.rs")));
        let config = std::fs::read_to_string(dir.join("rowhook.toml")).unwrap();
        assert!(config.contains("name = \"orders-feed\""), "{config}");
        assert!(
            config.contains("target/wasm32-wasip2/release/orders_feed.wasm"),
            "{config}"
        );
        assert!(!config.contains("{{"), "{config}");
        let plan = crate::config::Plan::load(&dir.join("rowhook.toml")).unwrap();
        assert_eq!(plan.handlers[0].name, "orders-feed");
        assert_eq!(
            std::fs::read(dir.join("tests/shop-bin.000001")).unwrap(),
            include_bytes!("../../../examples/binlog/shop-bin.000001")
        );
        let again = new_project(Lang::Rust, "orders-feed", &dir).unwrap_err().to_string();
        assert!(again.contains("exists and is not empty"), "{again}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
