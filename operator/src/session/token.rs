//! The session's token Secret: created once, owned by the session, and never inherited from an
//! earlier session of the same name.

use capsule_crds::CapsuleSession;
use capsule_protocol::auth::token_sha256_hex;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{DeleteParams, PostParams};
use kube::{Api, ResourceExt};

use crate::context::Context;
use crate::error::Result;
use crate::labels;
use crate::pool::token::{new_token, owned_token_secret};
use crate::relay::directory::secret_token;

/// The session's token Secret (created once, owned by the session) and the token's sha256. On the
/// session's first pass the create goes first (one round trip when the Secret is new); later
/// passes read it first.
pub(super) async fn ensure_token(
    ctx: &Context,
    session: &CapsuleSession,
    ns: &str,
    likely_new: bool,
) -> Result<(String, String)> {
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), ns);
    let secret_name = labels::session_token_secret(&session.name_any());
    let existing = if likely_new {
        None
    } else {
        secrets.get_opt(&secret_name).await?
    };
    let existing = match existing {
        Some(stale) if !owned_by(&stale, session) => {
            delete_stale_token(&secrets, &stale).await?;
            None
        }
        other => other,
    };
    let token = match existing {
        Some(existing) => secret_token(&existing).unwrap_or_default(),
        None => create_token(&secrets, session, secret_name).await?,
    };
    let hash = token_sha256_hex(&token);
    Ok((token, hash))
}

/// Creates the Secret with a new token; one created meanwhile by an earlier pass is used instead.
async fn create_token(
    secrets: &Api<Secret>,
    session: &CapsuleSession,
    secret_name: String,
) -> Result<String> {
    let token = new_token();
    let secret = owned_token_secret(session, secret_name.clone(), labels::SESSION, &token);
    match secrets.create(&PostParams::default(), &secret).await {
        Ok(_) => Ok(token),
        Err(kube::Error::Api(s)) if s.code == 409 => {
            let existing = secrets.get(&secret_name).await?;
            if !owned_by(&existing, session) {
                // An earlier session of this name left it: never hand its token on.
                delete_stale_token(secrets, &existing).await?;
                return Err(kube::Error::Api(s).into());
            }
            Ok(secret_token(&existing).unwrap_or_default())
        }
        Err(e) => Err(e.into()),
    }
}

/// Whether the token Secret belongs to this very session (by uid), not to an earlier session of
/// the same name whose Secret the garbage collector has not removed yet.
fn owned_by(secret: &Secret, session: &CapsuleSession) -> bool {
    let uid = session.metadata.uid.as_deref();
    secret
        .owner_references()
        .iter()
        .any(|o| o.kind == "CapsuleSession" && Some(o.uid.as_str()) == uid)
}

async fn delete_stale_token(secrets: &Api<Secret>, stale: &Secret) -> Result<()> {
    let uid = stale.metadata.uid.clone();
    let params = DeleteParams {
        preconditions: Some(kube::api::Preconditions {
            uid,
            resource_version: None,
        }),
        ..DeleteParams::default()
    };
    match secrets.delete(&stale.name_any(), &params).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => Ok(()),
        Err(e) => Err(e.into()),
    }
}
