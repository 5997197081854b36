//! grasp-lib's layers point down, and no crate of the workspace has an import circle. The
//! layers and why are in `docs/explanation/architecture.md`; this test is what keeps them.

use std::path::{Path, PathBuf};

use grasp_tests::layering::{display, Crate, ModPath};

/// grasp-lib's modules by layer, from the ground up. A module may name modules of its own
/// layer and of the layers below; the longest matching prefix decides (`purgatory::listing`
/// is assembly while `purgatory` is state). The crate root (`Grasp`) is the node.
const LAYERS: &[(&str, u8, &str)] = &[
    ("nip34", 1, "vocabulary"),
    ("origin", 1, "vocabulary"),
    ("maintainers", 1, "vocabulary"),
    ("alignment", 1, "vocabulary"),
    ("rate_limit", 1, "vocabulary"),
    ("metrics", 1, "vocabulary"),
    ("crash", 1, "vocabulary"),
    ("store", 2, "plumbing"),
    ("cluster", 2, "plumbing"),
    ("git", 2, "plumbing"),
    ("limits", 2, "plumbing"),
    ("curation", 2, "plumbing"),
    ("outbound", 2, "plumbing"),
    ("access", 3, "rules"),
    ("authorization", 3, "rules"),
    ("policy", 3, "rules"),
    ("purgatory", 4, "state"),
    ("hosting", 4, "state"),
    ("relay", 5, "engines"),
    ("hunt", 5, "engines"),
    ("sync", 5, "engines"),
    ("recovery", 5, "engines"),
    ("mirrors", 5, "engines"),
    ("config", 6, "assembly"),
    ("ingest", 6, "assembly"),
    ("purgatory::listing", 6, "assembly"),
    ("", 7, "node"),
];

fn layer_of(module: &ModPath) -> (u8, &'static str) {
    let name = module.join("::");
    LAYERS
        .iter()
        .filter(|(prefix, _, _)| {
            prefix.is_empty() || name == *prefix || name.starts_with(&format!("{prefix}::"))
        })
        .max_by_key(|(prefix, _, _)| prefix.len())
        .map(|(_, layer, label)| (*layer, *label))
        .expect("the root matches everything")
}

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("workspace root").to_path_buf()
}

fn relative(path: &Path) -> String {
    path.strip_prefix(workspace()).unwrap_or(path).display().to_string()
}

fn cycles_of(krate: &Crate) -> Vec<String> {
    krate
        .file_cycles()
        .into_iter()
        .map(|files| files.iter().map(|f| relative(f)).collect::<Vec<_>>().join(" ↔ "))
        .collect()
}

#[test]
fn grasp_lib_imports_point_down() {
    let krate = Crate::read(&workspace().join("grasp-lib/src/lib.rs"));
    let mut upward = Vec::new();
    for (from, targets) in krate.edges() {
        let (layer, label) = layer_of(&from);
        for target in targets {
            let (target_layer, target_label) = layer_of(&target);
            if target_layer > layer {
                upward.push(format!(
                    "{} ({label}, {}) names {} ({target_label})",
                    display(&from),
                    relative(krate.file_of(&from).expect("read")),
                    display(&target)
                ));
            }
        }
    }
    assert!(upward.is_empty(), "imports from a lower layer to a higher one:\n{}", upward.join("\n"));
}

#[test]
fn grasp_lib_has_no_import_circle() {
    let cycles = cycles_of(&Crate::read(&workspace().join("grasp-lib/src/lib.rs")));
    assert!(cycles.is_empty(), "files that name each other in a circle:\n{}", cycles.join("\n"));
}

#[test]
fn no_frontend_has_an_import_circle() {
    for frontend in ["frontends/inline", "frontends/proxy", "frontends/hook"] {
        let cycles = cycles_of(&Crate::read(&workspace().join(frontend).join("src/main.rs")));
        assert!(
            cycles.is_empty(),
            "{frontend}: files that name each other in a circle:\n{}",
            cycles.join("\n")
        );
    }
}

#[test]
fn the_reader_sees_what_a_module_names() {
    // The test would pass on a reader that sees nothing; check it on a file we know.
    let krate = Crate::read(&workspace().join("grasp-lib/src/lib.rs"));
    let edges = krate.edges();
    let root = edges.get(&Vec::new()).expect("the crate root is read");
    assert!(root.iter().any(|m| m.first().map(String::as_str) == Some("config")), "{root:?}");
    assert!(edges.len() > 40, "only {} modules read", edges.len());
}
