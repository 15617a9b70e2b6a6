//! What every step of one pool pass reads: the pool, its identity, labels and Event reference, and
//! what is wrong with its spec; and the pool's in-memory state, reached through it.

use capsule_crds::CapsulePool;
use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::NamespaceResourceScope;
use kube::{Api, Resource};

use super::{labels_of, spec_check};
use crate::context::{Context, PoolKey};
use crate::ledger::PoolState;
use crate::metrics::PoolLabels;

pub(super) struct Pass<'a> {
    pub(super) ctx: &'a Context,
    pub(super) pool: &'a CapsulePool,
    pub(super) key: PoolKey,
    pub(super) labels: PoolLabels,
    pub(super) reference: ObjectReference,
    /// Why the spec cannot be used; a pass over an unusable spec creates and deletes nothing.
    pub(super) problems: Vec<String>,
}

impl<'a> Pass<'a> {
    /// Starts a pass, seeding the pool's state from its status the first time this process sees
    /// it, so its counters survive an operator restart.
    pub(super) fn start(ctx: &'a Context, pool: &'a CapsulePool, key: PoolKey) -> Self {
        let pass = Self {
            ctx,
            pool,
            labels: labels_of(&key),
            key,
            reference: pool.object_ref(&()),
            problems: spec_check::problems(&pool.spec),
        };
        ctx.ledger.open(&pass.key, pool);
        pass
    }

    pub(super) fn namespace(&self) -> &str {
        &self.key.0
    }

    pub(super) fn name(&self) -> &str {
        &self.key.1
    }

    pub(super) fn spec_usable(&self) -> bool {
        self.problems.is_empty()
    }

    /// An API of the pool's namespace.
    pub(super) fn api<K>(&self) -> Api<K>
    where
        K: Resource<Scope = NamespaceResourceScope>,
        K::DynamicType: Default,
    {
        Api::namespaced(self.ctx.client.clone(), self.namespace())
    }

    pub(super) fn with_state<R>(&self, f: impl FnOnce(&mut PoolState) -> R) -> R {
        self.ctx.ledger.update(&self.key, f)
    }
}
