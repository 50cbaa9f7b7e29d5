//! A tidy check: no two source files of the simulator or of the server import each other in a
//! circle (issue 10). Layers are how a newcomer reads a crate: the simulator's engine stands
//! below its hosts and each host beside the others; the server's node loop stands below its
//! transport and frontends. A circle between files means neither can be read, changed or
//! tested without the other, and it grows with every scheme added.
//!
//! It reads the sources as text. A file is a module (`a/b.rs` and `a/b/mod.rs` are `a::b`;
//! `lib.rs` and `main.rs` are the crate root). An import is a path that starts with `crate::`,
//! `super::` or `self::`, in a `use` item (trees such as `use crate::{a::X, b::{Y, Z}}` are
//! expanded) or in code; comments, doc comments and string literals are skipped. A path
//! names the file of its longest module prefix; a name the crate root re-exports
//! (`crate::RunReport`) names the file it comes from. `super::` inside an inline module
//! (`mod tests { use super::*; }`) names its own file, which is not an edge. A module's bare
//! references to its own children (`child::f()`) are not counted: a parent declares its
//! children, and only their imports of it can close a circle. A cycle is printed file by
//! file, with the line of each import.

mod common;

use std::collections::{BTreeMap, BTreeSet};

/// The source trees checked, relative to `crates/`.
const CHECKED: [&str; 2] = ["sim/src", "server/src"];

/// A module path inside one crate (`["runtime", "driver"]`); empty for the crate root.
type ModulePath = Vec<String>;

/// One import edge: the target file and the first line of the source file that imports it.
type Edges = BTreeMap<ModulePath, BTreeMap<ModulePath, usize>>;

/// The module a file holds, from its path relative to the crate's `src`.
fn module_of(relative: &str) -> ModulePath {
    let mut parts: ModulePath = relative
        .trim_end_matches(".rs")
        .split('/')
        .map(str::to_string)
        .collect();
    if parts.last().is_some_and(|last| last == "mod") {
        parts.pop();
    }
    if parts.len() == 1 && (parts[0] == "lib" || parts[0] == "main") {
        parts.clear();
    }
    parts
}

/// A token of Rust source: an identifier or keyword, `::`, or one other character; each with
/// its line number. Comments and the contents of string and character literals are dropped.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Token {
    text: String,
    line: usize,
}

fn tokens(source: &str) -> Vec<Token> {
    let chars: Vec<char> = source.chars().collect();
    let mut out = Vec::new();
    let mut line = 1;
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let next = chars.get(i + 1).copied();
        if c == '\n' {
            line += 1;
            i += 1;
        } else if c == '/' && next == Some('/') {
            while i < chars.len() && chars[i] != '\n' {
                i += 1;
            }
        } else if c == '/' && next == Some('*') {
            i += 2;
            while i < chars.len() && !(chars[i] == '*' && chars.get(i + 1) == Some(&'/')) {
                line += usize::from(chars[i] == '\n');
                i += 1;
            }
            i += 2;
        } else if c == '"' {
            i += 1;
            while i < chars.len() && chars[i] != '"' {
                line += usize::from(chars[i] == '\n');
                i += if chars[i] == '\\' { 2 } else { 1 };
            }
            i += 1;
        } else if c == '\'' && chars.get(i + 2) == Some(&'\'') {
            i += 3; // a character literal such as '"' or '{'
        } else if c == '\'' && next == Some('\\') {
            i += 3; // past the quote, the backslash and the escaped character
            while i < chars.len() && chars[i] != '\'' {
                i += 1;
            }
            i += 1;
        } else if c.is_alphanumeric() || c == '_' {
            let start = i;
            while i < chars.len() && (chars[i].is_alphanumeric() || chars[i] == '_') {
                i += 1;
            }
            out.push(Token {
                text: chars[start..i].iter().collect(),
                line,
            });
        } else if c == ':' && next == Some(':') {
            out.push(Token {
                text: "::".into(),
                line,
            });
            i += 2;
        } else {
            if !c.is_whitespace() {
                out.push(Token {
                    text: c.to_string(),
                    line,
                });
            }
            i += 1;
        }
    }
    out
}

