//! Who may do what: identities in SeaweedFS's `s3.json` format, so a
//! `weed s3 -config` file works here unchanged:
//!
//! ```json
//! {"identities": [
//!   {"name": "alice", "credentials": [{"accessKey": "AK", "secretKey": "SK"}],
//!    "actions": ["Read", "Write", "List", "Tagging"]},
//!   {"name": "admin", "credentials": [...], "actions": ["Admin"]}
//! ]}
//! ```
//!
//! Actions are `Admin`, `Read`, `Write`, `List` and `Tagging`, each
//! optionally limited to one bucket (`Read:photos`). A bucket belongs to
//! the identity that created it: others (but `Admin`) may not read or
//! write it unless its ACL is `public-read` (anyone reads) or
//! `public-read-write`. Without a configuration every request is allowed,
//! anonymous ones included (as `weed s3` without `-config`).

use std::collections::HashMap;
use std::path::Path;

use serde_json::Value;

use crate::request::CannedAcl;
use crate::sigv4::{Credentials, Identity, SecretKey};

/// What a request needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Read,
    Write,
    List,
    Tagging,
    /// Bucket settings (ACL, CORS, versioning): the owner or `Admin`.
    Admin,
}

impl Action {
    fn name(self) -> &'static str {
        match self {
            Action::Read => "Read",
            Action::Write => "Write",
            Action::List => "List",
            Action::Tagging => "Tagging",
            Action::Admin => "Admin",
        }
    }
}

#[derive(Debug, Clone)]
pub struct User {
    pub name: String,
    secret: String,
    actions: Vec<String>,
}

impl User {
    fn may(&self, action: Action, bucket: Option<&str>) -> bool {
        self.actions.iter().any(|a| {
            let (name, scope) = match a.split_once(':') {
                Some((n, s)) => (n, Some(s)),
                None => (a.as_str(), None),
            };
            let scoped = match (scope, bucket) {
                (None, _) => true,
                (Some(s), Some(b)) => s == b || s == "*",
                (Some(_), None) => false,
            };
            scoped
                && (name == "Admin"
                    || name == action.name()
                    || (name == "Write" && action == Action::Tagging))
        })
    }

    pub fn is_admin(&self) -> bool {
        self.actions.iter().any(|a| a == "Admin")
    }
}

/// The identities of a gateway; empty means open.
#[derive(Debug, Clone, Default)]
pub struct Identities {
    by_key: HashMap<String, User>,
}

impl Identities {
    /// Everyone may do everything.
    pub fn open() -> Self {
        Self::default()
    }

    pub fn is_open(&self) -> bool {
        self.by_key.is_empty()
    }

    pub fn load(path: &Path) -> Result<Self, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        Self::parse(&text).map_err(|e| format!("{}: {e}", path.display()))
    }

    pub fn parse(text: &str) -> Result<Self, String> {
        let v: Value = serde_json::from_str(text).map_err(|e| format!("not JSON: {e}"))?;
        let mut by_key = HashMap::new();
        let ids = v["identities"].as_array().ok_or("no \"identities\" list")?;
        for id in ids {
            let name = id["name"]
                .as_str()
                .ok_or("an identity without a \"name\"")?
                .to_string();
            let actions: Vec<String> = id["actions"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|x| x.as_str().map(str::to_string))
                        .collect()
                })
                .unwrap_or_default();
            for c in id["credentials"].as_array().into_iter().flatten() {
                let (Some(ak), Some(sk)) = (c["accessKey"].as_str(), c["secretKey"].as_str())
                else {
                    return Err(format!(
                        "identity {name:?}: a credential needs accessKey and secretKey"
                    ));
                };
                let user = User {
                    name: name.clone(),
                    secret: sk.to_string(),
                    actions: actions.clone(),
                };
                if by_key.insert(ak.to_string(), user).is_some() {
                    return Err(format!("access key {ak:?} appears twice"));
                }
            }
        }
        Ok(Identities { by_key })
    }

    pub fn user(&self, identity: &Identity) -> Option<&User> {
        match identity {
            Identity::User { access_key } => self.by_key.get(access_key),
            Identity::Anonymous => None,
        }
    }

    /// Whether an object's own canned ACL lets `identity` read it where
    /// its bucket does not: public-read and public-read-write open it to
    /// everyone, authenticated-read to every known user.
    pub fn object_acl_allows_read(&self, identity: &Identity, acl: Option<CannedAcl>) -> bool {
        match acl {
            Some(CannedAcl::PublicRead | CannedAcl::PublicReadWrite) => true,
            Some(CannedAcl::AuthenticatedRead) => self.user(identity).is_some(),
            _ => false,
        }
    }

    /// Whether `identity` may do `action` on `bucket` (owned by `owner`,
    /// with `acl`; `None` for a request without a bucket or a bucket that
    /// does not exist yet).
    pub fn allows(
        &self,
        identity: &Identity,
        action: Action,
        bucket: Option<&str>,
        owner: Option<&str>,
        acl: Option<CannedAcl>,
    ) -> bool {
        if self.is_open() {
            return true;
        }
        let public = match acl {
            Some(CannedAcl::PublicRead) => matches!(action, Action::Read | Action::List),
            Some(CannedAcl::PublicReadWrite) => {
                matches!(action, Action::Read | Action::List | Action::Write)
            }
            _ => false,
        };
        let Some(user) = self.user(identity) else {
            return public;
        };
        if user.is_admin() {
            return true;
        }
        let owns = owner.is_none_or(|o| o == user.name);
        if action == Action::Admin {
            // A bucket's settings (and deleting it) are its owner's, who
            // needs the right to write.
            return owns && user.may(Action::Write, bucket);
        }
        (owns || public) && user.may(action, bucket)
    }
}

