//! Who may reach an Ingress's paths beyond its address: basic authentication's Secret
//! (`auth-type`, `auth-secret`, `auth-secret-type`, `auth-realm`), the external
//! authentication service (`auth-url` and its companions) and CORS (`enable-cors` and
//! `cors-*`), read as ingress-nginx reads them.

use std::collections::BTreeMap;

use http::HeaderName;
use k8s_openapi::api::networking::v1::Ingress;

/// What an Ingress asks of its authentication service: the subrequest, and the URL's
/// host and port to find the service by.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExternalAuthSpec {
    pub parsed: gatehouse_config::AuthUrl,
    pub request: gatehouse_config::AuthRequest,
}

/// The Secret that holds an Ingress's basic-authentication users.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BasicAuthRef {
    pub namespace: String,
    pub name: String,
    /// `auth-map`: one key per user, the value its hash; else `auth-file`: an htpasswd
    /// text under the key `auth`.
    pub map: bool,
    pub realm: String,
}

/// `enable-cors`'s settings as ingress-nginx reads them: a value that does not parse falls
/// back to the default (said in the log), as there; an origin that does not parse is
/// dropped, also as there, so a list of only bad origins allows none rather than all.
pub(super) fn cors(
    found: &BTreeMap<&str, &str>,
    flag: &dyn Fn(&str) -> Result<Option<bool>, String>,
    problems: &mut Vec<String>,
    source: &str,
) -> Result<gatehouse_config::Cors, String> {
    use gatehouse_config::Cors;
    let origins = match found.get("cors-allow-origin") {
        None => "*".to_owned(),
        Some(list) => {
            let good: Vec<&str> = list
                .split(',')
                .map(str::trim)
                .filter(|o| !o.is_empty())
                .filter(|o| {
                    let ok = Cors::new(o).is_ok();
                    if !ok {
                        problems.push(format!("Ingress {source}: annotation cors-allow-origin: `{o}` is not an origin; skipped, as ingress-nginx does"));
                    }
                    ok
                })
                .collect();
            if good.is_empty() {
                return Err("annotation cors-allow-origin: no valid origin; the Ingress answers 503 rather than allow every origin".to_owned());
            }
            good.join(",")
        }
    };
    let mut c = Cors::new(&origins).map_err(|e| format!("annotation cors-allow-origin: {e}"))?;
    let text = |name: &str, valid: &dyn Fn(&str) -> bool| {
        found
            .get(name)
            .map(|v| v.trim())
            .filter(|v| valid(v))
            .map(str::to_owned)
    };
    let list = |v: &str| {
        !v.is_empty()
            && v.split(',').all(|w| {
                let w = w.trim();
                !w.is_empty()
                    && w.chars()
                        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '*'))
            })
    };
    if let Some(m) = text("cors-allow-methods", &list) {
        c.methods = m;
    }
    if let Some(h) = text("cors-allow-headers", &list) {
        c.headers = h;
    }
    if let Some(e) = text("cors-expose-headers", &list) {
        c.expose_headers = e;
    }
    c.credentials = flag("cors-allow-credentials")
        .unwrap_or(None)
        .unwrap_or(true);
    if let Some(age) = found
        .get("cors-max-age")
        .and_then(|v| v.trim().parse::<u64>().ok())
    {
        c.max_age = age;
    }
    Ok(c)
}

/// `auth-url` and its companions, as ingress-nginx reads them (the others alone do
/// nothing there either).
pub(super) fn external_auth(
    found: &BTreeMap<&str, &str>,
) -> Result<Option<ExternalAuthSpec>, String> {
    let Some(url) = found
        .get("auth-url")
        .map(|v| v.trim())
        .filter(|v| !v.is_empty())
    else {
        return Ok(None);
    };
    let parsed =
        gatehouse_config::AuthUrl::parse(url).map_err(|e| format!("annotation auth-url: {e}"))?;
    let text = |name: &str| {
        found
            .get(name)
            .map(|v| v.trim().to_owned())
            .filter(|v| !v.is_empty())
    };
    let method = match text("auth-method") {
        None => http::Method::GET,
        Some(m) => m
            .parse()
            .map_err(|_| format!("annotation auth-method: `{m}` is not a method"))?,
    };
    let mut response_headers = Vec::new();
    for name in text("auth-response-headers")
        .iter()
        .flat_map(|v| v.split(','))
    {
        let name = name.trim();
        if !name.is_empty() {
            response_headers.push(HeaderName::from_bytes(name.as_bytes()).map_err(|_| {
                format!("annotation auth-response-headers: `{name}` is not a header name")
            })?);
        }
    }
    Ok(Some(ExternalAuthSpec {
        request: gatehouse_config::AuthRequest {
            url: url.to_owned(),
            host: parsed.authority.clone(),
            path: parsed.path.clone(),
            method,
            signin: text("auth-signin"),
            signin_param: text("auth-signin-redirect-param").unwrap_or_else(|| "rd".to_owned()),
            response_headers,
            request_redirect: text("auth-request-redirect"),
            cache: match text("auth-cache-key") {
                None => None,
                Some(key) => Some(
                    gatehouse_config::AuthCache::parse(
                        &key,
                        &text("auth-cache-duration").unwrap_or_default(),
                    )
                    .map_err(|e| format!("annotation auth-cache-key/auth-cache-duration: {e}"))?,
                ),
            },
        },
        parsed,
    }))
}

