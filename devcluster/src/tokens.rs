//! Bearer tokens the server issued: the admin token of the kubeconfig (system:masters) and
//! service-account tokens from the TokenRequest API. A token is a random 256-bit secret; the server
//! keeps what each one stands for, so a forged token matches nothing.

use serde::{Deserialize, Serialize};
use std::collections::HashMap;

/// Who a request comes from.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct User {
    pub name: String,
    pub uid: String,
    pub groups: Vec<String>,
}

impl User {
    pub fn is_master(&self) -> bool {
        self.groups.iter().any(|g| g == "system:masters")
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct IssuedToken {
    pub user: User,
    /// Unix seconds; `None` never expires.
    pub expires_at: Option<i64>,
    pub audiences: Vec<String>,
    /// `(kind, name, uid)` of the object the token is bound to, if any.
    pub bound_object: Option<(String, String, String)>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Tokens {
    issued: HashMap<String, IssuedToken>,
}

pub const ADMIN_USER: &str = "devcluster-admin";

pub fn random_token() -> String {
    let bytes: [u8; 32] = rand::random();
    hex::encode(bytes)
}

impl Tokens {
    pub fn admin_user() -> User {
        User {
            name: ADMIN_USER.into(),
            uid: "devcluster-admin".into(),
            groups: vec!["system:masters".into(), "system:authenticated".into()],
        }
    }

    pub fn insert(&mut self, token: String, issued: IssuedToken) {
        self.issued.insert(token, issued);
    }

    pub fn authenticate(&self, token: &str) -> Option<&IssuedToken> {
        let now = jiff::Timestamp::now().as_second();
        self.issued
            .get(token)
            .filter(|t| t.expires_at.is_none_or(|at| at > now))
    }

    /// Issues a token for a service account.
    pub fn issue_for_service_account(
        &mut self,
        namespace: &str,
        name: &str,
        uid: &str,
        expiration_seconds: i64,
        audiences: Vec<String>,
        bound_object: Option<(String, String, String)>,
    ) -> (String, i64) {
        let token = random_token();
        let expires_at = jiff::Timestamp::now().as_second() + expiration_seconds;
        self.issued.insert(
            token.clone(),
            IssuedToken {
                user: User {
                    name: format!("system:serviceaccount:{namespace}:{name}"),
                    uid: uid.into(),
                    groups: vec![
                        "system:serviceaccounts".into(),
                        format!("system:serviceaccounts:{namespace}"),
                        "system:authenticated".into(),
                    ],
                },
                expires_at: Some(expires_at),
                audiences,
                bound_object,
            },
        );
        (token, expires_at)
    }

    /// Drops tokens of a service account that was deleted (or whose bound object was).
    pub fn revoke_for_uid(&mut self, uid: &str) {
        self.issued.retain(|_, t| {
            t.user.uid != uid
                && t.bound_object
                    .as_ref()
                    .is_none_or(|(_, _, bound)| bound != uid)
        });
    }
}

impl Tokens {
    /// Keeps only tokens whose service account (and bound object) still exist.
    pub fn retain_live(&mut self, live_uids: &std::collections::HashSet<String>) {
        self.issued.retain(|_, t| {
            t.expires_at.is_none()
                || (live_uids.contains(&t.user.uid)
                    && t.bound_object
                        .as_ref()
                        .is_none_or(|(_, _, uid)| uid.is_empty() || live_uids.contains(uid)))
        });
    }
}
