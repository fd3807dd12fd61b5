//! What every request handler shares.

use std::sync::Arc;

use pulse_bus::Bus;
use pulse_runtime::Health;
use pulse_store::Store;

use crate::auth::{ApiKeyConfigError, ApiKeys};
use crate::settings::IngestSettings;

/// The API's shared state: the bus and store it writes to, its limits and its
/// credentials. Cheap to clone.
#[derive(Clone)]
pub struct IngestState {
    inner: Arc<Inner>,
}

struct Inner {
    bus: Arc<dyn Bus>,
    store: Arc<dyn Store>,
    settings: IngestSettings,
    api_keys: ApiKeys,
    verifier: Option<pulse_auth::Verifier>,
    anonymous_read: bool,
}

impl std::fmt::Debug for IngestState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IngestState")
            .field("settings", &self.inner.settings)
            .field("verifier", &self.inner.verifier)
            .field("anonymous_read", &self.inner.anonymous_read)
            .finish_non_exhaustive()
    }
}

/// Settings that cannot be used: a start-up error.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error(transparent)]
    ApiKeys(#[from] ApiKeyConfigError),
    #[error("auth: {0}")]
    Jwt(#[from] pulse_auth::KeyError),
}

impl IngestState {
    /// State for an API writing to `bus` and `store`, with the limits and
    /// API keys of `settings` and the browser token settings of `auth`.
    pub fn new(
        bus: Arc<dyn Bus>,
        store: Arc<dyn Store>,
        settings: IngestSettings,
        auth: &pulse_auth::AuthSettings,
    ) -> Result<Self, StateError> {
        let api_keys = ApiKeys::new(&settings.api_keys)?;
        let verifier = pulse_auth::Verifier::from_settings(auth)?;
        Ok(Self { inner: Arc::new(Inner { bus, store, settings, api_keys, verifier, anonymous_read: auth.anonymous }) })
    }

    /// Registers the bus and the store as readiness checks, so `/readyz`
    /// says not ready while Redis is away.
    pub fn register_readiness(&self, health: &Health) {
        let bus = self.inner.bus.clone();
        health.register("bus", move || {
            let bus = bus.clone();
            async move { bus.check().await.map_err(|e| pulse_bus::error_chain(&e)) }
        });
        let store = self.inner.store.clone();
        health.register("store", move || {
            let store = store.clone();
            async move { store.check().await.map_err(|e| pulse_bus::error_chain(&e)) }
        });
    }

    pub fn bus(&self) -> &Arc<dyn Bus> {
        &self.inner.bus
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        &self.inner.store
    }

    pub fn settings(&self) -> &IngestSettings {
        &self.inner.settings
    }

    pub(crate) fn api_keys(&self) -> &ApiKeys {
        &self.inner.api_keys
    }

    pub(crate) fn verifier(&self) -> Option<&pulse_auth::Verifier> {
        self.inner.verifier.as_ref()
    }

    pub(crate) fn anonymous_read(&self) -> bool {
        self.inner.anonymous_read
    }
}