/// Expands a `use` tree (the tokens between `use` and `;`) into its paths.
fn use_paths(tree: &[Token]) -> Vec<(Vec<String>, usize)> {
    fn expand(
        tree: &[Token],
        at: &mut usize,
        prefix: &[String],
        out: &mut Vec<(Vec<String>, usize)>,
    ) {
        let mut path = prefix.to_vec();
        let line = tree.get(*at).map_or(0, |token| token.line);
        while *at < tree.len() {
            let text = tree[*at].text.as_str();
            match text {
                "::" => *at += 1,
                "{" => {
                    *at += 1;
                    loop {
                        expand(tree, at, &path, out);
                        match tree.get(*at).map(|token| token.text.as_str()) {
                            Some(",") => *at += 1,
                            Some("}") => {
                                *at += 1;
                                return;
                            }
                            _ => return,
                        }
                    }
                }
                "," | "}" => break,
                "as" => *at += 2, // the alias names nothing new
                "self" if path.len() == prefix.len() && !prefix.is_empty() => *at += 1,
                _ => {
                    path.push(text.to_string());
                    *at += 1;
                }
            }
        }
        out.push((path, line));
    }
    let mut out = Vec::new();
    let mut at = 0;
    expand(tree, &mut at, &[], &mut out);
    out
}

/// Every path a file names that starts with `crate`, `super` or `self`, made absolute
/// (relative to the crate root), with its line.
fn imports(module: &ModulePath, source: &str) -> Vec<(ModulePath, usize)> {
    let tokens = tokens(source);
    let mut out = Vec::new();
    // Inline modules (`mod tests { … }`) open at a brace depth; `super` inside one is relative
    // to it.
    let mut inline: Vec<(String, usize)> = Vec::new();
    let mut depth = 0;
    let mut i = 0;
    while i < tokens.len() {
        let here: ModulePath = module
            .iter()
            .cloned()
            .chain(inline.iter().map(|(name, _)| name.clone()))
            .collect();
        let text = tokens[i].text.as_str();
        let mut raw: Vec<(Vec<String>, usize)> = Vec::new();
        if text == "mod" && tokens.get(i + 2).is_some_and(|token| token.text == "{") {
            inline.push((tokens[i + 1].text.clone(), depth + 1));
        }
        match text {
            "{" => depth += 1,
            "}" => {
                if inline.last().is_some_and(|(_, open)| *open == depth) {
                    inline.pop();
                }
                depth -= 1;
            }
            "use" => {
                let end = tokens[i..]
                    .iter()
                    .position(|token| token.text == ";")
                    .map_or(tokens.len(), |offset| i + offset);
                raw = use_paths(&tokens[i + 1..end]);
                i = end;
            }
            "crate" | "super" | "self"
                if tokens.get(i + 1).is_some_and(|token| token.text == "::")
                    && (i == 0 || tokens[i - 1].text != "::") =>
            {
                let line = tokens[i].line;
                let mut path = vec![text.to_string()];
                let mut j = i + 1;
                while tokens.get(j).is_some_and(|token| token.text == "::")
                    && tokens.get(j + 1).is_some_and(|token| {
                        token
                            .text
                            .starts_with(|c: char| c.is_alphabetic() || c == '_')
                    })
                {
                    path.push(tokens[j + 1].text.clone());
                    j += 2;
                }
                raw.push((path, line));
                i = j - 1;
            }
            _ => {}
        }
        for (path, line) in raw {
            if let Some(absolute) = absolute(&here, &path) {
                out.push((absolute, line));
            }
        }
        i += 1;
    }
    out
}

