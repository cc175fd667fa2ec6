//! `gatehouse audit`: which Ingresses Gatehouse would serve as ingress-nginx does, before
//! the switch. Prints a verdict per Ingress as a table or JSON; exits 1 when any is refused.

use std::{io::Read, path::Path};

use gatehouse_discovery::kubernetes::{
    self,
    audit::{judge_config_map, live, read, read_config_map, translation, Input},
    ingress::{Verdict, VerdictKind},
};

/// Where the Ingresses come from, and how to judge them.
pub struct AuditOptions<'a> {
    /// A file, or `-` for standard input.
    pub ingresses: Option<&'a Path>,
    /// Kubeconfig of a live cluster (`None` with `live`: in-cluster credentials).
    pub kubeconfig: Option<&'a Path>,
    pub live: bool,
    pub class: Option<&'a str>,
    pub ssl_passthrough: bool,
    pub json: bool,
    /// The controller ConfigMap, as `kubectl get configmap -o yaml` prints it.
    pub configmap: Option<&'a Path>,
}

/// What went wrong before any verdict: the operator's words.
pub async fn run(options: &AuditOptions<'_>) -> Result<(String, bool), String> {
    let input = match (options.ingresses, options.live) {
        (Some(path), false) => read(&read_text(path)?)
            .map_err(|e| format!("cannot read Ingresses from {}: {e}", path.display()))?,
        (None, true) => {
            let client = kubernetes::client(options.kubeconfig)
                .await
                .map_err(|e| format!("cannot reach the cluster: {e}"))?;
            let ingresses = live(client).await.map_err(|e| {
                format!("cannot list Ingresses: {e} (RBAC: list ingresses in networking.k8s.io)")
            })?;
            Input {
                ingresses,
                skipped: Vec::new(),
            }
        }
        _ => return Err("give either --ingresses FILE (or -) or --kubernetes".to_owned()),
    };
    for skipped in &input.skipped {
        eprintln!("skipped: {skipped}");
    }
    let translation = translation(&input.ingresses, options.class);
    let mut verdicts = kubernetes::audit::verdicts(&translation, options.ssl_passthrough);
    let mut map_notes = Vec::new();
    if let Some(path) = options.configmap {
        let (name, data) = read_config_map(&read_text(path)?)
            .map_err(|e| format!("cannot read the ConfigMap in {}: {e}", path.display()))?;
        map_notes = judge_config_map(&name, &data, &translation, &mut verdicts);
    }
    let refused = verdicts.iter().any(|v| v.kind == VerdictKind::Refused);
    let text = match options.json {
        true => {
            // The JSON keeps its one shape; the ConfigMap's notes go to stderr.
            for note in &map_notes {
                eprintln!("{note}");
            }
            json(&verdicts)
        }
        false => {
            let mut text = table(&verdicts);
            if !map_notes.is_empty() {
                text += "\nThe controller ConfigMap:\n";
                for note in &map_notes {
                    text += &format!("  - {note}\n");
                }
            }
            text
        }
    };
    Ok((text, refused))
}

fn read_text(path: &Path) -> Result<String, String> {
    if path.as_os_str() == "-" {
        let mut text = String::new();
        std::io::stdin()
            .read_to_string(&mut text)
            .map_err(|e| format!("cannot read standard input: {e}"))?;
        return Ok(text);
    }
    std::fs::read_to_string(path).map_err(|e| format!("cannot read {}: {e}", path.display()))
}

/// `[{namespace, name, verdict, notes}]` (also the admin's /ingresses view).
pub(crate) fn json(verdicts: &[Verdict]) -> String {
    let all: Vec<serde_json::Value> = verdicts
        .iter()
        .map(|v| {
            serde_json::json!({
                "namespace": v.namespace,
                "name": v.name,
                "verdict": v.kind.as_str(),
                "notes": v.notes,
            })
        })
        .collect();
    serde_json::to_string_pretty(&all).unwrap_or_default() + "\n"
}

/// One line per Ingress (refused first, then differs, then ok), its notes indented below,
/// and a count.
fn table(verdicts: &[Verdict]) -> String {
    let mut sorted: Vec<&Verdict> = verdicts.iter().collect();
    sorted.sort_by(|a, b| (b.kind, &a.namespace, &a.name).cmp(&(a.kind, &b.namespace, &b.name)));
    let mut out = format!("{:<8} INGRESS\n", "VERDICT");
    for v in &sorted {
        out += &format!("{:<8} {}/{}\n", v.kind.as_str(), v.namespace, v.name);
        for note in &v.notes {
            out += &format!("         - {note}\n");
        }
    }
    let count = |k| verdicts.iter().filter(|v| v.kind == k).count();
    out += &format!(
        "\n{} Ingresses: {} ok, {} differ, {} refused\n",
        verdicts.len(),
        count(VerdictKind::Ok),
        count(VerdictKind::Differs),
        count(VerdictKind::Refused)
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn verdict(name: &str, kind: VerdictKind, notes: &[&str]) -> Verdict {
        Verdict {
            namespace: "shop".into(),
            name: name.into(),
            kind,
            notes: notes.iter().map(|n| n.to_string()).collect(),
        }
    }

    #[test]
    fn the_table_puts_refused_first_and_counts() {
        let text = table(&[
            verdict("a", VerdictKind::Ok, &[]),
            verdict("b", VerdictKind::Refused, &["annotation x refused"]),
            verdict("c", VerdictKind::Differs, &["y ignored"]),
        ]);
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[1].starts_with("refused  shop/b"), "{text}");
        assert_eq!(lines[2], "         - annotation x refused");
        assert!(lines[3].starts_with("differs  shop/c"), "{text}");
        assert!(
            text.ends_with("3 Ingresses: 1 ok, 1 differ, 1 refused\n"),
            "{text}"
        );
        let parsed: serde_json::Value =
            serde_json::from_str(&json(&[verdict("b", VerdictKind::Refused, &["why"])])).unwrap();
        assert_eq!(
            parsed,
            serde_json::json!([{ "namespace": "shop", "name": "b", "verdict": "refused", "notes": ["why"] }])
        );
    }
}
