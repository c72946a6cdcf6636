//! Secrets of the HTTP backend: the API key and URL credentials, kept out of `Debug`
//! output, and masked in any text a server echoes back.

use std::fmt;

use url::Url;

/// Returns `raw` with the user and password of a URL replaced. Text that is not a URL but
/// contains `@` is hidden whole.
pub(super) fn redact_url_credentials(raw: &str) -> String {
    match Url::parse(raw.trim()) {
        Ok(mut url) if !url.username().is_empty() || url.password().is_some() => {
            let _ = url.set_username("redacted");
            let _ = url.set_password(None);
            url.to_string()
        }
        Ok(_) => raw.to_owned(),
        Err(_) if raw.contains('@') => "(a URL with credentials)".to_owned(),
        Err(_) => raw.to_owned(),
    }
}

/// A secret string whose `Debug` output is redacted. It has no `Display`.
#[derive(Clone)]
pub(super) struct Secret(pub(super) String);

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

#[derive(Debug, Clone)]
pub(super) enum Auth {
    None,
    Bearer(Secret),
    Basic {
        user: Secret,
        password: Option<Secret>,
    },
}

impl Auth {
    /// Replaces every occurrence of a secret in `text`.
    pub(super) fn redact(&self, text: &str) -> String {
        let secrets: Vec<&str> = match self {
            Auth::None => Vec::new(),
            Auth::Bearer(key) => vec![key.0.as_str()],
            Auth::Basic { user, password } => {
                let mut all = vec![user.0.as_str()];
                all.extend(password.as_ref().map(|p| p.0.as_str()));
                all
            }
        };
        let mut out = text.to_owned();
        for secret in secrets.into_iter().filter(|s| s.len() >= 4) {
            out = out.replace(secret, "[redacted]");
            out = mask_fragments(&out, secret);
        }
        out
    }
}

/// Shortest piece of a secret that is masked when a server echoes only part of it.
pub(super) const MIN_SECRET_FRAGMENT_CHARS: usize = 8;

/// Replaces every run of at least [`MIN_SECRET_FRAGMENT_CHARS`] characters of `text` that
/// also occurs in `secret`, so a server that echoes a prefix of a key does not leak it.
pub(super) fn mask_fragments(text: &str, secret: &str) -> String {
    let chars: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while i < chars.len() {
        let longest = (MIN_SECRET_FRAGMENT_CHARS..=chars.len() - i)
            .take_while(|&n| secret.contains(&chars[i..i + n].iter().collect::<String>()))
            .last();
        match longest {
            Some(n) => {
                out.push_str("[redacted]");
                i += n;
            }
            None => {
                out.push(chars[i]);
                i += 1;
            }
        }
    }
    out
}

/// Formats an `api_key_env` value for messages. A conventional upper-case variable name
/// is printed; anything else is hidden, because it may be a key pasted in by mistake.
pub fn shown_env_name(name: &str) -> String {
    let conventional = name.len() <= 64
        && name.starts_with(|c: char| c.is_ascii_uppercase())
        && name
            .chars()
            .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_');
    if conventional {
        name.to_string()
    } else {
        "(name hidden: it does not look like a variable name and may be a key)".to_string()
    }
}