/// A path made relative to the crate root; `None` for paths into other crates.
fn absolute(here: &ModulePath, path: &[String]) -> Option<ModulePath> {
    let mut base = here.clone();
    let mut rest = path;
    match rest.first().map(String::as_str) {
        Some("crate") => {
            base.clear();
            rest = &rest[1..];
        }
        Some("self") => rest = &rest[1..],
        Some("super") => {
            while rest.first().is_some_and(|segment| segment == "super") {
                base.pop()?;
                rest = &rest[1..];
            }
        }
        _ => return None,
    }
    base.extend(rest.iter().cloned());
    Some(base)
}

/// The import graph of one crate's source files, given as (path relative to `src`, text).
fn graph(files: &[(String, String)]) -> (Edges, BTreeMap<ModulePath, String>) {
    let names: BTreeMap<ModulePath, String> = files
        .iter()
        .map(|(relative, _)| (module_of(relative), relative.clone()))
        .collect();
    // What the crate root re-exports: `pub use a::b::{X, Y}` makes `crate::X` mean `a::b::X`.
    let mut reexports: BTreeMap<String, ModulePath> = BTreeMap::new();
    for (relative, text) in files {
        if module_of(relative).is_empty() {
            let tokens = tokens(text);
            for (at, token) in tokens.iter().enumerate() {
                if token.text == "use" {
                    let end = tokens[at..]
                        .iter()
                        .position(|token| token.text == ";")
                        .map_or(tokens.len(), |offset| at + offset);
                    for (path, _) in use_paths(&tokens[at + 1..end]) {
                        if let Some(name) = path.last() {
                            let from = absolute(&Vec::new(), &path).unwrap_or_else(|| path.clone());
                            reexports.insert(name.clone(), from);
                        }
                    }
                }
            }
        }
    }
    let file_of = |path: &ModulePath| -> ModulePath {
        let mut path = path.clone();
        for _ in 0..8 {
            let longest = (0..=path.len())
                .rev()
                .map(|n| path[..n].to_vec())
                .find(|prefix| names.contains_key(prefix))
                .unwrap_or_default();
            let through_root = longest.is_empty()
                && path
                    .first()
                    .and_then(|first| reexports.get(first))
                    .is_some_and(|target| target != &path[..1]);
            if !through_root {
                return longest;
            }
            let mut target = reexports[&path[0]].clone();
            target.extend(path[1..].iter().cloned());
            path = target;
        }
        Vec::new()
    };
    let mut edges = Edges::new();
    for (relative, text) in files {
        let module = module_of(relative);
        let from = edges.entry(module.clone()).or_default();
        for (path, line) in imports(&module, text) {
            let to = file_of(&path);
            // The root only declares modules and re-exports; an edge to it is not a layer.
            if to != module && !to.is_empty() {
                from.entry(to).or_insert(line);
            }
        }
    }
    (edges, names)
}

/// Every circle the depth-first search meets, each as the files in import order, starting at
/// its smallest, with the line of each import.
fn cycles(edges: &Edges, names: &BTreeMap<ModulePath, String>) -> Vec<String> {
    fn visit(
        node: &ModulePath,
        edges: &Edges,
        state: &mut BTreeMap<ModulePath, u8>,
        stack: &mut Vec<ModulePath>,
        found: &mut BTreeSet<Vec<ModulePath>>,
    ) {
        state.insert(node.clone(), 1);
        stack.push(node.clone());
        for next in edges.get(node).into_iter().flat_map(BTreeMap::keys) {
            match state.get(next).copied().unwrap_or(0) {
                0 => visit(next, edges, state, stack, found),
                1 => {
                    let start = stack
                        .iter()
                        .position(|module| module == next)
                        .expect("invariant: an open node is on the stack");
                    let mut cycle = stack[start..].to_vec();
                    let smallest = (0..cycle.len())
                        .min_by_key(|&at| &cycle[at])
                        .expect("invariant: a cycle has a node");
                    cycle.rotate_left(smallest);
                    found.insert(cycle);
                }
                _ => {}
            }
        }
        stack.pop();
        state.insert(node.clone(), 2);
    }
    let mut state = BTreeMap::new();
    let mut found = BTreeSet::new();
    for node in edges.keys() {
        if !state.contains_key(node) {
            visit(node, edges, &mut state, &mut Vec::new(), &mut found);
        }
    }
    found
        .into_iter()
        .map(|cycle| {
            let mut text = names[&cycle[0]].clone();
            for (at, from) in cycle.iter().enumerate() {
                let to = &cycle[(at + 1) % cycle.len()];
                let line = edges[from][to];
                text.push_str(&format!(" -(line {line})-> {}", names[to]));
            }
            text
        })
        .collect()
}

