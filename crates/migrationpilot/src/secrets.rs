//! The secrets a run knows of, and the masker that keeps them out of whatever is shown or
//! stored: the values of variables whose names look secret (inherited, from a stage's `env:`,
//! or brought by `${NAME}`), the passwords of URLs, the file's `secrets:` and the token.

use std::borrow::Cow;

/// Words that make a variable's name secret-looking, matched anywhere in it, in any case.
const SECRET_WORDS: [&str; 10] = [
    "TOKEN",
    "SECRET",
    "PASSWORD",
    "PASSWD",
    "PASS",
    "KEY",
    "CREDENTIAL",
    "DSN",
    "AUTH",
    "PRIVATE",
];

/// Values shorter than this are not masked: `***` in place of every `on` or `1234` would hide
/// more than it protects.
pub const MIN_SECRET_LEN: usize = 6;

/// Whether a variable named `name` holds a secret.
pub fn looks_secret(name: &str) -> bool {
    let upper = name.to_ascii_uppercase();
    SECRET_WORDS.iter().any(|word| upper.contains(word))
}

/// The secret values a run knows of, longest first, and a masker for them: whatever shows or
/// keeps text a stage produced (progress, `logs`, the store, alerts, the API) passes it through
/// [`mask`](Self::mask). Each value is also known as JSON writes it, so it is masked inside
/// serialized text too.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Secrets(Vec<String>);

impl Secrets {
    /// Remembers `value` as a secret (values shorter than [`MIN_SECRET_LEN`] characters are
    /// not masked).
    pub fn add(&mut self, value: &str) {
        if value.chars().count() < MIN_SECRET_LEN {
            return;
        }
        let quoted = serde_json::to_string(value).unwrap_or_default();
        let escaped = quoted
            .get(1..quoted.len().saturating_sub(1))
            .unwrap_or_default();
        for form in [value, escaped] {
            if !form.is_empty() && !self.0.iter().any(|v| v == form) {
                self.0.push(form.to_owned());
            }
        }
        self.0.sort_by_key(|v| std::cmp::Reverse(v.len()));
    }

    /// Remembers the values of the secret-looking variables among `variables`: those a stage
    /// inherits from this process, or gets from its `env:`.
    pub fn add_variables<'a>(&mut self, variables: impl IntoIterator<Item = (&'a str, &'a str)>) {
        for (name, value) in variables {
            if looks_secret(name) {
                self.add(value);
            }
            // A URL's password is a secret whatever the variable is called (`DATABASE_URL`).
            if let Some(password) = url_password(value) {
                self.add(password);
            }
        }
    }

    /// Remembers the secrets of this process's environment, which every stage inherits.
    pub fn add_environment(&mut self) {
        let variables: Vec<(String, String)> = std::env::vars_os()
            .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
            .collect();
        self.add_variables(variables.iter().map(|(k, v)| (k.as_str(), v.as_str())));
    }

    /// Every secret of `other` too.
    pub fn extend(&mut self, other: &Secrets) {
        for value in &other.0 {
            self.add(value);
        }
    }

    /// Whether there is nothing to mask.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Whether `text` holds a secret.
    pub fn appear_in(&self, text: &str) -> bool {
        self.0.iter().any(|secret| text.contains(secret.as_str()))
    }

    /// `text` with every secret value replaced by `***`.
    pub fn mask<'t>(&self, text: &'t str) -> Cow<'t, str> {
        if !self.appear_in(text) {
            return Cow::Borrowed(text);
        }
        let mut masked = text.to_owned();
        for secret in &self.0 {
            masked = masked.replace(secret.as_str(), "***");
        }
        Cow::Owned(masked)
    }

    /// `value` with every secret masked in every string it holds, through its JSON form; the
    /// value itself when none appears (or it cannot go through JSON).
    pub fn mask_value<T>(&self, value: T) -> T
    where
        T: serde::Serialize + serde::de::DeserializeOwned,
    {
        if self.is_empty() {
            return value;
        }
        let Ok(json) = serde_json::to_string(&value) else {
            return value;
        };
        match self.mask(&json) {
            Cow::Borrowed(_) => value,
            Cow::Owned(clean) => serde_json::from_str(&clean).unwrap_or(value),
        }
    }
}

/// The password of a URL with one (`postgres://app:PASSWORD@db/prod`).
fn url_password(value: &str) -> Option<&str> {
    let (_, rest) = value.split_once("://")?;
    let authority = rest.split(['/', '?', '#']).next()?;
    let (userinfo, _) = authority.rsplit_once('@')?;
    let (_, password) = userinfo.split_once(':')?;
    Some(password).filter(|p| !p.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_urls_password_is_a_secret_whatever_its_variable_is_called() {
        let mut secrets = Secrets::default();
        secrets.add_variables([
            (
                "DATABASE_URL",
                "postgres://app:hunter2-pw@db:5432/prod?sslmode=require",
            ),
            ("HOME", "/home/app"),
        ]);
        assert_eq!(
            secrets.mask("connecting to postgres://app:hunter2-pw@db"),
            "connecting to postgres://app:***@db"
        );
        assert_eq!(secrets.mask("/home/app"), "/home/app");
    }

    #[test]
    fn secret_names_are_recognised_in_any_case() {
        for name in [
            "SLACK_TOKEN",
            "db_password",
            "ApiKey",
            "AWS_SECRET_ACCESS_KEY",
            "SENTRY_DSN",
            "gcp_credentials",
        ] {
            assert!(looks_secret(name), "{name}");
        }
        for name in ["HOME", "DATABASE_URL", "STAGE"] {
            assert!(!looks_secret(name), "{name}");
        }
    }
}
