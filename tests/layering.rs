//! The crate's layering, checked: no module uses one above it, and no two files use each
//! other.
//!
//! The layers are the table under "Layers, bottom up" in ARCHITECTURE.md, read here, so the
//! document and the check cannot disagree: a row may use the rows below it, never a row above
//! or another module of its own row. Within the crate, a file uses another when its code names
//! an item defined there (`use crate::...`, `super::...` or a path written inline); a
//! re-export (`pub use`, `pub(crate) use`) is followed to the file that defines the item, and
//! is not a use of its own: a `mod.rs` that re-exports its children is a facade, not a
//! dependency. Unit tests (`#[cfg(test)] mod tests`, last in a file) are left out: a test may
//! reach anything.
//!
//! It reads the source as text (rustc's own lints do not see between modules); what it
//! understands is the subset this crate writes: `use` trees with groups, `as` renames, and
//! paths from `crate`, `super` and `self`.

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;

/// A module's path below the crate root: `["server", "connection"]`; `[]` is `lib.rs`.
type ModPath = Vec<String>;

/// One source file's code, comments and unit tests removed.
struct File {
    code: String,
}

/// Every module of `src/`, by module path.
fn modules(root: &Path) -> BTreeMap<ModPath, File> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in fs::read_dir(&dir).expect("src/ is readable") {
            let path = entry.expect("a directory entry").path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            if path.extension().is_none_or(|e| e != "rs") {
                continue;
            }
            let rel = path.strip_prefix(root).expect("below src/");
            let mut module: ModPath = rel
                .with_extension("")
                .components()
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .collect();
            if module
                .last()
                .is_some_and(|last| last == "mod" || last == "lib")
            {
                module.pop();
            }
            let text = fs::read_to_string(&path).expect("a source file");
            out.insert(
                module,
                File {
                    code: code_of(&text),
                },
            );
        }
    }
    out
}

/// The code of a file without its comments, string literals and unit tests.
fn code_of(text: &str) -> String {
    // `#[cfg(test)]` or `#[cfg(all(test, ...))]` on the line before `mod tests {`.
    let tests = text.find("\nmod tests {").and_then(|at| {
        let line = text[..at].rfind('\n').map_or(0, |start| start + 1);
        text[line..at].starts_with("#[cfg(").then_some(line)
    });
    let text = &text[..tests.unwrap_or(text.len())];
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '/' if chars.peek() == Some(&'/') => {
                for c in chars.by_ref() {
                    if c == '\n' {
                        out.push('\n');
                        break;
                    }
                }
            }
            '/' if chars.peek() == Some(&'*') => {
                let mut last = ' ';
                for c in chars.by_ref() {
                    if last == '*' && c == '/' {
                        break;
                    }
                    last = c;
                }
            }
            '"' => {
                let mut escaped = false;
                for c in chars.by_ref() {
                    if !escaped && c == '"' {
                        break;
                    }
                    escaped = !escaped && c == '\\';
                }
                out.push_str("\"\"");
            }
            // A char literal holding a quote would open a string above.
            '\'' if chars.peek() == Some(&'"') => {
                chars.next();
                chars.next();
            }
            c => out.push(c),
        }
    }
    out
}

/// One path a file names: absolute (from the crate root), and whether it is a re-export.
struct Named {
    path: ModPath,
    reexport: bool,
}

/// The paths a module's code names inside the crate, made absolute.
fn named(module: &ModPath, children: &dyn Fn(&str) -> bool, code: &str) -> Vec<Named> {
    let mut out = Vec::new();
    // `use` statements: their trees expanded, each leaf a path.
    let mut rest = code;
    let mut spans = Vec::new();
    while let Some(at) = find_word(rest, "use") {
        let start = code.len() - rest.len() + at;
        let Some(end) = code[start..].find(';') else {
            break;
        };
        let before = code[..start].trim_end();
        let reexport = ["pub", "pub(crate)", "pub(super)"]
            .iter()
            .any(|v| before.ends_with(v));
        let tree = &code[start + 3..start + end];
        let mut leaves = Vec::new();
        expand(tree.trim(), Vec::new(), &mut leaves);
        for leaf in leaves {
            if let Some(path) = absolute(module, children, &leaf) {
                out.push(Named { path, reexport });
            }
        }
        spans.push(start..start + end);
        rest = &code[start + end..];
    }
    // Paths written inline in the code, outside `use` statements.
    let mut at = 0;
    let bytes = code.as_bytes();
    while at < code.len() {
        if spans.iter().any(|s| s.contains(&at)) {
            at += 1;
            continue;
        }
        let boundary = at == 0
            || !(bytes[at - 1].is_ascii_alphanumeric()
                || bytes[at - 1] == b'_'
                || bytes[at - 1] == b':');
        let head = ["crate::", "super::"]
            .into_iter()
            .find(|h| code[at..].starts_with(h));
        if let (true, Some(_)) = (boundary, head) {
            let len = code[at..]
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
                .unwrap_or(code.len() - at);
            let segments: Vec<String> = code[at..at + len]
                .split("::")
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect();
            if let Some(path) = absolute(module, &|_| false, &segments) {
                out.push(Named {
                    path,
                    reexport: false,
                });
            }
            at += len;
        } else {
            at += 1;
        }
    }
    out
}