impl Credentials for Identities {
    fn secret_key(&self, access_key: &str) -> Option<SecretKey> {
        self.by_key
            .get(access_key)
            .map(|u| SecretKey(u.secret.clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owners_admins_scopes_and_public_buckets() {
        let ids = Identities::parse(
            r#"{"identities":[
              {"name":"alice","credentials":[{"accessKey":"A","secretKey":"a"}],"actions":["Read","Write","List"]},
              {"name":"bob","credentials":[{"accessKey":"B","secretKey":"b"}],"actions":["Read:pics","List"]},
              {"name":"root","credentials":[{"accessKey":"R","secretKey":"r"}],"actions":["Admin"]}]}"#,
        )
        .unwrap();
        let a = Identity::User {
            access_key: "A".into(),
        };
        let b = Identity::User {
            access_key: "B".into(),
        };
        let r = Identity::User {
            access_key: "R".into(),
        };
        let anon = Identity::Anonymous;
        assert!(ids.allows(&a, Action::Write, Some("x"), Some("alice"), None));
        assert!(!ids.allows(&b, Action::Read, Some("x"), Some("alice"), None));
        assert!(!ids.allows(&b, Action::Write, Some("x"), Some("bob"), None));
        assert!(ids.allows(&b, Action::Read, Some("pics"), Some("bob"), None));
        assert!(!ids.allows(&b, Action::Read, Some("other"), Some("bob"), None));
        assert!(ids.allows(
            &b,
            Action::Read,
            Some("pics"),
            Some("alice"),
            Some(CannedAcl::PublicRead)
        ));
        assert!(!ids.allows(
            &b,
            Action::Write,
            Some("pics"),
            Some("alice"),
            Some(CannedAcl::PublicRead)
        ));
        assert!(ids.allows(&r, Action::Write, Some("x"), Some("alice"), None));
        assert!(ids.allows(&a, Action::Admin, Some("x"), Some("alice"), None));
        assert!(!ids.allows(
            &a,
            Action::Admin,
            Some("x"),
            Some("bob"),
            Some(CannedAcl::PublicReadWrite)
        ));
        assert!(!ids.allows(&anon, Action::Read, Some("x"), Some("alice"), None));
        assert!(ids.allows(
            &anon,
            Action::Read,
            Some("x"),
            Some("alice"),
            Some(CannedAcl::PublicRead)
        ));
        assert_eq!(ids.secret_key("A").unwrap().0, "a");
        assert!(
            Identities::parse(r#"{"identities":[{"name":"x","credentials":[{"accessKey":"A"}]}]}"#)
                .is_err()
        );
        assert!(Identities::open().allows(&anon, Action::Admin, None, None, None));
    }
}
