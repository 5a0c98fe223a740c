//! Credentials a rule carries by reference: read from the server's environment when a
//! request needs them, added by the host, and scrubbed from everything that goes back to
//! the guest (response headers and bodies that echo them) or into a log.

use base64::Engine as _;

use crate::config::egress::{Auth, SecretSource, secret_source};

/// What a secret is replaced with wherever it would reach the guest.
pub const REDACTED: &str = "[redacted]";

/// A credential ready to add to one request.
pub enum Credential {
    Header { name: String, value: String },
    Query { name: String, value: String },
}

impl Credential {
    /// The forms of the secret that must not reach the guest (the secret itself, and the
    /// header value made from it).
    pub fn forms(&self) -> Vec<String> {
        match self {
            Self::Header { value, .. } => {
                let mut forms = vec![value.clone()];
                for prefix in ["Bearer ", "Basic "] {
                    if let Some(inner) = value.strip_prefix(prefix) {
                        forms.push(inner.to_owned());
                        if prefix == "Basic "
                            && let Some(password) = base64::engine::general_purpose::STANDARD
                                .decode(inner)
                                .ok()
                                .and_then(|d| String::from_utf8(d).ok())
                                .and_then(|pair| pair.split_once(':').map(|(_, p)| p.to_owned()))
                        {
                            forms.push(password);
                        }
                    }
                }
                forms.retain(|f| f.len() >= 4);
                forms
            }
            Self::Query { value, .. } => vec![value.clone()],
        }
    }
}

/// Largest secret read from a file.
const MAX_SECRET_BYTES: u64 = 64 << 10;

fn read(from: &str) -> Result<String, String> {
    let missing = || format!("the rule's credential {from} is not set on the server");
    match secret_source(from).map_err(|e| e.to_string())? {
        SecretSource::Env(name) => std::env::var(name).map_err(|_| missing()),
        SecretSource::File(path) => {
            use std::io::Read as _;
            let mut text = String::new();
            std::fs::File::open(path)
                .and_then(|f| f.take(MAX_SECRET_BYTES).read_to_string(&mut text))
                .map_err(|_| missing())?;
            let text = text.trim_end_matches(['\n', '\r']).to_owned();
            if text.is_empty() {
                return Err(missing());
            }
            Ok(text)
        }
    }
}

/// The credential `auth` describes, with its secret read now.
pub fn resolve(auth: &Auth) -> Result<Credential, String> {
    if let Some(from) = &auth.bearer_from {
        return Ok(Credential::Header {
            name: "authorization".to_owned(),
            value: format!("Bearer {}", read(from)?),
        });
    }
    if let (Some(user), Some(from)) = (&auth.basic_user, &auth.password_from) {
        let pair = format!("{user}:{}", read(from)?);
        return Ok(Credential::Header {
            name: "authorization".to_owned(),
            value: format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(pair)
            ),
        });
    }
    match (&auth.header, &auth.query, &auth.value_from) {
        (Some(header), None, Some(from)) => Ok(Credential::Header {
            name: header.to_ascii_lowercase(),
            value: read(from)?,
        }),
        (None, Some(query), Some(from)) => Ok(Credential::Query {
            name: query.clone(),
            value: read(from)?,
        }),
        _ => Err("the rule's credential is not usable".to_owned()),
    }
}

/// `bytes` with every occurrence of each of `secrets` replaced by [`REDACTED`].
pub fn scrub(bytes: Vec<u8>, secrets: &[String]) -> Vec<u8> {
    let mut out = bytes;
    for secret in secrets.iter().filter(|s| !s.is_empty()) {
        let finder = memchr::memmem::Finder::new(secret.as_bytes());
        if finder.find(&out).is_none() {
            continue;
        }
        let mut replaced = Vec::with_capacity(out.len());
        let mut rest = &out[..];
        while let Some(at) = finder.find(rest) {
            replaced.extend_from_slice(&rest[..at]);
            replaced.extend_from_slice(REDACTED.as_bytes());
            rest = &rest[at + secret.len()..];
        }
        replaced.extend_from_slice(rest);
        out = replaced;
    }
    out
}

/// `text` scrubbed (see [`scrub`]).
pub fn scrub_text(text: &str, secrets: &[String]) -> String {
    String::from_utf8_lossy(&scrub(text.as_bytes().to_vec(), secrets)).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_form_of_a_secret_is_scrubbed() {
        let basic = Credential::Header {
            name: "authorization".into(),
            value: format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode("user:hunter22")
            ),
        };
        let forms = basic.forms();
        let echoed = format!("got {} and hunter22 twice: hunter22", forms[0]);
        let clean = scrub_text(&echoed, &forms);
        assert!(
            !clean.contains("hunter22") && !clean.contains(&forms[1]),
            "{clean}"
        );
        assert_eq!(clean.matches(REDACTED).count(), 3, "{clean}");
        assert_eq!(scrub(b"nothing here".to_vec(), &forms), b"nothing here");
    }
}