/// The sources of `crates/<tree>`, as (path relative to it, text).
fn sources(tree: &str) -> Vec<(String, String)> {
    let files = common::rust_sources(&common::root_dir().join("crates").join(tree));
    assert!(!files.is_empty(), "no sources found in crates/{tree}");
    files
}

#[test]
fn no_two_files_of_the_simulator_or_the_server_import_each_other_in_a_circle() {
    let mut found = Vec::new();
    for tree in CHECKED {
        let (edges, names) = graph(&sources(tree));
        found.extend(
            cycles(&edges, &names)
                .into_iter()
                .map(|cycle| format!("crates/{tree}: {cycle}")),
        );
    }
    assert!(
        found.is_empty(),
        "files import each other in a circle (the lower file must not import the upper one):\n{}",
        found.join("\n")
    );
}

#[test]
fn the_engine_stands_below_its_hosts() {
    // The layering issue 10 asked for, edge by edge: it also proves the scan sees real imports.
    let (edges, _) = graph(&sources("sim/src"));
    let module = |name: &str| vec![name.to_string()];
    let imports = |from: &str, to: &str| edges[&module(from)].contains_key(&module(to));
    assert!(imports("raft", "engine") && imports("pb", "engine"));
    assert!(imports("engine", "report") && imports("workload", "report"));
    assert!(imports("dispatch", "raft") && imports("dispatch", "pb"));
    assert!(!imports("raft", "pb") && !imports("pb", "raft"));
    assert!(!imports("engine", "raft") && !imports("engine", "pb"));
}

fn files(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter()
        .map(|(path, text)| ((*path).to_string(), (*text).to_string()))
        .collect()
}

#[test]
fn the_check_itself_can_fail() {
    // Proof that the scan bites: a circle through a `use` tree, a root re-export and a
    // `super::` path in code is found and printed with its lines.
    let circle = files(&[
        (
            "lib.rs",
            "mod engine;\nmod hosts;\npub use hosts::raft::Report;\n",
        ),
        ("engine.rs", "use crate::{Report, queue::Queue};\n"),
        ("hosts/mod.rs", "pub mod raft;\n"),
        (
            "hosts/raft.rs",
            "pub struct Report;\nfn f() { super::super::engine::run(); }\n",
        ),
        ("queue.rs", "pub struct Queue;\n"),
    ]);
    let (edges, names) = graph(&circle);
    assert_eq!(
        cycles(&edges, &names),
        vec!["engine.rs -(line 1)-> hosts/raft.rs -(line 2)-> engine.rs".to_string()]
    );

    // What is not an import: comments, strings, `super` inside an inline module, paths into
    // other crates, and a parent's bare references to its children.
    let layered = files(&[
        ("lib.rs", "mod a;\nmod b;\n"),
        (
            "a.rs",
            "//! See [`crate::b`].\nuse chorus_core::b;\nfn f() { b::g(); let s = \"crate::b\"; }\n\
             mod tests { use super::*; }\n",
        ),
        (
            "b.rs",
            "/* crate::a */ use crate::a::f;\npub mod c;\nfn g() { c::h(); }\n",
        ),
        ("b/c.rs", "use super::g;\n"),
    ]);
    let (edges, names) = graph(&layered);
    assert!(cycles(&edges, &names).is_empty(), "{edges:?}");
    let module = |name: &str| vec![name.to_string()];
    assert!(edges[&module("a")].is_empty(), "{edges:?}");
    assert!(edges[&module("b")].contains_key(&module("a")));
}