/// `auth-type: basic` and its Secret, as ingress-nginx reads them: `auth-secret` is `name`
/// or `namespace/name` of the Ingress's own namespace (another namespace is refused, as
/// ingress-nginx refuses it by default); `auth-secret-type` is `auth-file` (default) or
/// `auth-map`. The others of the family alone do nothing, as in ingress-nginx.
pub(super) fn basic_auth_ref(
    found: &BTreeMap<&str, &str>,
    ingress: &Ingress,
) -> Result<Option<BasicAuthRef>, String> {
    let Some(kind) = found.get("auth-type").map(|v| v.trim()) else {
        return Ok(None);
    };
    if kind != "basic" {
        return Err(format!(
            "annotation auth-type: `{kind}` is not supported; only `basic` is"
        ));
    }
    let own = ingress.metadata.namespace.clone().unwrap_or_default();
    let secret = found
        .get("auth-secret")
        .map(|v| v.trim())
        .filter(|v| !v.is_empty())
        .ok_or("annotation auth-type: basic needs auth-secret, the Secret of the users")?;
    let (namespace, name) = match secret.split_once('/') {
        Some((ns, name)) => (ns.to_owned(), name.to_owned()),
        None => (own.clone(), secret.to_owned()),
    };
    if namespace != own {
        return Err(format!("annotation auth-secret: `{secret}` is in another namespace; a Secret of namespace {own} is needed, as ingress-nginx requires"));
    }
    let map = match found.get("auth-secret-type").map(|v| v.trim()) {
        None | Some("auth-file") => false,
        Some("auth-map") => true,
        Some(other) => {
            return Err(format!(
                "annotation auth-secret-type: `{other}` is not `auth-file` or `auth-map`"
            ))
        }
    };
    let realm = found
        .get("auth-realm")
        .map(|v| v.to_string())
        .unwrap_or_default();
    Ok(Some(BasicAuthRef {
        namespace,
        name,
        map,
        realm,
    }))
}

/// The Secret of an Ingress's client-certificate authorities (`ca.crt`, optional
/// `ca.crl`), and the `auth-tls-*` settings that go with it.
#[derive(Clone, Debug)]
pub struct ClientCertRef {
    pub namespace: String,
    pub name: String,
    pub verify: gatehouse_config::VerifyClient,
    pub depth: u32,
    pub pass_to_upstream: bool,
    pub error_page: Option<String>,
    pub match_cn: Option<regex::Regex>,
}

/// `auth-tls-secret` and its companions, as ingress-nginx reads them: without the Secret
/// the others do nothing; a `verify-client` or `verify-depth` that does not parse falls
/// back to `on` and 1 (said in the log, as ingress-nginx does silently); an error page or
/// CN pattern that does not parse refuses the Ingress, also as there.
pub(super) fn client_cert_ref(
    found: &BTreeMap<&str, &str>,
    ingress: &Ingress,
    flag: &dyn Fn(&str) -> Result<Option<bool>, String>,
    problems: &mut Vec<String>,
    source: &str,
) -> Result<Option<ClientCertRef>, String> {
    use gatehouse_config::VerifyClient;
    let Some(secret) = found
        .get("auth-tls-secret")
        .map(|v| v.trim())
        .filter(|v| !v.is_empty())
    else {
        return Ok(None);
    };
    let own = ingress.metadata.namespace.clone().unwrap_or_default();
    let (namespace, name) = match secret.split_once('/') {
        Some((ns, name)) => (ns.to_owned(), name.to_owned()),
        None => (own.clone(), secret.to_owned()),
    };
    if namespace != own {
        return Err(format!("annotation auth-tls-secret: `{secret}` is in another namespace; a Secret of namespace {own} is needed, as ingress-nginx requires"));
    }
    let verify = match found.get("auth-tls-verify-client").map(|v| v.trim()) {
        None => VerifyClient::On,
        Some(v) => VerifyClient::parse(v).unwrap_or_else(|why| {
            problems.push(format!("Ingress {source}: annotation auth-tls-verify-client: {why}; `on` applies, as in ingress-nginx"));
            VerifyClient::On
        }),
    };
    let depth = match found.get("auth-tls-verify-depth").map(|v| v.trim()) {
        None => 1,
        Some(v) => match v.parse::<u32>() {
            Ok(d @ 1..=100) => d,
            _ => {
                problems.push(format!("Ingress {source}: annotation auth-tls-verify-depth: `{v}` is not a depth from 1 to 100; 1 applies, as in ingress-nginx"));
                1
            }
        },
    };
    let error_page = match found.get("auth-tls-error-page").map(|v| v.trim()) {
        None | Some("") => None,
        Some(page) if page.starts_with('@') => {
            return Err(format!("annotation auth-tls-error-page: `{page}` names an nginx location, which has no meaning here; give a URL or path"));
        }
        Some(page) => match http::HeaderValue::from_str(page) {
            Ok(_)
                if page.starts_with('/')
                    || page.starts_with("http://")
                    || page.starts_with("https://") =>
            {
                Some(page.to_owned())
            }
            _ => {
                return Err(format!(
                    "annotation auth-tls-error-page: `{page}` is not a URL or a path"
                ))
            }
        },
    };
    let match_cn = match found.get("auth-tls-match-cn").map(|v| v.trim()) {
        None | Some("") => None,
        Some(pattern) if !pattern.starts_with("CN=") => {
            return Err(format!(
                "annotation auth-tls-match-cn: `{pattern}` does not start with `CN=`"
            ))
        }
        Some(pattern) => Some(regex::Regex::new(pattern).map_err(|e| {
            format!("annotation auth-tls-match-cn: `{pattern}` is not a regular expression: {e}")
        })?),
    };
    Ok(Some(ClientCertRef {
        namespace,
        name,
        verify,
        depth,
        pass_to_upstream: flag("auth-tls-pass-certificate-to-upstream")?.unwrap_or(false),
        error_page,
        match_cn,
    }))
}
