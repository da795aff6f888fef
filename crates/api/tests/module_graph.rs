//! No import circle between the top-level modules of a crate: a module that `state` (the hub
//! every handler reaches) imports must not import `state` back, and so on for every pair. The
//! graph is read from the sources: every `crate::…` path (and `super::…` reaching the crate
//! root) outside comments and the trailing `#[cfg(test)]` module, names re-exported by `lib.rs`
//! or `main.rs` resolved to the module they come from. `cargo test --test module_graph --
//! --ignored` checks every crate under crates/.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fs;
use std::path::{Path, PathBuf};

type Graph = BTreeMap<String, BTreeSet<String>>;

fn crates_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Every `.rs` file under `dir`, with its path relative to `src`.
fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|ext| ext == "rs") {
            out.push(path);
        }
    }
}

/// The code of a file without comments, up to its `#[cfg(test)]` module.
fn code(path: &Path) -> String {
    let text = fs::read_to_string(path).unwrap();
    let mut code = String::new();
    let mut lines = text.lines().peekable();
    while let Some(line) = lines.next() {
        let next = lines.peek().map_or("", |l| l.trim_start());
        if line.trim_start().starts_with("#[cfg(test)]") && next.starts_with("mod ") {
            break;
        }
        code.push_str(line.split("//").next().unwrap_or(""));
        code.push('\n');
    }
    code
}

