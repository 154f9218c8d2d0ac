//! Tidy (TigerBeetle's `tidy.zig`, in small): repository rules that a compiler lint cannot
//! express. `unsafe` appears only under `src/io/`, every unsafe block or impl carries a
//! `// SAFETY:` argument right above it, and no `dbg!`, `todo!` or `unimplemented!` is left in
//! the library.

use std::fs;
use std::path::{Path, PathBuf};

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

fn library_files() -> Vec<PathBuf> {
    let mut files = Vec::new();
    rust_files(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("src"),
        &mut files,
    );
    assert!(files.len() > 10, "found the sources");
    files
}

/// Lines that use `unsafe` as code (not in a comment or a string on that line).
fn unsafe_lines(text: &str) -> Vec<(usize, &str)> {
    text.lines()
        .enumerate()
        .filter(|(_, l)| {
            let code = l.split("//").next().unwrap_or("");
            !code.contains('"')
                && (code.contains("unsafe {")
                    || code.contains("unsafe impl")
                    || code.contains("unsafe fn"))
        })
        .collect()
}

#[test]
fn unsafe_lives_only_in_the_io_module() {
    let mut seen_in_io = 0;
    for file in library_files() {
        let text = fs::read_to_string(&file).unwrap();
        let in_io = file.components().any(|c| c.as_os_str() == "io");
        let lines = unsafe_lines(&text);
        assert!(
            in_io || lines.is_empty(),
            "{}: unsafe outside src/io: {lines:?}",
            file.display()
        );
        seen_in_io += lines.len();
    }
    // The scanner must see the mmap code's unsafe blocks, or it is checking nothing.
    assert!(
        seen_in_io >= 5,
        "scanner found only {seen_in_io} unsafe lines in src/io"
    );
}

#[test]
fn every_unsafe_block_has_a_safety_argument() {
    for file in library_files() {
        let text = fs::read_to_string(&file).unwrap();
        let all: Vec<&str> = text.lines().collect();
        for (i, line) in unsafe_lines(&text) {
            if line.contains("unsafe fn") {
                // An unsafe fn states its contract in a `# Safety` doc section instead.
                let doc = all[i.saturating_sub(12)..i]
                    .iter()
                    .any(|l| l.contains("# Safety"));
                assert!(
                    doc,
                    "{}:{}: unsafe fn without a # Safety section",
                    file.display(),
                    i + 1
                );
                continue;
            }
            // The argument may span several comment lines directly above the block.
            let mut j = i;
            let mut found = false;
            while j > 0 {
                j -= 1;
                let prev = all[j].trim();
                if prev.starts_with("// SAFETY:") {
                    found = true;
                    break;
                }
                if !prev.starts_with("//") && !prev.starts_with("#[") {
                    break;
                }
            }
            // `let x = unsafe { .. }` on the line after its comment is covered above; a block
            // opened inside an expression may carry the comment on the same statement.
            found |= line.contains("// SAFETY:");
            assert!(
                found,
                "{}:{}: unsafe without // SAFETY: {line}",
                file.display(),
                i + 1
            );
        }
    }
}

#[test]
fn no_debugging_leftovers_or_stubs_in_the_library() {
    for file in library_files() {
        let text = fs::read_to_string(&file).unwrap();
        for (i, line) in text.lines().enumerate() {
            let code = line.split("//").next().unwrap_or("");
            for banned in ["dbg!(", "todo!(", "unimplemented!("] {
                assert!(
                    !code.contains(banned),
                    "{}:{}: {banned}",
                    file.display(),
                    i + 1
                );
            }
        }
    }
}