/// Where the word `word` starts in `text`, standing alone.
fn find_word(text: &str, word: &str) -> Option<usize> {
    let bytes = text.as_bytes();
    let mut from = 0;
    while let Some(found) = text[from..].find(word) {
        let at = from + found;
        let end = at + word.len();
        let alone = |i: usize| !(bytes[i].is_ascii_alphanumeric() || bytes[i] == b'_');
        if (at == 0 || alone(at - 1)) && end < text.len() && bytes[end].is_ascii_whitespace() {
            return Some(at);
        }
        from = end;
    }
    None
}

/// A `use` tree's leaves: `a::{b, c::{d as e}}` gives `a::b`, `a::c::d`.
fn expand(tree: &str, prefix: Vec<String>, out: &mut Vec<Vec<String>>) {
    let tree = tree.trim();
    if tree.is_empty() {
        return;
    }
    if let Some(open) = tree.find('{') {
        let mut path = prefix;
        path.extend(segments(&tree[..open]));
        let inner = &tree[open + 1..tree.rfind('}').unwrap_or(tree.len())];
        let mut depth = 0;
        let mut start = 0;
        for (i, c) in inner.char_indices() {
            match c {
                '{' => depth += 1,
                '}' => depth -= 1,
                ',' if depth == 0 => {
                    expand(&inner[start..i], path.clone(), out);
                    start = i + 1;
                }
                _ => {}
            }
        }
        expand(&inner[start..], path, out);
    } else {
        let name = tree.split(" as ").next().unwrap_or(tree);
        let mut path = prefix;
        path.extend(segments(name));
        out.push(path);
    }
}

fn segments(text: &str) -> impl Iterator<Item = String> + '_ {
    text.split("::")
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
}

/// A path made absolute; `None` for one outside the crate (`std::`, a dependency). A `use`
/// may also start at a child module of its own (`use history::Ring;` in `server/mod.rs`):
/// `children` says which names are.
fn absolute(module: &ModPath, children: &dyn Fn(&str) -> bool, path: &[String]) -> Option<ModPath> {
    let (first, rest) = path.split_first()?;
    // A module's `self` is itself and its `super` its parent, whether it is a file or a
    // directory's `mod.rs`.
    let mut base = match first.as_str() {
        "crate" => Vec::new(),
        "self" => module.clone(),
        "super" => module[..module.len().saturating_sub(1)].to_vec(),
        child if children(child) => {
            let mut base = module.clone();
            base.push(child.to_owned());
            base
        }
        _ => return None,
    };
    let mut rest = rest;
    while let Some(("super", tail)) = rest.split_first().map(|(h, t)| (h.as_str(), t)) {
        base.pop();
        rest = tail;
    }
    base.extend(rest.iter().filter(|s| *s != "self").cloned());
    Some(base)
}

/// Whether `module` has a child module `name`.
fn has_child(files: &BTreeMap<ModPath, File>, module: &ModPath, name: &str) -> bool {
    let mut child = module.clone();
    child.push(name.to_owned());
    files.contains_key(&child)
}

/// The crate: every module, and what each re-exports (name → absolute path).
struct Crate {
    files: BTreeMap<ModPath, File>,
    reexports: BTreeMap<ModPath, BTreeMap<String, ModPath>>,
}

impl Crate {
    fn read(root: &Path) -> Self {
        let files = modules(root);
        let mut reexports: BTreeMap<ModPath, BTreeMap<String, ModPath>> = BTreeMap::new();
        for (module, file) in &files {
            for n in named(module, &|name| has_child(&files, module, name), &file.code) {
                if n.reexport
                    && let Some(name) = n.path.last()
                {
                    reexports
                        .entry(module.clone())
                        .or_default()
                        .insert(name.clone(), n.path.clone());
                }
            }
        }
        Crate { files, reexports }
    }

    /// The file that defines what `path` names: modules followed, re-exports too.
    fn defined_in(&self, path: &[String], depth: usize) -> Option<ModPath> {
        let mut module: ModPath = Vec::new();
        for (i, segment) in path.iter().enumerate() {
            let mut child = module.clone();
            child.push(segment.clone());
            if self.files.contains_key(&child) {
                module = child;
                continue;
            }
            if depth < 8
                && let Some(target) = self.reexports.get(&module).and_then(|r| r.get(segment))
            {
                let mut target = target.clone();
                target.extend(path[i + 1..].iter().cloned());
                return self.defined_in(&target, depth + 1);
            }
            break;
        }
        Some(module)
    }

    /// File → the files it uses, each with the first path that names it.
    fn uses(&self) -> BTreeMap<ModPath, BTreeMap<ModPath, String>> {
        let mut out: BTreeMap<ModPath, BTreeMap<ModPath, String>> = BTreeMap::new();
        for (module, file) in &self.files {
            let used = out.entry(module.clone()).or_default();
            for n in named(
                module,
                &|name| has_child(&self.files, module, name),
                &file.code,
            ) {
                if n.reexport {
                    continue;
                }
                if let Some(target) = self.defined_in(&n.path, 0)
                    && &target != module
                    && !target.is_empty()
                {
                    used.entry(target).or_insert_with(|| n.path.join("::"));
                }
            }
        }
        out
    }
}

