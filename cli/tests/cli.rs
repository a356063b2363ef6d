//! `ferrolb config validate|convert` on real files: exit codes, what goes to stdout and
//! stderr, and the convert → validate round trip.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn ferrolb(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ferrolb"))
        .args(args)
        .output()
        .expect("run ferrolb")
}

fn fixture(name: &str) -> PathBuf {
    // At run time (cargo sets it for tests): a target directory shared between
    // checkouts keeps test binaries built in another one.
    Path::new(&std::env::var_os("CARGO_MANIFEST_DIR").expect("run by cargo test"))
        .join("../config/tests/fixtures")
        .join(name)
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn valid_file_prints_one_line_per_pool() {
    let f = fixture("valid/metallb-docs-advanced.yaml");
    let out = ferrolb(&["config", "validate", f.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 2, "{stdout}");
    assert!(
        lines[0].starts_with("pool fallback: IPv4 256 addresses"),
        "{stdout}"
    );
    assert!(
        lines[1].starts_with("pool production: IPv4 4 addresses, IPv6 256 addresses"),
        "{stdout}"
    );
}

#[test]
fn several_files_form_one_configuration() {
    // Each is valid alone; together the two define the same BGP peer twice.
    let a = fixture("valid/metallb-docs-advanced.yaml");
    let b = fixture("valid/metallb-docs-legacy-bgp.yaml");
    let out = ferrolb(&[
        "config",
        "validate",
        a.to_str().unwrap(),
        b.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("BGPPeer/example: spec.peerAddress: duplicate BGP peer 10.0.0.1"),
        "{stderr}"
    );
}

#[test]
fn invalid_file_exits_1_with_every_error() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("bad.yaml");
    std::fs::write(
        &f,
        "apiVersion: metallb.io/v1beta1\nkind: IPAddressPool\nmetadata: {name: a}\nspec: {addresses: [198.51.100.0/24], autoassign: true}\n---\napiVersion: metallb.io/v1beta1\nkind: IPAddressPool\nmetadata: {name: b}\nspec: {addresses: [198.51.100.128/25, 198.51.100.9-198.51.100.1]}\n---\napiVersion: metallb.io/v1beta1\nkind: L2Advertisement\nmetadata: {name: l2}\nspec: {ipAddressPools: [c]}\n",
    )
    .unwrap();
    let out = ferrolb(&["config", "validate", f.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    for expect in [
        "IPAddressPool/a: spec.autoassign: unknown field",
        "IPAddressPool/b: spec.addresses[0]: range 198.51.100.128/25 overlaps range 198.51.100.0/24 of IPAddressPool/a",
        "IPAddressPool/a: spec.addresses[0]: range 198.51.100.0/24 overlaps range 198.51.100.128/25 of IPAddressPool/b",
        "IPAddressPool/b: spec.addresses[1]:",
        "L2Advertisement/l2: spec.ipAddressPools[0]: references IPAddressPool \"c\"",
    ] {
        assert!(stderr.contains(expect), "missing {expect:?} in:\n{stderr}");
    }
    assert!(
        stderr.starts_with("invalid configuration: 5 error(s)"),
        "{stderr}"
    );
    assert!(out.stdout.is_empty());
}

#[test]
fn unreadable_or_non_yaml_exits_2_naming_the_file() {
    let out = ferrolb(&["config", "validate", "/nonexistent/ferrolb.yaml"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("/nonexistent/ferrolb.yaml: cannot read"));

    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("broken.yaml");
    std::fs::write(
        &f,
        "apiVersion: v1\nkind: ConfigMap\n---\nkey: [unclosed\nother: 1\n",
    )
    .unwrap();
    let out = ferrolb(&["config", "validate", f.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = text(&out.stderr);
    let expect = format!("{}:", f.display());
    assert!(stderr.contains(&expect), "{stderr}");
    // The syntax error is in the second document, at line 4 or 5 of the file.
    assert!(
        stderr.contains(":4:") || stderr.contains(":5:") || stderr.contains(":6:"),
        "{stderr}"
    );

    let f2 = dir.path().join("text.yaml");
    std::fs::write(&f2, "just some words\n").unwrap();
    let out = ferrolb(&["config", "validate", f2.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
}

#[test]
fn empty_input_is_not_silently_valid() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("ns.yaml");
    std::fs::write(
        &f,
        "apiVersion: v1\nkind: Namespace\nmetadata: {name: metallb-system}\n",
    )
    .unwrap();
    let out = ferrolb(&["config", "validate", f.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("no configuration found"));
}

#[test]
fn convert_then_validate_gives_the_same_pools() {
    let dir = tempfile::tempdir().unwrap();
    for name in [
        "valid/tutorial-configmap.yaml",
        "valid/metallb-docs-legacy-bgp.yaml",
    ] {
        let src = fixture(name);
        let conv = ferrolb(&["config", "convert", src.to_str().unwrap()]);
        assert_eq!(conv.status.code(), Some(0), "{}", text(&conv.stderr));
        let out_file = dir.path().join("converted.yaml");
        std::fs::write(&out_file, &conv.stdout).unwrap();
        let before = ferrolb(&["config", "validate", src.to_str().unwrap()]);
        let after = ferrolb(&["config", "validate", out_file.to_str().unwrap()]);
        assert_eq!(after.status.code(), Some(0), "{}", text(&after.stderr));
        assert_eq!(text(&before.stdout), text(&after.stdout));
        // The converted objects contain no ConfigMap.
        assert!(!text(&conv.stdout).contains("kind: ConfigMap"));
    }
}

#[test]
fn convert_refuses_invalid_input() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("cm.yaml");
    std::fs::write(
        &f,
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: config, namespace: metallb-system}\ndata:\n  config: |\n    address-pools:\n    - name: a\n      protocol: layer7\n      addresses: [198.51.100.0/24]\n",
    )
    .unwrap();
    let out = ferrolb(&["config", "convert", f.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("unknown protocol \"layer7\""));
}

#[test]
fn help_names_the_commands() {
    let out = ferrolb(&["config", "--help"]);
    let s = text(&out.stdout);
    assert!(s.contains("validate") && s.contains("convert"), "{s}");
}

#[test]
fn a_thousand_overlapping_pools_print_a_bounded_summary() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("overlap.yaml");
    let pools: String = (0..1000)
        .map(|i| format!("---\napiVersion: metallb.io/v1beta1\nkind: IPAddressPool\nmetadata: {{name: p{i:04}}}\nspec: {{addresses: [198.51.100.0/24]}}\n"))
        .collect();
    std::fs::write(&f, pools).unwrap();
    let out = ferrolb(&["config", "validate", f.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines[0], "invalid configuration: 1000 error(s)");
    assert_eq!(lines.len(), 101, "{stderr}");
    assert!(
        lines[1].starts_with("  error: IPAddressPool/p0000: spec.addresses[0]: range 198.51.100.0/24 overlaps range 198.51.100.0/24 of IPAddressPool/p0001 (and 998 more"),
        "{stderr}"
    );
    assert!(
        lines[100].ends_with("(and 900 more errors not shown)"),
        "{stderr}"
    );
}

#[test]
fn input_past_the_limits_is_refused_naming_the_limit() {
    let dir = tempfile::tempdir().unwrap();
    let deep = dir.path().join("deep.yaml");
    std::fs::write(
        &deep,
        format!("a: {}{}\n", "[".repeat(100_000), "]".repeat(100_000)),
    )
    .unwrap();
    let out = ferrolb(&["config", "validate", deep.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains(
            "deep.yaml: refused: line 1: collections nested deeper than the limit of 128 levels"
        ),
        "{stderr}"
    );

    // Sparse: nothing is written, and only one byte past the limit is read.
    let big = dir.path().join("big.yaml");
    std::fs::File::create(&big)
        .unwrap()
        .set_len(1 << 30)
        .unwrap();
    let out = ferrolb(&["config", "validate", big.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("big.yaml: refused: larger than the limit of 67108864 bytes"),
        "{stderr}"
    );
}
