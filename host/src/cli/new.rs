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
    /// JavaScript, with `@rowhook/guest` (QuickJS).
    Js,
    /// Python, with `rowhook_guest` (componentize-py).
    Python,
    /// C, with `rowhook.h`.
    C,
}

impl Lang {
    /// The names `--lang` takes.
    pub const NAMES: &[&str] = &["rust", "js", "python", "c"];

    /// The language named `name`.
    pub fn parse(name: &str) -> Result<Lang, String> {
        match name {
            "rust" => Ok(Lang::Rust),
            "js" | "javascript" => Ok(Lang::Js),
            "python" => Ok(Lang::Python),
            "c" => Ok(Lang::C),
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
        "sdk/rowhook-guest/src/sql.rs",
        include_bytes!("../../../guest-sdk/src/sql.rs"),
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

/// The JavaScript project: the handler module, and the SDK with its build
/// command and lock file (its build tools come from npm at the first
/// build) beside the WIT it reads.
const JS: &[File] = &[
    ("handler.js", include_bytes!("../../templates/js/handler.js")),
    ("test.sh", include_bytes!("../../templates/js/test.sh")),
    ("README.md", include_bytes!("../../templates/js/README.md")),
    (
        "sdk/wit/handler.wit",
        include_bytes!("../../../guest-sdk/wit/handler.wit"),
    ),
    ("sdk/js/README.md", include_bytes!("../../../guest-sdk/js/README.md")),
    (
        "sdk/js/bin/rowhook-js.js",
        include_bytes!("../../../guest-sdk/js/bin/rowhook-js.js"),
    ),
    ("sdk/js/index.d.ts", include_bytes!("../../../guest-sdk/js/index.d.ts")),
    (
        "sdk/js/testing.d.ts",
        include_bytes!("../../../guest-sdk/js/testing.d.ts"),
    ),
    (
        "sdk/js/package-lock.json",
        include_bytes!("../../../guest-sdk/js/package-lock.json"),
    ),
    (
        "sdk/js/package.json",
        include_bytes!("../../../guest-sdk/js/package.json"),
    ),
    (
        "sdk/js/src/caps.js",
        include_bytes!("../../../guest-sdk/js/src/caps.js"),
    ),
    (
        "sdk/js/src/change.js",
        include_bytes!("../../../guest-sdk/js/src/change.js"),
    ),
    (
        "sdk/js/src/errors.js",
        include_bytes!("../../../guest-sdk/js/src/errors.js"),
    ),
    (
        "sdk/js/src/host.js",
        include_bytes!("../../../guest-sdk/js/src/host.js"),
    ),
    (
        "sdk/js/src/index.js",
        include_bytes!("../../../guest-sdk/js/src/index.js"),
    ),
    (
        "sdk/js/src/json.js",
        include_bytes!("../../../guest-sdk/js/src/json.js"),
    ),
    ("sdk/js/src/run.js", include_bytes!("../../../guest-sdk/js/src/run.js")),
    (
        "sdk/js/src/testing.js",
        include_bytes!("../../../guest-sdk/js/src/testing.js"),
    ),
    (
        "sdk/js/src/utf8.js",
        include_bytes!("../../../guest-sdk/js/src/utf8.js"),
    ),
    ("sdk/js/src/wit.js", include_bytes!("../../../guest-sdk/js/src/wit.js")),
];

/// The Python project: the handler module, and the SDK package with its
/// build command and the WIT it reads.
const PYTHON: &[File] = &[
    ("app.py", include_bytes!("../../templates/python/app.py")),
    ("test.sh", include_bytes!("../../templates/python/test.sh")),
    ("README.md", include_bytes!("../../templates/python/README.md")),
    (
        "sdk/python/rowhook_guest/handler.wit",
        include_bytes!("../../../guest-sdk/wit/handler.wit"),
    ),
    (
        "sdk/python/README.md",
        include_bytes!("../../../guest-sdk/python/README.md"),
    ),
    (
        "sdk/python/pyproject.toml",
        include_bytes!("../../../guest-sdk/python/pyproject.toml"),
    ),
    (
        "sdk/python/rowhook_guest/__init__.py",
        include_bytes!("../../../guest-sdk/python/rowhook_guest/__init__.py"),
    ),
    (
        "sdk/python/rowhook_guest/__main__.py",
        include_bytes!("../../../guest-sdk/python/rowhook_guest/__main__.py"),
    ),
    (
        "sdk/python/rowhook_guest/_component.py",
        include_bytes!("../../../guest-sdk/python/rowhook_guest/_component.py"),
    ),
    (
        "sdk/python/rowhook_guest/_export.py",
        include_bytes!("../../../guest-sdk/python/rowhook_guest/_export.py"),
    ),
    (
        "sdk/python/rowhook_guest/_host.py",
        include_bytes!("../../../guest-sdk/python/rowhook_guest/_host.py"),
    ),
    (
        "sdk/python/rowhook_guest/_imports.py",
        include_bytes!("../../../guest-sdk/python/rowhook_guest/_imports.py"),
    ),
    (
        "sdk/python/rowhook_guest/_wit.py",
        include_bytes!("../../../guest-sdk/python/rowhook_guest/_wit.py"),
    ),
    (
        "sdk/python/rowhook_guest/build.py",
        include_bytes!("../../../guest-sdk/python/rowhook_guest/build.py"),
    ),
    (
        "sdk/python/rowhook_guest/change.py",
        include_bytes!("../../../guest-sdk/python/rowhook_guest/change.py"),
    ),
    (
        "sdk/python/rowhook_guest/errors.py",
        include_bytes!("../../../guest-sdk/python/rowhook_guest/errors.py"),
    ),
    (
        "sdk/python/rowhook_guest/jsonline.py",
        include_bytes!("../../../guest-sdk/python/rowhook_guest/jsonline.py"),
    ),
    (
        "sdk/python/rowhook_guest/log.py",
        include_bytes!("../../../guest-sdk/python/rowhook_guest/log.py"),
    ),
    (
        "sdk/python/rowhook_guest/metrics.py",
        include_bytes!("../../../guest-sdk/python/rowhook_guest/metrics.py"),
    ),
    (
        "sdk/python/rowhook_guest/state.py",
        include_bytes!("../../../guest-sdk/python/rowhook_guest/state.py"),
    ),
    (
        "sdk/python/rowhook_guest/testing.py",
        include_bytes!("../../../guest-sdk/python/rowhook_guest/testing.py"),
    ),
];

/// The C project: the handler, its Makefile, and the header with the
/// generated bindings.
const C: &[File] = &[
    ("handler.c", include_bytes!("../../templates/c/handler.c")),
    ("Makefile", include_bytes!("../../templates/c/Makefile")),
    ("test.sh", include_bytes!("../../templates/c/test.sh")),
    ("README.md", include_bytes!("../../templates/c/README.md")),
    ("sdk/c/README.md", include_bytes!("../../../guest-sdk/c/README.md")),
    ("sdk/c/rowhook.h", include_bytes!("../../../guest-sdk/c/rowhook.h")),
    ("sdk/c/rowhook.mk", include_bytes!("../../../guest-sdk/c/rowhook.mk")),
    (
        "sdk/c/gen/handler.c",
        include_bytes!("../../../guest-sdk/c/gen/handler.c"),
    ),
    (
        "sdk/c/gen/handler.h",
        include_bytes!("../../../guest-sdk/c/gen/handler.h"),
    ),
    (
        "sdk/c/gen/handler_component_type.o",
        include_bytes!("../../../guest-sdk/c/gen/handler_component_type.o"),
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
        Lang::Js => (JS, "handler.wasm".to_owned(), 32),
        Lang::Python => (PYTHON, "app.wasm".to_owned(), 32),
        Lang::C => (C, "handler.wasm".to_owned(), 16),
    };
    let mut written = Vec::new();
    for (path, bytes) in COMMON.iter().chain(files) {
        let target = dir.join(path);
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent).map_err(|e| anyhow::anyhow!("creating {}: {e}", parent.display()))?;
        }
        // The binlog, and the SDKs' files (a compiled object among them),
        // are copied as they are; the Rust SDK's manifests take the version.
        let verbatim = path.contains("-bin.") || (path.starts_with("sdk/") && !path.ends_with("Cargo.toml"));
        let bytes: Vec<u8> = if verbatim {
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
        assert_eq!(Lang::parse("js"), Ok(Lang::Js));
        assert_eq!(Lang::parse("python"), Ok(Lang::Python));
        assert_eq!(Lang::parse("c"), Ok(Lang::C));
        assert!(
            Lang::parse("cobol")
                .unwrap_err()
                .contains("use one of rust, js, python, c")
        );
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
        let manifest = std::fs::read_to_string(dir.join("sdk/rowhook-guest/Cargo.toml")).unwrap();
        assert!(
            manifest.contains(&format!("version = \"{}\"", env!("CARGO_PKG_VERSION"))),
            "{manifest}"
        );
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

#[cfg(test)]
mod sdk_files {
    use super::*;

    /// The files of `dir` (under the repository) that git tracks and a
    /// project needs: everything but the SDK's own tests, benchmarks and
    /// optional engines.
    fn tracked(dir: &str) -> Vec<String> {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let out = std::process::Command::new("git")
            .args(["ls-files", dir])
            .current_dir(&root)
            .output()
            .expect("git ls-files");
        String::from_utf8(out.stdout)
            .unwrap()
            .lines()
            .map(|l| l.strip_prefix(dir).unwrap().trim_start_matches('/').to_owned())
            .filter(|f| {
                !(f.starts_with("test/")
                    || f.starts_with("tests/")
                    || f.starts_with("bench/")
                    || f.starts_with("engines/")
                    || f.starts_with('.')
                    || f == "Makefile"
                    || f == "regen.sh")
            })
            .collect()
    }

    /// Every file of each SDK goes into its projects: a file added to an SDK
    /// and not here fails this test rather than a user's build.
    #[test]
    fn projects_carry_every_file_of_their_sdk() {
        for (lang, files, dir, prefix) in [
            ("js", JS, "guest-sdk/js", "sdk/js/"),
            ("python", PYTHON, "guest-sdk/python", "sdk/python/"),
            ("c", C, "guest-sdk/c", "sdk/c/"),
        ] {
            let carried: Vec<&str> = files.iter().filter_map(|(p, _)| p.strip_prefix(prefix)).collect();
            for file in tracked(dir) {
                assert!(
                    carried.contains(&file.as_str()),
                    "{lang}: {dir}/{file} is not in its projects"
                );
            }
        }
    }
}
