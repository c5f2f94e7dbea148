//! Keeping secrets out of events, logs and errors.

/// Query parameters whose values are treated as secrets.
const SECRET_PARAMS: [&str; 8] = [
    "password", "passwd", "pwd", "token", "secret", "key", "apikey", "auth",
];

/// A URL with its secret parts replaced by `***`: the password (or a lone userinfo), query
/// values whose names look secret, a path segment after one whose name does (`/token/…`,
/// `/keys/…`), and any path segment or query value that looks like a key (20 characters or
/// more of letters and digits, with both): `postgres://app:hunter2@db/prod?sslmode=require&password=x`
/// becomes `postgres://app:***@db/prod?sslmode=require&password=***`.
///
/// ```
/// use self_healing::health::redact_url;
/// assert_eq!(redact_url("redis://:s3cret@cache:6379/0"), "redis://:***@cache:6379/0");
/// assert_eq!(redact_url("https://api/health?token=abc&x=1"), "https://api/health?token=***&x=1");
/// assert_eq!(
///     redact_url("https://hooks.example/services/T0001/B0002/Xy7kQ2mN9pL4vR8sT1wZ3aB6"),
///     "https://hooks.example/services/T0001/B0002/***"
/// );
/// assert_eq!(redact_url("https://api/v1/key/abc123/health"), "https://api/v1/key/***/health");
/// ```
pub fn redact_url(url: &str) -> String {
    let (head, query) = match url.split_once('?') {
        Some((head, query)) => (head, Some(query)),
        None => (url, None),
    };
    let mut out = String::with_capacity(url.len());
    match head.split_once("://") {
        Some((scheme, rest)) => {
            let authority_end = rest.find('/').unwrap_or(rest.len());
            let (authority, path) = rest.split_at(authority_end);
            out.push_str(scheme);
            out.push_str("://");
            match authority.rsplit_once('@') {
                Some((userinfo, host)) => {
                    match userinfo.split_once(':') {
                        Some((user, _password)) => {
                            out.push_str(user);
                            out.push_str(":***");
                        }
                        // A lone userinfo is a token in some schemes (redis://token@host).
                        None if !userinfo.is_empty() => out.push_str("***"),
                        None => {}
                    }
                    out.push('@');
                    out.push_str(host);
                }
                None => out.push_str(authority),
            }
            out.push_str(&redact_path(path));
        }
        None => out.push_str(head),
    }
    if let Some(query) = query {
        out.push('?');
        let pairs: Vec<String> = query
            .split('&')
            .map(|pair| match pair.split_once('=') {
                Some((name, value)) if is_secret(name) || looks_like_a_key(value) => {
                    format!("{name}=***")
                }
                _ => pair.to_owned(),
            })
            .collect();
        out.push_str(&pairs.join("&"));
    }
    out
}

/// `path` with the segments that hold a secret masked.
fn redact_path(path: &str) -> String {
    let mut after_secret = false;
    path.split('/')
        .map(|segment| {
            let masked = !segment.is_empty() && (after_secret || looks_like_a_key(segment));
            // A segment that names a secret hides the one after it, not one it hid itself.
            after_secret = !masked && is_secret(segment);
            if masked { "***" } else { segment }
        })
        .collect::<Vec<_>>()
        .join("/")
}

/// Whether a value reads as a generated key: long, of letters and digits (and `-`, `_`), with
/// both.
fn looks_like_a_key(value: &str) -> bool {
    value.len() >= 20
        && value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        && value.chars().any(|c| c.is_ascii_digit())
        && value.chars().any(|c| c.is_ascii_alphabetic())
}

fn is_secret(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    SECRET_PARAMS.iter().any(|s| name.contains(s))
}

/// `message` with every occurrence of each secret (and of the URL it came from) redacted:
/// for driver errors that quote what they were given.
pub fn redact_secrets(message: &str, url: &str) -> String {
    let mut out = message.replace(url, &redact_url(url));
    for secret in secrets_of(url) {
        if secret.len() >= 3 {
            out = out.replace(&secret, "***");
        }
    }
    out
}

/// The password and secret query values in a URL, percent-decoded too.
fn secrets_of(url: &str) -> Vec<String> {
    let mut secrets = Vec::new();
    let (head, query) = url.split_once('?').unwrap_or((url, ""));
    if let Some((_, rest)) = head.split_once("://") {
        let authority = &rest[..rest.find('/').unwrap_or(rest.len())];
        if let Some((userinfo, _)) = authority.rsplit_once('@') {
            match userinfo.split_once(':') {
                Some((_, password)) => secrets.push(password.to_owned()),
                None => secrets.push(userinfo.to_owned()),
            }
        }
    }
    for pair in query.split('&') {
        if let Some((name, value)) = pair.split_once('=')
            && is_secret(name)
        {
            secrets.push(value.to_owned());
        }
    }
    let decoded: Vec<String> = secrets.iter().map(|s| percent_decode(s)).collect();
    secrets.extend(decoded);
    secrets.retain(|s| !s.is_empty());
    secrets
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && let Some(hex) = s.get(i + 1..i + 3)
            && let Ok(byte) = u8::from_str_radix(hex, 16)
        {
            out.push(byte);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_and_tokens_are_redacted() {
        assert_eq!(
            redact_url("postgres://app:hunter2@db:5432/prod?sslmode=require&password=x"),
            "postgres://app:***@db:5432/prod?sslmode=require&password=***"
        );
        assert_eq!(
            redact_url("mysql://root@localhost/db"),
            "mysql://***@localhost/db"
        );
        assert_eq!(
            redact_url("sqlite:///var/lib/app.db"),
            "sqlite:///var/lib/app.db"
        );
        assert_eq!(
            redact_url("http://127.0.0.1:3000/health"),
            "http://127.0.0.1:3000/health"
        );
        assert_eq!(redact_url("not a url"), "not a url");
    }

    #[test]
    fn secrets_quoted_in_messages_are_redacted_also_when_encoded() {
        let url = "postgres://app:p%40ss@db/prod";
        let message =
            "password authentication failed for p@ss (tried postgres://app:p%40ss@db/prod)";
        let clean = redact_secrets(message, url);
        assert!(
            !clean.contains("p@ss") && !clean.contains("p%40ss"),
            "{clean}"
        );
        assert!(clean.contains("postgres://app:***@db/prod"), "{clean}");
    }
}