fn is_ident(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

/// The first segment of each path at `rest`: `name` or each of `{a, b::c, d as e}`.
fn first_segments(rest: &str) -> Vec<String> {
    let rest = rest.trim_start();
    let Some(group) = rest.strip_prefix('{') else {
        return vec![rest.chars().take_while(|&c| is_ident(c)).collect()];
    };
    let mut names = Vec::new();
    let (mut depth, mut expect) = (1, true);
    for (i, c) in group.char_indices() {
        match c {
            '{' => depth += 1,
            '}' if depth == 1 => break,
            '}' => depth -= 1,
            ',' if depth == 1 => expect = true,
            c if expect && depth == 1 && is_ident(c) => {
                names.push(group[i..].chars().take_while(|&c| is_ident(c)).collect());
                expect = false;
            }
            c if !c.is_whitespace() => expect = false,
            _ => {}
        }
    }
    names
}

/// What the paths of `code` name at the crate root; `depth` is how deep its module is (1 for
/// `src/a.rs` and `src/a/mod.rs`), so that `super::` can be resolved.
fn root_names(code: &str, depth: usize) -> Vec<String> {
    let mut names = Vec::new();
    for (at, _) in code.match_indices("crate::") {
        let before = code[..at].chars().next_back();
        if before.is_none_or(|c| !is_ident(c)) {
            names.extend(first_segments(&code[at + "crate::".len()..]));
        }
    }
    for (at, _) in code.match_indices("super::") {
        let before = code[..at].chars().next_back();
        if before.is_some_and(|c| is_ident(c) || c == ':') {
            continue; // counted from the first `super::` of the path
        }
        let mut rest = &code[at..];
        let mut ups = 0;
        while let Some(next) = rest.strip_prefix("super::") {
            ups += 1;
            rest = next;
        }
        if ups >= depth {
            names.extend(first_segments(rest));
        }
    }
    names
}

/// Names a crate root re-exports (`pub use module::{A, B};`), with their module.
fn reexports(root: &str) -> BTreeMap<String, String> {
    let mut map = BTreeMap::new();
    for statement in root.split("pub use ").skip(1) {
        let statement = statement.split(';').next().unwrap_or("");
        let statement = statement
            .trim_start_matches("crate::")
            .trim_start_matches("self::");
        let module: String = statement.chars().take_while(|&c| is_ident(c)).collect();
        for name in statement[module.len()..].split(|c: char| !is_ident(c)) {
            if !name.is_empty() && name != "as" {
                map.insert(name.to_owned(), module.clone());
            }
        }
    }
    map
}

/// Top-level module -> the top-level modules it uses.
fn graph(src: &Path) -> Graph {
    let mut files = Vec::new();
    rust_files(src, &mut files);
    let mut modules = BTreeMap::new();
    let mut roots = String::new();
    for path in &files {
        let relative = path.strip_prefix(src).unwrap();
        let parts: Vec<String> = relative
            .iter()
            .map(|p| p.to_string_lossy().trim_end_matches(".rs").to_owned())
            .collect();
        match parts[0].as_str() {
            "lib" | "main" if parts.len() == 1 => roots.push_str(&code(path)),
            "bin" => {}
            // A module's own tests, in a file of their own.
            _ if parts.last().is_some_and(|p| p == "tests") => {}
            top => {
                let depth = parts.len() - usize::from(parts.last().is_some_and(|p| p == "mod"));
                modules
                    .entry(top.to_owned())
                    .or_insert_with(Vec::new)
                    .push((path.clone(), depth));
            }
        }
    }
    let reexported = reexports(&roots);
    let mut graph = Graph::new();
    for (module, files) in &modules {
        let uses = graph.entry(module.clone()).or_default();
        for (path, depth) in files {
            for name in root_names(&code(path), *depth) {
                let target = reexported.get(&name).unwrap_or(&name);
                if target != module && modules.contains_key(target) {
                    uses.insert(target.clone());
                }
            }
        }
    }
    graph
}

/// The shortest path of imports from `from` to `to`, if any.
fn path(graph: &Graph, from: &str, to: &str) -> Option<Vec<String>> {
    let mut came_from: BTreeMap<&str, &str> = BTreeMap::new();
    let mut queue = VecDeque::from([from]);
    while let Some(module) = queue.pop_front() {
        for next in graph.get(module).into_iter().flatten() {
            if came_from.contains_key(next.as_str()) || next == from {
                continue;
            }
            came_from.insert(next, module);
            if next == to {
                let mut path = vec![to.to_owned()];
                let mut at = to;
                while at != from {
                    at = came_from[at];
                    path.push(at.to_owned());
                }
                path.reverse();
                return Some(path);
            }
            queue.push_back(next);
        }
    }
    None
}

/// Each circle once, as `a → b → … → a`.
fn circles(graph: &Graph) -> Vec<String> {
    let mut seen = BTreeSet::new();
    let mut found = Vec::new();
    for (module, uses) in graph {
        for used in uses {
            let Some(back) = path(graph, used, module) else {
                continue;
            };
            let mut members: Vec<&String> = back.iter().collect();
            members.sort();
            members.dedup();
            if seen.insert(format!("{members:?}")) {
                found.push(format!("{module} → {}", back.join(" → ")));
            }
        }
    }
    found
}

fn crate_circles(name: &str) -> Vec<String> {
    circles(&graph(&crates_dir().join(name).join("src")))
        .into_iter()
        .map(|circle| format!("crates/{name}: {circle}"))
        .collect()
}

#[test]
fn the_api_crate_has_no_import_circle() {
    let graph = graph(&crates_dir().join("api/src"));
    assert!(graph.len() > 10, "the modules were found: {graph:?}");
    assert!(graph["gate"].contains("identity"), "{:?}", graph["gate"]);
    let circles = circles(&graph);
    assert!(circles.is_empty(), "import circles: {circles:#?}");
}

#[test]
fn no_crate_has_an_import_circle() {
    let mut circles = Vec::new();
    for entry in fs::read_dir(crates_dir()).unwrap() {
        let dir = entry.unwrap().path();
        if dir.join("src").is_dir() {
            circles.extend(crate_circles(&dir.file_name().unwrap().to_string_lossy()));
        }
    }
    assert!(circles.is_empty(), "import circles: {circles:#?}");
}

#[test]
fn a_circle_is_found() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path();
    fs::create_dir(src.join("b")).unwrap();
    fs::write(
        src.join("lib.rs"),
        "mod a;\nmod b;\nmod c;\npub use c::Thing;\n",
    )
    .unwrap();
    fs::write(src.join("a.rs"), "use crate::{c::X, d};\n").unwrap();
    fs::write(src.join("b/mod.rs"), "mod inner;\n").unwrap();
    fs::write(
        src.join("b/inner.rs"),
        "use super::super::a; // crate::c\nuse super::Near;\n",
    )
    .unwrap();
    fs::write(
        src.join("c.rs"),
        "pub struct Thing;\nfn f() { crate::b::g() }\n#[cfg(test)]\nmod tests { use crate::a; }\n",
    )
    .unwrap();
    let graph = graph(src);
    let uses = |m: &str| graph[m].iter().cloned().collect::<Vec<_>>();
    assert_eq!(uses("a"), ["c"]);
    assert_eq!(uses("b"), ["a"]);
    assert_eq!(uses("c"), ["b"], "tests and comments left out");
    assert_eq!(circles(&graph), ["a → c → b → a"]);
    fs::write(src.join("a.rs"), "use crate::Thing;\n").unwrap();
    assert_eq!(circles(&self::graph(src)), ["a → c → b → a"], "via lib.rs");
    fs::write(src.join("a.rs"), "").unwrap();
    assert!(circles(&self::graph(src)).is_empty());
}
