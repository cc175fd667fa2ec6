//! How one Ingress is served, against how ingress-nginx serves it: as it is (`ok`), with
//! differences (`differs`: annotations ignored, paths lost to older Ingresses, values read
//! differently), or not at all (`refused`: its paths answer 503). Drawn from the same
//! problems the translation logs, so `gatehouse audit` cannot disagree with `run`.

use std::collections::BTreeMap;

/// The verdict's kind, as `gatehouse audit` prints it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum VerdictKind {
    Ok,
    Differs,
    Refused,
}

impl VerdictKind {
    pub fn as_str(self) -> &'static str {
        match self {
            VerdictKind::Ok => "ok",
            VerdictKind::Differs => "differs",
            VerdictKind::Refused => "refused",
        }
    }
}

/// One Ingress's verdict.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verdict {
    pub namespace: String,
    pub name: String,
    pub kind: VerdictKind,
    /// What differs, or why it is refused (the refusal first), in the log's words without
    /// the `Ingress NS/NAME: ` they start with.
    pub notes: Vec<String>,
}

/// The verdict of `namespace/name`, from the translation's problems (each begins with
/// `Ingress NS/NAME: `) and the refusals by Ingress.
pub(super) fn judge(
    namespace: String,
    name: String,
    problems: &[String],
    refused: &mut BTreeMap<String, String>,
) -> Verdict {
    let source = format!("{namespace}/{name}");
    let prefix = format!("Ingress {source}: ");
    let why = refused.remove(&source);
    let mut notes: Vec<String> = problems
        .iter()
        .filter_map(|p| p.strip_prefix(&prefix))
        .map(str::to_owned)
        .collect();
    if let Some(why) = &why {
        notes.sort_by_key(|n| !n.starts_with(why.as_str()));
    }
    let kind = match (&why, notes.is_empty()) {
        (Some(_), _) => VerdictKind::Refused,
        (None, true) => VerdictKind::Ok,
        (None, false) => VerdictKind::Differs,
    };
    Verdict {
        namespace,
        name,
        kind,
        notes,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn problems_are_told_apart_by_the_ingress_they_name() {
        let problems = vec![
            "Ingress shop/web: annotation x is not supported and is ignored: y".to_owned(),
            "Ingress shop/web-2: annotation auth-snippet refused; its paths answer 503 until it is fixed".to_owned(),
        ];
        let mut refused = BTreeMap::from([(
            "shop/web-2".to_owned(),
            "annotation auth-snippet refused".to_owned(),
        )]);
        let web = judge("shop".into(), "web".into(), &problems, &mut refused);
        assert_eq!(web.kind, VerdictKind::Differs);
        assert_eq!(
            web.notes,
            ["annotation x is not supported and is ignored: y"]
        );
        let web2 = judge("shop".into(), "web-2".into(), &problems, &mut refused);
        assert_eq!(web2.kind, VerdictKind::Refused);
        assert_eq!(
            web2.notes,
            ["annotation auth-snippet refused; its paths answer 503 until it is fixed"]
        );
        let other = judge("shop".into(), "api".into(), &problems, &mut refused);
        assert_eq!((other.kind, other.notes.len()), (VerdictKind::Ok, 0));
    }
}
