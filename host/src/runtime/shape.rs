//! What a component is made of, read before it is compiled: the interfaces
//! it imports and the core instances it creates. Reading it takes
//! milliseconds where compiling an interpreter-based component takes
//! seconds, so a component the sandbox refuses is refused at once.

use wasmparser::{Encoding, Instance, Parser, Payload};

/// A component's imports and size, as its binary declares them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shape {
    /// The names of the top-level imports (`wasi:cli/stdout@0.2.3`,
    /// `rowhook:handler/emit@0.1.0`).
    pub imports: Vec<String>,
    /// Core module instantiations, in the component and the components it
    /// nests. A nested component instantiated twice counts once: the figure
    /// is what a load refuses early, the store's own limit stays the cap.
    pub core_instances: u32,
}

/// Why the bytes are no component.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NotAComponent {
    /// A core module: what a compiler gives before the component step.
    CoreModule,
    /// The binary does not parse.
    Malformed(String),
}

/// Reads the shape of the component in `bytes`.
pub fn read(bytes: &[u8]) -> Result<Shape, NotAComponent> {
    let mut shape = Shape {
        imports: Vec::new(),
        core_instances: 0,
    };
    // Nested modules and components are parsed in line; their sections come
    // between their header and their `End`.
    let mut depth = 0u32;
    // A core module is told apart from a malformed file only once it
    // parses to its end.
    let mut core_module = false;
    for payload in Parser::new(0).parse_all(bytes) {
        match payload.map_err(|e| NotAComponent::Malformed(e.to_string()))? {
            Payload::Version { encoding, .. } => {
                core_module |= depth == 0 && encoding == Encoding::Module;
                depth += 1;
            }
            Payload::End(_) => depth = depth.saturating_sub(1),
            Payload::ComponentImportSection(reader) if depth == 1 => {
                for import in reader {
                    let import = import.map_err(|e| NotAComponent::Malformed(e.to_string()))?;
                    shape.imports.push(import.name.name.to_owned());
                }
            }
            Payload::InstanceSection(reader) => {
                for instance in reader {
                    let instance = instance.map_err(|e| NotAComponent::Malformed(e.to_string()))?;
                    if matches!(instance, Instance::Instantiate { .. }) {
                        shape.core_instances += 1;
                    }
                }
            }
            _ => {}
        }
    }
    if core_module {
        return Err(NotAComponent::CoreModule);
    }
    Ok(shape)
}

/// The build flag or change that removes `import` (an interface the sandbox
/// does not give), for the toolchains handlers are built with.
pub fn remedy(import: &str) -> &'static str {
    let base = import.split('@').next().unwrap_or(import);
    if base.starts_with("wasi:http/") {
        "a JavaScript handler built with componentize-js drops it with `--disable http`; in Rust, drop the HTTP client crate"
    } else if base.starts_with("wasi:cli/run") {
        "build a library (Rust `crate-type = [\"cdylib\"]`, C without `main`), not a command"
    } else if base.starts_with("wasi:") {
        "it is outside the handler sandbox; a Python handler built with componentize-py drops it with `--stub-wasi`; in Rust, drop the crate that uses it"
    } else {
        "rowhook gives handlers rowhook:handler and WASI interfaces only; drop the dependency that imports it"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A component of the given sections, built by hand: the preamble of a
    /// component (version 0xd, layer 1) then raw sections.
    fn component(sections: &[(u8, &[u8])]) -> Vec<u8> {
        let mut bytes = b"\0asm\x0d\x00\x01\x00".to_vec();
        for (id, body) in sections {
            bytes.push(*id);
            bytes.push(u8::try_from(body.len()).unwrap());
            bytes.extend_from_slice(body);
        }
        bytes
    }

    const EMPTY_MODULE: &[u8] = b"\0asm\x01\x00\x00\x00";

    #[test]
    fn imports_and_core_instances_are_read() {
        // Core module section (id 1) with an empty module, core instance
        // section (id 2) instantiating it twice and bagging exports once,
        // import section (id 10) importing an instance of type 0 under two
        // names, type section (id 7) with one empty instance type.
        let mut module = vec![];
        module.extend_from_slice(EMPTY_MODULE);
        let instances: &[u8] = &[3, 0x00, 0, 0, 0x00, 0, 0, 0x01, 0];
        let types: &[u8] = &[1, 0x42, 0];
        let mut imports = vec![2];
        for name in ["wasi:cli/stdout@0.2.3", "rowhook:handler/emit@0.1.0"] {
            imports.push(0x00);
            imports.push(name.len() as u8);
            imports.extend_from_slice(name.as_bytes());
            imports.extend_from_slice(&[0x05, 0]);
        }
        let bytes = component(&[(1, &module), (2, instances), (7, types), (10, &imports)]);
        let shape = read(&bytes).unwrap();
        assert_eq!(shape.imports, ["wasi:cli/stdout@0.2.3", "rowhook:handler/emit@0.1.0"]);
        assert_eq!(shape.core_instances, 2);
    }

    #[test]
    fn a_core_module_and_garbage_are_told_apart() {
        assert_eq!(read(EMPTY_MODULE), Err(NotAComponent::CoreModule));
        assert!(matches!(
            read(b"\0asm\x0d\x00\x01\x00\x07\x05"),
            Err(NotAComponent::Malformed(_))
        ));
        assert!(matches!(
            read(b"\0asm\x01\0\0\0garbage"),
            Err(NotAComponent::Malformed(_))
        ));
    }

    #[test]
    fn every_refused_import_gets_a_remedy_naming_a_flag_or_a_change() {
        assert!(remedy("wasi:http/outgoing-handler@0.3.0").contains("--disable http"));
        assert!(remedy("wasi:cli/run@0.2.0").contains("library"));
        assert!(remedy("wasi:keyvalue/store@0.2.0").contains("--stub-wasi"));
        assert!(remedy("acme:db/query").contains("drop the dependency"));
    }
}
