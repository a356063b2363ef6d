//! `ferrolb`: the command-line tool. Checks and converts configuration offline, with the
//! same validation the controller runs (`ferrolb_config::Config::build`), and generates
//! the artefacts that are derived from Rust types (CRD YAML).

use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use ferrolb_config::{Config, ConfigErrors, Sources, convert, crd, legacy, load};

#[derive(Parser, Debug)]
#[command(
    name = "ferrolb",
    version,
    about = "ferrolb: a MetalLB-compatible LoadBalancer for bare-metal Kubernetes"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Check or convert configuration files (legacy ConfigMap and/or metallb.io CRDs).
    #[command(subcommand)]
    Config(ConfigCmd),
    /// Write artefacts generated from ferrolb's types (for developers; `make generate`).
    #[command(subcommand)]
    Generate(GenerateCmd),
}

#[derive(Subcommand, Debug)]
enum ConfigCmd {
    /// Validate FILEs as one configuration.
    ///
    /// Each FILE is YAML: the legacy ConfigMap (data key `config`), metallb.io objects,
    /// or a mix, in one or several documents. Exit status: 0 valid, 1 invalid (every
    /// error is printed, or the first 100 and how many more), 2 a file could not be
    /// read, is not YAML, or is past the size (64 MiB) or nesting (128 levels) limit.
    Validate {
        #[arg(required = true, value_name = "FILE")]
        files: Vec<PathBuf>,
    },
    /// Convert a legacy ConfigMap to equivalent metallb.io CRD objects on stdout.
    Convert {
        #[arg(value_name = "FILE")]
        file: PathBuf,
        /// Namespace for the objects (default: the ConfigMap's own).
        #[arg(long)]
        namespace: Option<String>,
    },
}

#[derive(Subcommand, Debug)]
enum GenerateCmd {
    /// Write one YAML file per CustomResourceDefinition into DIR.
    Crds {
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
    },
}

/// Outcome of a command that distinguishes bad configuration from unusable input.
enum Failure {
    Invalid(String),
    Unreadable(String),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Config(ConfigCmd::Validate { files }) => validate(&files),
        Command::Config(ConfigCmd::Convert { file, namespace }) => {
            convert_file(&file, namespace.as_deref())
        }
        Command::Generate(GenerateCmd::Crds { out }) => {
            generate_crds(&out).map_err(|e| Failure::Unreadable(format!("{e:#}")))
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Invalid(msg)) => {
            eprintln!("{msg}");
            ExitCode::from(1)
        }
        Err(Failure::Unreadable(msg)) => {
            eprintln!("error: {msg}");
            ExitCode::from(2)
        }
    }
}

fn read_file(path: &Path) -> Result<load::Loaded, Failure> {
    let unreadable = |e: &dyn std::fmt::Display| {
        Failure::Unreadable(format!("{}: cannot read: {e}", path.display()))
    };
    // One byte past the limit is enough to refuse, without reading a huge file whole.
    let mut bytes = Vec::new();
    fs::File::open(path)
        .and_then(|f| {
            f.take(load::MAX_YAML_BYTES as u64 + 1)
                .read_to_end(&mut bytes)
        })
        .map_err(|e| unreadable(&e))?;
    if bytes.len() > load::MAX_YAML_BYTES {
        return Err(Failure::Unreadable(format!(
            "{}: refused: larger than the limit of {} bytes",
            path.display(),
            load::MAX_YAML_BYTES
        )));
    }
    let text = String::from_utf8(bytes).map_err(|e| unreadable(&e))?;
    load::from_yaml(&text).map_err(|e| match e {
        load::LoadError::Syntax { line, message } => Failure::Unreadable(format!(
            "{}:{line}: not a YAML Kubernetes object: {message}",
            path.display()
        )),
        load::LoadError::OverLimit(message) => {
            Failure::Unreadable(format!("{}: refused: {message}", path.display()))
        }
    })
}

