//! Which module of a crate names which: the import graph of a crate's sources, read with
//! `syn`, for the test that keeps grasp-lib's layers pointing down and every crate free of
//! import circles (`tests/tests/layering.rs`, `docs/explanation/architecture.md`).
//!
//! A crate is read from its root file (`lib.rs`, `main.rs`) by following `mod` declarations.
//! Test code (`#[cfg(test)]` items) is left out: the layers are about the shipping code. A
//! module *names* another when one of its paths (in a `use`, a type, an expression, a
//! pattern) resolves into it: `crate::`, `super::`, `self::` and names brought in by `use` are
//! followed, and re-exports (`pub use`) are followed to the module that defines the item, so
//! a facade `mod.rs` that only re-exports is not where an item lives. Paths inside macro
//! invocations are not seen.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use syn::visit::Visit;

/// A module path inside the crate: `[]` is the crate root, `["git", "refs"]` is `git::refs`.
pub type ModPath = Vec<String>;

/// What one module declares and imports.
#[derive(Debug, Default)]
struct Module {
    /// The file the module is written in (inline modules share their parent's).
    file: PathBuf,
    /// Items defined here (types, functions, traits, constants, child modules).
    items: BTreeSet<String>,
    /// Child modules.
    children: BTreeSet<String>,
    /// Local names brought in by `use`: name → (absolute path, is a re-export).
    imports: BTreeMap<String, (Vec<String>, bool)>,
    /// Modules glob-imported (`use x::*`).
    globs: Vec<Vec<String>>,
    /// Paths this module's code mentions, as written (after `use` flattening).
    mentions: Vec<Vec<String>>,
}

/// The import graph of one crate.
#[derive(Debug, Default)]
pub struct Crate {
    modules: BTreeMap<ModPath, Module>,
}

fn is_test_only(attrs: &[syn::Attribute]) -> bool {
    attrs.iter().any(|a| {
        a.path().is_ident("cfg") && a.parse_args::<syn::Meta>().is_ok_and(|m| m.path().is_ident("test"))
    })
}

fn is_public(vis: &syn::Visibility) -> bool {
    !matches!(vis, syn::Visibility::Inherited)
}

/// Flattens a use tree into (local name or `*`, full path as written).
fn flatten_use(tree: &syn::UseTree, prefix: &mut Vec<String>, out: &mut Vec<(String, Vec<String>)>) {
    match tree {
        syn::UseTree::Path(p) => {
            prefix.push(p.ident.to_string());
            flatten_use(&p.tree, prefix, out);
            prefix.pop();
        }
        syn::UseTree::Name(n) => {
            let name = n.ident.to_string();
            if name == "self" {
                if let Some(last) = prefix.last() {
                    out.push((last.clone(), prefix.clone()));
                }
            } else {
                let mut path = prefix.clone();
                path.push(name.clone());
                out.push((name, path));
            }
        }
        syn::UseTree::Rename(r) => {
            let mut path = prefix.clone();
            let name = r.ident.to_string();
            if name != "self" {
                path.push(name);
            }
            out.push((r.rename.to_string(), path));
        }
        syn::UseTree::Glob(_) => out.push(("*".to_owned(), prefix.clone())),
        syn::UseTree::Group(g) => {
            for item in &g.items {
                flatten_use(item, prefix, out);
            }
        }
    }
}

/// Collects the paths a module's code mentions.
struct Mentions<'a> {
    out: &'a mut Vec<Vec<String>>,
}

impl<'ast> Visit<'ast> for Mentions<'_> {
    fn visit_path(&mut self, path: &'ast syn::Path) {
        self.out.push(path.segments.iter().map(|s| s.ident.to_string()).collect());
        syn::visit::visit_path(self, path);
    }

    fn visit_item_mod(&mut self, _: &'ast syn::ItemMod) {
        // Nested modules are modules of their own.
    }

    fn visit_item_use(&mut self, _: &'ast syn::ItemUse) {
        // Imports are read separately.
    }

    fn visit_attribute(&mut self, _: &'ast syn::Attribute) {}

    fn visit_visibility(&mut self, _: &'ast syn::Visibility) {
        // `pub(crate)` names no module.
    }
}

impl Crate {
    /// Reads the crate whose root file is `root` (`src/lib.rs` or `src/main.rs`).
    pub fn read(root: &Path) -> Self {
        let mut krate = Crate::default();
        let dir = root.parent().expect("root has a directory").to_path_buf();
        krate.read_file(Vec::new(), root, &dir);
        krate
    }