/// The "Layers, bottom up" section of ARCHITECTURE.md.
fn section(architecture: &str) -> &str {
    let section = architecture
        .split("## Layers, bottom up")
        .nth(1)
        .expect("ARCHITECTURE.md has a \"Layers, bottom up\" section");
    section.split("\n## ").next().unwrap_or(section)
}

/// The pairs of files that ARCHITECTURE.md says use each other, and why: its lines
/// ``- `a` and `b` use each other: ...``, each pair sorted.
fn allowed_pairs(architecture: &str) -> Vec<(String, String)> {
    section(architecture)
        .lines()
        .filter(|l| l.starts_with("- `") && l.contains("` use each other"))
        .filter_map(|l| {
            let mut names = l.split('`').skip(1).step_by(2).map(|n| {
                n.trim_start_matches("src/")
                    .trim_end_matches(".rs")
                    .to_owned()
            });
            let (a, b) = (names.next()?, names.next()?);
            Some(if a < b { (a, b) } else { (b, a) })
        })
        .collect()
}

/// The layers of ARCHITECTURE.md, top first: each row's top-level modules.
fn layers(architecture: &str) -> Vec<Vec<String>> {
    section(architecture)
        .lines()
        .filter(|l| l.starts_with("| `"))
        .map(|row| {
            let cell = row.split('|').nth(1).unwrap_or("");
            cell.split('`')
                .skip(1)
                .step_by(2)
                .map(|m| m.trim_end_matches('/').trim_end_matches(".rs").to_owned())
                .collect()
        })
        .collect()
}

fn show(path: &ModPath) -> String {
    if path.is_empty() {
        "lib".to_owned()
    } else {
        path.join("/")
    }
}

#[test]
fn no_module_uses_one_above_it_and_no_two_files_use_each_other() {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    let krate = Crate::read(&manifest.join("src"));
    let architecture =
        fs::read_to_string(manifest.join("ARCHITECTURE.md")).expect("ARCHITECTURE.md");
    let layers = layers(&architecture);
    let allowed = allowed_pairs(&architecture);
    let mut excused = Vec::new();
    assert!(
        layers.len() > 5,
        "the layering table was not found in ARCHITECTURE.md: {layers:?}"
    );
    let rank = |top: &str| layers.iter().position(|row| row.iter().any(|m| m == top));
    let uses = krate.uses();
    let mut wrong = Vec::new();
    for (module, used) in &uses {
        let Some(top) = module.first() else { continue };
        let Some(own) = rank(top) else {
            wrong.push(format!(
                "{}: module `{top}` is in no row of the layering table",
                show(module)
            ));
            continue;
        };
        for (target, why) in used {
            let other = &target[0];
            if other == top {
                let back = uses.get(target).and_then(|back| back.get(module));
                if let Some(back) = back
                    && module < target
                {
                    if allowed.contains(&(show(module), show(target))) {
                        excused.push((show(module), show(target)));
                        continue;
                    }
                    wrong.push(format!(
                        "{} and {} use each other ({why}; {back})",
                        show(module),
                        show(target)
                    ));
                }
                continue;
            }
            match rank(other) {
                // Rows are listed top first: a smaller index is higher.
                Some(theirs) if theirs > own => {}
                Some(_) => wrong.push(format!(
                    "{} uses {}, which is not below it ({why})",
                    show(module),
                    show(target)
                )),
                None => wrong.push(format!(
                    "{}: module `{other}` is in no row of the layering table",
                    show(target)
                )),
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "the layering is broken:\n{}",
        wrong.join("\n")
    );
}

#[test]
fn the_checker_sees_through_use_trees_and_reexports() {
    let mut leaves = Vec::new();
    expand(
        "crate::a::{b, c::{d as e, self}, f::G}",
        Vec::new(),
        &mut leaves,
    );
    let shown: Vec<String> = leaves.iter().map(|l| l.join("::")).collect();
    assert_eq!(
        shown,
        [
            "crate::a::b",
            "crate::a::c::d",
            "crate::a::c::self",
            "crate::a::f::G"
        ]
    );
    let module: ModPath = vec!["server".into(), "driver".into()];
    let named = named(
        &module,
        &|_| false,
        "use super::outbox::Outbox;\nfn f() { crate::protocol::Message::parse(x); }\n",
    );
    let paths: Vec<String> = named.iter().map(|n| n.path.join("::")).collect();
    assert_eq!(
        paths,
        ["server::outbox::Outbox", "protocol::Message::parse"]
    );
    let code = code_of(
        "// crate::a::b\nlet s = \"crate::x\"; /* super::y */ use crate::c;\n#[cfg(test)]\nmod tests { use crate::d; }",
    );
    assert!(!code.contains("crate::a") && !code.contains("crate::x") && !code.contains("super::y"));
    assert!(code.contains("crate::c") && !code.contains("crate::d"));
}