fn validate(files: &[PathBuf]) -> Result<(), Failure> {
    let mut sources = Sources::default();
    let mut errors = Vec::new();
    for f in files {
        let loaded = read_file(f)?;
        for s in &loaded.skipped {
            eprintln!(
                "note: {}: ignoring {s}: not ferrolb configuration",
                f.display()
            );
        }
        errors.extend(loaded.errors);
        sources.extend(loaded.sources);
    }
    if sources.is_empty() && errors.is_empty() {
        return Err(Failure::Invalid(format!(
            "error: no configuration found in {}: expected a ConfigMap with data key `{}` or metallb.io objects",
            files
                .iter()
                .map(|f| f.display().to_string())
                .collect::<Vec<_>>()
                .join(", "),
            legacy::DATA_KEY
        )));
    }
    // Objects that failed to read are missing from `sources`; building anyway finds the
    // other errors, so a person sees them all in one run (the first ones, past a limit).
    let built = Config::build(&sources);
    let errors = match &built {
        Err(e) => e.clone().merged(errors),
        Ok(_) => ConfigErrors::new(errors),
    };
    if !errors.is_empty() {
        let mut msg = format!("invalid configuration: {} error(s)", errors.total());
        for e in errors.iter() {
            msg.push_str(&format!("\n  error: {e}"));
        }
        return Err(Failure::Invalid(msg));
    }
    let cfg = built.map_err(|_| Failure::Invalid("invalid configuration".into()))?;
    for p in cfg.pools.values() {
        let fams: Vec<String> = p
            .families()
            .into_iter()
            .map(|f| format!("{f} {} addresses", p.size(f)))
            .collect();
        let mut extra = Vec::new();
        if !p.auto_assign {
            extra.push("auto-assign off");
        }
        if p.avoid_buggy_ips {
            extra.push("avoiding .0/.255");
        }
        let l2 = cfg
            .l2_advertisements
            .values()
            .any(|a| a.pools.contains(&p.name));
        let bgp = cfg
            .bgp_advertisements
            .values()
            .any(|a| a.pools.contains(&p.name));
        let mode = match (l2, bgp) {
            (true, true) => "layer2+bgp",
            (true, false) => "layer2",
            (false, true) => "bgp",
            (false, false) => "not advertised",
        };
        println!(
            "pool {}: {} [{mode}]{}",
            p.name,
            fams.join(", "),
            if extra.is_empty() {
                String::new()
            } else {
                format!(" ({})", extra.join(", "))
            }
        );
    }
    if cfg.pools.is_empty() {
        println!("no pools");
    }
    Ok(())
}

fn convert_file(path: &Path, namespace: Option<&str>) -> Result<(), Failure> {
    let loaded = read_file(path)?;
    if !loaded.errors.is_empty() {
        let mut msg = format!("cannot convert {}:", path.display());
        for e in ConfigErrors::new(loaded.errors).iter() {
            msg.push_str(&format!("\n  error: {e}"));
        }
        return Err(Failure::Invalid(msg));
    }
    let [(cm, lc)] = loaded.sources.legacy.as_slice() else {
        return Err(Failure::Invalid(format!(
            "error: {}: expected exactly one legacy ConfigMap (data key `{}`), found {}",
            path.display(),
            legacy::DATA_KEY,
            loaded.sources.legacy.len()
        )));
    };
    if let Err(e) = Config::build(&loaded.sources) {
        let mut msg = format!(
            "refusing to convert an invalid configuration ({} error(s)):",
            e.total()
        );
        for e in e.iter() {
            msg.push_str(&format!("\n  error: {e}"));
        }
        return Err(Failure::Invalid(msg));
    }
    let ns = namespace.unwrap_or_else(|| {
        cm.split_once('/')
            .map_or(legacy::DEFAULT_NAMESPACE, |(ns, _)| ns)
    });
    let conv = convert::convert(lc, ns);
    for (old, new) in &conv.renamed {
        eprintln!(
            "warning: {old:?} is not a valid object name and became {new:?}: update Services that name it in metallb.io/address-pool"
        );
    }
    print!("{}", conv.to_yaml());
    Ok(())
}

fn generate_crds(out: &Path) -> anyhow::Result<()> {
    fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    for c in crd::all_crds() {
        let name = c.metadata.name.clone().context("CRD without a name")?;
        let yaml = serde_norway::to_string(&c).context("serializing CRD")?;
        let path = out.join(format!("{name}.yaml"));
        let text = format!(
            "# Generated by `make generate` from config/src/crd (ferrolb). Do not edit.\n---\n{yaml}"
        );
        fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}
