//! The two edits the image build makes to the interpreter's wasm: find a function by the name
//! its name section gives it, and export it from the instrumented module.

use std::ops::Range;

use anyhow::{Context as _, bail};
use wasmparser::{KnownCustom, Name, Parser, Payload};

/// The index of the function named `name` in `wasm`'s name section.
pub fn function_named(wasm: &[u8], name: &str) -> anyhow::Result<u32> {
    for payload in Parser::new(0).parse_all(wasm) {
        let Payload::CustomSection(custom) = payload.context("reading the interpreter's wasm")?
        else {
            continue;
        };
        let KnownCustom::Name(names) = custom.as_known() else {
            continue;
        };
        for subsection in names {
            let Ok(Name::Function(map)) = subsection else {
                continue;
            };
            for naming in map {
                let naming = naming.context("reading the function names")?;
                if naming.name == name {
                    return Ok(naming.index);
                }
            }
        }
    }
    bail!("the interpreter has no function named {name}")
}

/// `wasm` with one more export: function `index` under `export`.
pub fn with_export(wasm: &[u8], index: u32, export: &str) -> anyhow::Result<Vec<u8>> {
    let mut found: Option<(Range<usize>, wasm_encoder::ExportSection)> = None;
    for payload in Parser::new(0).parse_all(wasm) {
        if let Payload::ExportSection(reader) = payload.context("reading the interpreter's wasm")? {
            let mut section = wasm_encoder::ExportSection::new();
            for item in reader.clone() {
                let item = item.context("reading an export")?;
                let kind = wasm_encoder::ExportKind::from(item.kind);
                section.export(item.name, kind, item.index);
            }
            section.export(export, wasm_encoder::ExportKind::Func, index);
            found = Some((reader.range(), section));
        }
    }
    let Some((range, section)) = found else {
        bail!("the interpreter has no export section");
    };
    let start = section_start(wasm, &range)?;
    let mut out = Vec::with_capacity(wasm.len() + 64);
    out.extend_from_slice(&wasm[..start]);
    out.push(wasm_encoder::SectionId::Export as u8);
    wasm_encoder::Encode::encode(&section, &mut out);
    out.extend_from_slice(&wasm[range.end..]);
    Ok(out)
}

/// Where the export section whose contents span `contents` starts: its id byte, then its
/// size as LEB128 (1 to 5 bytes) come just before, and the size must be the contents' length.
fn section_start(wasm: &[u8], contents: &Range<usize>) -> anyhow::Result<usize> {
    for size_len in 1..=5 {
        let Some(start) = contents.start.checked_sub(size_len + 1) else {
            break;
        };
        if wasm[start] != wasm_encoder::SectionId::Export as u8 {
            continue;
        }
        let mut reader = wasmparser::BinaryReader::new(&wasm[start + 1..contents.start], 0);
        if let Ok(size) = reader.read_var_u32()
            && reader.eof()
            && size as usize == contents.len()
        {
            return Ok(start);
        }
    }
    bail!("cannot find the export section's header")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// (module (func $first) (func $second) (export "first" (func 0))) with a name section.
    fn module() -> Vec<u8> {
        let mut module = wasm_encoder::Module::new();
        let mut types = wasm_encoder::TypeSection::new();
        types.ty().function([], []);
        module.section(&types);
        let mut funcs = wasm_encoder::FunctionSection::new();
        funcs.function(0);
        funcs.function(0);
        module.section(&funcs);
        let mut exports = wasm_encoder::ExportSection::new();
        exports.export("first", wasm_encoder::ExportKind::Func, 0);
        module.section(&exports);
        let mut code = wasm_encoder::CodeSection::new();
        for _ in 0..2 {
            let mut body = wasm_encoder::Function::new([]);
            body.instructions().end();
            code.function(&body);
        }
        module.section(&code);
        let mut names = wasm_encoder::NameSection::new();
        let mut map = wasm_encoder::NameMap::new();
        map.append(0, "first");
        map.append(1, "second");
        names.functions(&map);
        module.section(&names);
        module.finish()
    }

    #[test]
    fn finds_a_function_by_name() {
        let wasm = module();
        assert_eq!(function_named(&wasm, "second").expect("ok"), 1);
        let err = function_named(&wasm, "third")
            .expect_err("an error")
            .to_string();
        assert_eq!(err, "the interpreter has no function named third");
    }

    #[test]
    fn adds_an_export_and_keeps_the_rest() {
        let wasm = module();
        let edited = with_export(&wasm, 1, "second_out").expect("ok");
        wasmparser::Validator::new()
            .validate_all(&edited)
            .expect("ok");
        let mut exports = Vec::new();
        for payload in Parser::new(0).parse_all(&edited) {
            if let Payload::ExportSection(reader) = payload.expect("ok") {
                for item in reader {
                    let item = item.expect("ok");
                    exports.push((item.name.to_owned(), item.index));
                }
            }
        }
        assert_eq!(
            exports,
            [("first".to_owned(), 0), ("second_out".to_owned(), 1)]
        );
        assert_eq!(function_named(&edited, "second").expect("ok"), 1);
    }
}