    fn read_file(&mut self, path: ModPath, file: &Path, children_dir: &Path) {
        let source = std::fs::read_to_string(file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        let parsed = syn::parse_file(&source).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        self.read_items(path, file, children_dir, &parsed.items);
    }

    /// Reads `items` as the module `path`, written in `file`; the files of its child
    /// modules are in `children_dir`.
    fn read_items(&mut self, path: ModPath, file: &Path, children_dir: &Path, items: &[syn::Item]) {
        let mut module = Module { file: file.to_path_buf(), ..Module::default() };
        let mut nested = Vec::new();
        for item in items {
            let attrs: &[syn::Attribute] = match item {
                syn::Item::Const(i) => &i.attrs,
                syn::Item::Enum(i) => &i.attrs,
                syn::Item::Fn(i) => &i.attrs,
                syn::Item::Impl(i) => &i.attrs,
                syn::Item::Mod(i) => &i.attrs,
                syn::Item::Static(i) => &i.attrs,
                syn::Item::Struct(i) => &i.attrs,
                syn::Item::Trait(i) => &i.attrs,
                syn::Item::Type(i) => &i.attrs,
                syn::Item::Union(i) => &i.attrs,
                syn::Item::Use(i) => &i.attrs,
                syn::Item::Macro(i) => &i.attrs,
                _ => &[],
            };
            if is_test_only(attrs) {
                continue;
            }
            let name = match item {
                syn::Item::Const(i) => Some(i.ident.to_string()),
                syn::Item::Enum(i) => Some(i.ident.to_string()),
                syn::Item::Fn(i) => Some(i.sig.ident.to_string()),
                syn::Item::Static(i) => Some(i.ident.to_string()),
                syn::Item::Struct(i) => Some(i.ident.to_string()),
                syn::Item::Trait(i) => Some(i.ident.to_string()),
                syn::Item::Type(i) => Some(i.ident.to_string()),
                syn::Item::Union(i) => Some(i.ident.to_string()),
                syn::Item::Macro(i) => i.ident.as_ref().map(|i| i.to_string()),
                _ => None,
            };
            module.items.extend(name);
            match item {
                syn::Item::Use(u) => {
                    let mut flat = Vec::new();
                    flatten_use(&u.tree, &mut Vec::new(), &mut flat);
                    for (local, full) in flat {
                        if local == "*" {
                            module.globs.push(full);
                        } else {
                            module.imports.insert(local, (full, is_public(&u.vis)));
                        }
                    }
                }
                syn::Item::Mod(m) => {
                    let child = m.ident.to_string();
                    module.children.insert(child.clone());
                    module.items.insert(child);
                    nested.push(m);
                }
                other => Mentions { out: &mut module.mentions }.visit_item(other),
            }
        }
        self.modules.insert(path.clone(), module);
        for m in nested {
            let child = m.ident.to_string();
            let mut child_path = path.clone();
            child_path.push(child.clone());
            let grandchildren = children_dir.join(&child);
            match &m.content {
                Some((_, items)) => self.read_items(child_path, file, &grandchildren, items),
                None => {
                    let flat = children_dir.join(format!("{child}.rs"));
                    let child_file = if flat.is_file() { flat } else { grandchildren.join("mod.rs") };
                    self.read_file(child_path, &child_file, &grandchildren);
                }
            }
        }
    }

    /// The absolute form of `path` as written in module `at`, or `None` for a path outside
    /// the crate (std, dependencies, local variables).
    fn absolute(&self, at: &ModPath, path: &[String], depth: usize) -> Option<Vec<String>> {
        let (first, rest) = path.split_first()?;
        let mut base: Vec<String> = match first.as_str() {
            "crate" => Vec::new(),
            "self" => at.clone(),
            "super" => {
                let mut base = at.clone();
                base.pop()?;
                let mut rest = rest;
                while rest.first().is_some_and(|s| s == "super") {
                    base.pop()?;
                    rest = &rest[1..];
                }
                base.extend(rest.iter().cloned());
                return Some(base);
            }
            _ => {
                let module = self.modules.get(at)?;
                if let Some((target, _)) = module.imports.get(first) {
                    if depth > 8 {
                        return None;
                    }
                    let mut full = self.absolute(at, target, depth + 1)?;
                    full.extend(rest.iter().cloned());
                    return Some(full);
                }
                if module.items.contains(first) {
                    let mut full = at.clone();
                    full.extend(path.iter().cloned());
                    return Some(full);
                }
                return None;
            }
        };
        base.extend(rest.iter().cloned());
        Some(base)
    }

    /// The module that defines what the absolute `path` names (following re-exports).
    fn defining_module(&self, path: &[String], depth: usize) -> Option<ModPath> {
        // The longest prefix that is a module.
        let mut module_len = 0;
        for len in 0..=path.len() {
            if self.modules.contains_key(&path[..len]) {
                module_len = len;
            }
        }
        let module_path = path[..module_len].to_vec();
        let Some(item) = path.get(module_len) else { return Some(module_path) };
        let module = self.modules.get(&module_path)?;
        if !module.items.contains(item) && depth < 8 {
            if let Some((target, _)) = module.imports.get(item) {
                let mut full = self.absolute(&module_path, target, 0)?;
                full.extend(path[module_len + 1..].iter().cloned());
                return self.defining_module(&full, depth + 1).or(Some(module_path));
            }
        }
        Some(module_path)
    }

    /// Every module and the modules it names (not itself), for the shipping code.
    pub fn edges(&self) -> BTreeMap<ModPath, BTreeSet<ModPath>> {
        let mut edges: BTreeMap<ModPath, BTreeSet<ModPath>> = BTreeMap::new();
        for (at, module) in &self.modules {
            let mut named: Vec<Vec<String>> = module.mentions.clone();
            named.extend(module.imports.values().filter(|(_, reexport)| !reexport).map(|(p, _)| p.clone()));
            named.extend(module.globs.iter().cloned());
            let targets = edges.entry(at.clone()).or_default();
            for path in named {
                let Some(full) = self.absolute(at, &path, 0) else { continue };
                let Some(target) = self.defining_module(&full, 0) else { continue };
                if &target != at {
                    targets.insert(target);
                }
            }
        }
        edges
    }

    /// Why `from` names `to`: the paths of `from` that resolve into `to`, as written.
    pub fn why(&self, from: &ModPath, to: &ModPath) -> Vec<String> {
        let Some(module) = self.modules.get(from) else { return Vec::new() };
        let mut named: Vec<Vec<String>> = module.mentions.clone();
        named.extend(module.imports.values().filter(|(_, reexport)| !reexport).map(|(p, _)| p.clone()));
        named
            .into_iter()
            .filter(|path| {
                self.absolute(from, path, 0).and_then(|full| self.defining_module(&full, 0)).as_ref()
                    == Some(to)
            })
            .map(|path| path.join("::"))
            .collect()
    }

    /// The file a module is written in.
    pub fn file_of(&self, module: &ModPath) -> Option<&Path> {
        self.modules.get(module).map(|m| m.file.as_path())
    }

    /// Groups of files that name each other in a circle (strongly connected components of
    /// the file graph with more than one file).
    pub fn file_cycles(&self) -> Vec<Vec<PathBuf>> {
        let mut graph: BTreeMap<PathBuf, BTreeSet<PathBuf>> = BTreeMap::new();
        for (from, targets) in self.edges() {
            let from_file = self.modules[&from].file.clone();
            let entry = graph.entry(from_file.clone()).or_default();
            for target in targets {
                let to = self.modules[&target].file.clone();
                if to != from_file {
                    entry.insert(to);
                }
            }
        }
        strongly_connected(&graph).into_iter().filter(|c| c.len() > 1).collect()
    }
}

/// Tarjan's strongly connected components.
fn strongly_connected(graph: &BTreeMap<PathBuf, BTreeSet<PathBuf>>) -> Vec<Vec<PathBuf>> {
    struct State<'a> {
        graph: &'a BTreeMap<PathBuf, BTreeSet<PathBuf>>,
        index: HashMap<&'a PathBuf, usize>,
        low: HashMap<&'a PathBuf, usize>,
        stack: Vec<&'a PathBuf>,
        on_stack: BTreeSet<&'a PathBuf>,
        next: usize,
        out: Vec<Vec<PathBuf>>,
    }
    fn visit<'a>(s: &mut State<'a>, v: &'a PathBuf) {
        s.index.insert(v, s.next);
        s.low.insert(v, s.next);
        s.next += 1;
        s.stack.push(v);
        s.on_stack.insert(v);
        for w in s.graph.get(v).into_iter().flatten() {
            let Some((w, _)) = s.graph.get_key_value(w) else { continue };
            if !s.index.contains_key(w) {
                visit(s, w);
                let low = s.low[w].min(s.low[v]);
                s.low.insert(v, low);
            } else if s.on_stack.contains(w) {
                let low = s.index[w].min(s.low[v]);
                s.low.insert(v, low);
            }
        }
        if s.low[v] == s.index[v] {
            let mut component = Vec::new();
            while let Some(w) = s.stack.pop() {
                s.on_stack.remove(w);
                component.push(w.clone());
                if w == v {
                    break;
                }
            }
            component.sort();
            s.out.push(component);
        }
    }
    let mut state = State {
        graph,
        index: HashMap::new(),
        low: HashMap::new(),
        stack: Vec::new(),
        on_stack: BTreeSet::new(),
        next: 0,
        out: Vec::new(),
    };
    for v in graph.keys() {
        if !state.index.contains_key(v) {
            visit(&mut state, v);
        }
    }
    state.out
}

/// `a::b` for printing.
pub fn display(path: &ModPath) -> String {
    if path.is_empty() {
        "crate".to_owned()
    } else {
        path.join("::")
    }
}
