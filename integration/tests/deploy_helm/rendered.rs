//! A rendered manifest as the tests read it: objects located by their
//! top-level lines, counted by kind, found by kind and name; and the CRD
//! names the chart must carry.

use std::collections::{BTreeMap, BTreeSet};

use ferrolb_integration::lab::repo_root;

/// One object of a rendered manifest, located by its top-level lines.
#[derive(Debug, Clone)]
pub struct Obj {
    pub api_version: String,
    pub kind: String,
    pub name: String,
    pub namespace: Option<String>,
    pub text: String,
}

/// Splits helm's output (documents separated by `---` lines, keys at
/// column 0, `metadata` fields indented by two) into objects.
pub fn objects(yaml: &str) -> Vec<Obj> {
    let mut out = Vec::new();
    for doc in yaml.split("\n---\n") {
        let doc = doc.trim_start_matches("---\n");
        let top = |key: &str| {
            doc.lines()
                .find_map(|l| l.strip_prefix(key))
                .map(|v| v.trim().trim_matches('"').to_owned())
        };
        let Some(kind) = top("kind: ") else { continue };
        let meta_field = |key: &str| {
            doc.lines()
                .skip_while(|l| *l != "metadata:")
                .skip(1)
                .take_while(|l| l.starts_with(' ') || l.is_empty())
                .find_map(|l| l.strip_prefix(&format!("  {key}: ")))
                .map(|v| v.trim().trim_matches('"').to_owned())
        };
        out.push(Obj {
            api_version: top("apiVersion: ").unwrap_or_default(),
            name: meta_field("name").unwrap_or_else(|| panic!("{kind} without a name:\n{doc}")),
            namespace: meta_field("namespace"),
            kind,
            text: doc.to_owned(),
        });
    }
    out
}

/// How many objects of each kind.
pub fn count(objs: &[Obj]) -> BTreeMap<String, usize> {
    let mut m = BTreeMap::new();
    for o in objs {
        *m.entry(o.kind.clone()).or_default() += 1;
    }
    m
}

/// The object `kind`/`name`; panics when there is none.
pub fn find<'a>(objs: &'a [Obj], kind: &str, name: &str) -> &'a Obj {
    objs.iter()
        .find(|o| o.kind == kind && o.name == name)
        .unwrap_or_else(|| panic!("no {kind} {name} among {:?}", count(objs)))
}

/// The CRD names, from the generated files in deploy/crds.
pub fn crd_names() -> BTreeSet<String> {
    std::fs::read_dir(repo_root().join("deploy/crds"))
        .expect("read deploy/crds")
        .filter_map(|e| {
            let name = e.ok()?.file_name().to_string_lossy().into_owned();
            name.strip_suffix(".yaml").map(str::to_owned)
        })
        .collect()
}
