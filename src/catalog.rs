//! The configuration the hot paths read, cached in memory.
//!
//! Ingest and call start would otherwise read the same rows (webhook settings, key hashes,
//! the variable schema, the agent's pre-call actions, runtime tokens) on every request.
//! Entries are loaded on first use and dropped whenever the configuration changes: at once
//! for changes made by this process ([`Catalog::invalidate`]), and within
//! [`WATCH_INTERVAL`] for changes made by another process (the CLI, another node), which
//! bump `config_version` through triggers.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use tokio::sync::OnceCell;

use crate::auth::keys::SecretHash;
use crate::auth::signing::SigningSecret;
use crate::domain::document::AgentDocument;
use crate::domain::phone::Region;
use crate::domain::runtime::Program;
use crate::domain::variables::VariableDef;
use crate::metrics::{DbOp, Metrics};
use crate::store::actions::{self, ActiveKey};
use crate::store::agents::{self, Agent};
use crate::store::documents::{self, webhook_settings};
use crate::store::{Db, tokens};

/// How often the catalog looks for configuration changes made by other processes (one
/// read of one row). A change is applied, and recorded as applied (see
/// [`crate::store::servers`]), within this time.
pub const WATCH_INTERVAL: Duration = Duration::from_millis(20);

/// What ingest needs to know about a webhook URL.
#[derive(Debug)]
pub struct WebhookTarget {
    /// The endpoint's row: deliveries and cached data belong to it.
    pub action_id: i64,
    /// The Webhook action's key in the agent's documents.
    pub action_key: String,
    pub agent_id: i64,
    pub agent_public_id: String,
    pub region: Region,
    pub enabled: bool,
    pub ttl_secs: i64,
    /// Checked against the clock on every request: a cached key expires on time.
    pub keys: Vec<ActiveKey>,
    /// The secret requests must be signed with, when signing is required.
    pub signing: Option<SigningSecret>,
    /// The published version's variable schema: what ingest checks fields against.
    pub schema: Arc<[VariableDef]>,
}

impl WebhookTarget {
    /// Whether `presented` is a key of this webhook valid at `now` (Unix ms). Every key is
    /// compared, in constant time, without stopping early.
    pub fn key_opens(&self, presented: &SecretHash, now: i64) -> bool {
        self.keys.iter().fold(false, |acc, k| {
            acc | (k.hash.matches(presented) & k.valid_at(now))
        })
    }
}

/// A Webhook action of the published version, as a call waits for it.
#[derive(Debug, Clone)]
pub struct WebhookStep {
    /// The endpoint's row, where its data is cached.
    pub action_id: i64,
    pub key: String,
    pub name: String,
    pub fallback_wait_ms: i64,
    pub enabled: bool,
}

/// What a call start needs to know about an agent: its published version, compiled.
#[derive(Debug)]
pub struct AgentRuntime {
    pub agent: Agent,
    /// The version calls run now.
    pub version: i64,
    pub steps: Vec<WebhookStep>,
    pub schema: Arc<[VariableDef]>,
    /// The pre-call rules and flows its calls run.
    pub program: Arc<Program>,
}

/// What a call of `agent` runs when `doc` (version `version`) is published.
async fn runtime_of(
    db: &Db,
    agent: Agent,
    version: i64,
    doc: &AgentDocument,
) -> Result<AgentRuntime, sqlx::Error> {
    let endpoints = documents::endpoints(db, agent.id).await?;
    let steps = doc
        .webhooks()
        .filter_map(|(a, wait_ms, _, enabled)| {
            let endpoint = endpoints.iter().find(|e| e.key == a.key)?;
            Some(WebhookStep {
                action_id: endpoint.id,
                key: a.key.clone(),
                name: a.name.clone(),
                fallback_wait_ms: wait_ms,
                enabled,
            })
        })
        .collect();
    Ok(AgentRuntime {
        agent,
        version,
        steps,
        schema: doc.schema().into(),
        program: Arc::new(doc.compile()),
    })
}

/// Loads in progress, one per key and generation: concurrent misses for the same entry
/// (a burst of calls or webhooks right after a configuration change) share one load instead
/// of each reading the database.
type Inflight<T> = Mutex<HashMap<(String, u64), Arc<OnceCell<Option<Arc<T>>>>>>;

/// What a connection's endpoint needs to know, by its URL slug.
#[derive(Debug)]
pub struct ConnectionTarget {
    pub id: i64,
    pub agent_id: i64,
    pub agent_public_id: String,
    pub platform: crate::connect::Platform,
    pub verifier: crate::connect::verify::Verifier,
    pub mapping: crate::connect::Mapping,
    pub deadline_ms: i64,
}

#[derive(Default)]
struct Entries {
    webhooks: HashMap<String, Arc<WebhookTarget>>,
    connections: HashMap<String, Arc<ConnectionTarget>>,
    agents: HashMap<String, Arc<AgentRuntime>>,
    tokens: HashMap<[u8; 32], i64>,
    /// Earlier versions' programs, for calls that started before a publish.
    programs: HashMap<(i64, i64), Arc<Program>>,
}

/// The cache. Cloning shares it.
#[derive(Clone)]
pub struct Catalog {
    db: Db,
    /// Where loads on a cache miss are timed.
    metrics: Arc<Metrics>,
    entries: Arc<RwLock<Entries>>,
    /// Bumped by every invalidation, so that a load that raced one is not cached.
    generation: Arc<AtomicU64>,
    seen_version: Arc<AtomicI64>,
    /// This server's row in `servers`, where the versions it applied are recorded.
    server: Arc<AtomicI64>,
    loading_webhooks: Arc<Inflight<WebhookTarget>>,
    loading_agents: Arc<Inflight<AgentRuntime>>,
}

/// Runs `load` once for all callers asking for `key` in this `generation`.
async fn single_flight<T, F, Fut>(
    inflight: &Inflight<T>,
    key: &str,
    generation: u64,
    load: F,
) -> Result<Option<Arc<T>>, sqlx::Error>
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = Result<Option<Arc<T>>, sqlx::Error>>,
{
    let cell = inflight
        .lock()
        .expect("catalog lock")
        .entry((key.to_owned(), generation))
        .or_default()
        .clone();
    let result = cell.get_or_try_init(load).await.cloned();
    // The first caller to finish forgets the load; later callers find the entry cached.
    inflight
        .lock()
        .expect("catalog lock")
        .remove(&(key.to_owned(), generation));
    result
}

impl Catalog {
    pub fn new(db: Db, metrics: Arc<Metrics>) -> Self {
        Self {
            db,
            metrics,
            entries: Arc::default(),
            generation: Arc::default(),
            seen_version: Arc::new(AtomicI64::new(i64::MIN)),
            server: Arc::new(AtomicI64::new(0)),
            loading_webhooks: Arc::default(),
            loading_agents: Arc::default(),
        }
    }

    /// Forgets everything; the next request reads the database again.
    pub fn invalidate(&self) {
        let mut entries = self.entries.write().expect("catalog lock");
        self.generation.fetch_add(1, Ordering::AcqRel);
        *entries = Entries::default();
    }

    /// Stores a freshly loaded entry, unless the cache was invalidated while it loaded.
    fn store(&self, loaded_in: u64, put: impl FnOnce(&mut Entries)) {
        let mut entries = self.entries.write().expect("catalog lock");
        if self.generation.load(Ordering::Acquire) == loaded_in {
            put(&mut entries);
        }
    }

    /// The webhook at `slug` if it is in the cache (no lookup).
    pub fn cached_webhook(&self, slug: &str) -> Option<Arc<WebhookTarget>> {
        self.entries
            .read()
            .expect("catalog lock")
            .webhooks
            .get(slug)
            .cloned()
    }

    /// The connection at this URL slug, if it is in the cache (no lookup).
    pub fn cached_connection(&self, slug: &str) -> Option<Arc<ConnectionTarget>> {
        self.entries
            .read()
            .expect("catalog lock")
            .connections
            .get(slug)
            .cloned()
    }

    /// The agent a runtime token speaks for, if the token is in the cache (no lookup).
    pub fn cached_token_agent(&self, presented: &str) -> Option<i64> {
        let hash = SecretHash::of(presented);
        let key: [u8; 32] = hash.as_bytes().try_into().expect("32 bytes");
        self.entries
            .read()
            .expect("catalog lock")
            .tokens
            .get(&key)
            .copied()
    }

    /// The webhook at `slug`, if there is one.
    pub async fn webhook(&self, slug: &str) -> Result<Option<Arc<WebhookTarget>>, sqlx::Error> {
        if let Some(hit) = self
            .entries
            .read()
            .expect("catalog lock")
            .webhooks
            .get(slug)
        {
            return Ok(Some(hit.clone()));
        }
        let asked = Instant::now();
        let generation = self.generation.load(Ordering::Acquire);
        let loaded = single_flight(&self.loading_webhooks, slug, generation, || async {
            let Some(row) = actions::find_ingest_target(&self.db, slug).await? else {
                return Ok(None);
            };
            let published = documents::published(&self.db, row.agent_id).await?;
            let draft = documents::draft(&self.db, row.agent_id).await?;
            let Some((_, ttl_secs, enabled)) = webhook_settings(
                &row.action_key,
                published.as_ref().map(|v| &v.document),
                draft.as_ref().map(|d| &d.document),
            ) else {
                return Ok(None);
            };
            let keys = actions::active_keys(&self.db, row.action_id).await?;
            let signing = match (row.signing_required, row.signing_secret.as_deref()) {
                (true, Some(text)) => Some(SigningSecret::parse(text).map_err(|e| {
                    sqlx::Error::Decode(format!("webhook {}: {e}", row.action_id).into())
                })?),
                _ => None,
            };
            let schema: Arc<[VariableDef]> = published
                .as_ref()
                .map(|v| v.document.schema())
                .unwrap_or_default()
                .into();
            let target = Arc::new(WebhookTarget {
                action_id: row.action_id,
                action_key: row.action_key,
                agent_id: row.agent_id,
                region: Region::parse(&row.default_region)
                    .unwrap_or_else(|_| Region::parse("US").expect("US is a region")),
                agent_public_id: row.agent_public_id,
                enabled,
                ttl_secs,
                keys,
                signing,
                schema,
            });
            self.store(generation, |e| {
                e.webhooks.insert(slug.to_owned(), target.clone());
            });
            Ok(Some(target))
        })
        .await;
        self.metrics.db(DbOp::ReadConfig, asked.elapsed());
        loaded
    }

    /// The connection at `slug`, if there is one (cached until the configuration changes).
    pub async fn connection(
        &self,
        slug: &str,
    ) -> Result<Option<Arc<ConnectionTarget>>, sqlx::Error> {
        if let Some(hit) = self
            .entries
            .read()
            .expect("catalog lock")
            .connections
            .get(slug)
        {
            return Ok(Some(hit.clone()));
        }
        let generation = self.generation.load(Ordering::Acquire);
        let asked = Instant::now();
        let row = crate::store::connections::by_slug(&self.db, slug).await;
        self.metrics.db(DbOp::ReadConfig, asked.elapsed());
        let Some(row) = row? else {
            return Ok(None);
        };
        let verifier = row
            .verifier()
            .map_err(|e| sqlx::Error::Decode(format!("connection {}: {e}", row.id).into()))?;
        let target = Arc::new(ConnectionTarget {
            id: row.id,
            agent_id: row.agent_id,
            platform: row.platform(),
            mapping: row.mapping(),
            deadline_ms: row.deadline_ms,
            agent_public_id: row.agent_public_id,
            verifier,
        });
        self.store(generation, |e| {
            e.connections.insert(slug.to_owned(), target.clone());
        });
        Ok(Some(target))
    }

    /// The agent with this public id and what its calls run.
    pub async fn agent(&self, public_id: &str) -> Result<Option<Arc<AgentRuntime>>, sqlx::Error> {
        if let Some(hit) = self
            .entries
            .read()
            .expect("catalog lock")
            .agents
            .get(public_id)
        {
            return Ok(Some(hit.clone()));
        }
        let asked = Instant::now();
        let generation = self.generation.load(Ordering::Acquire);
        let loaded = single_flight(&self.loading_agents, public_id, generation, || async {
            let Some(agent) = agents::find_by_public_id(&self.db, public_id).await? else {
                return Ok(None);
            };
            let (version, doc) = match documents::published(&self.db, agent.id).await? {
                Some(v) => (v.meta.number, v.document),
                None => (0, AgentDocument::new_agent()),
            };
            let runtime = Arc::new(runtime_of(&self.db, agent, version, &doc).await?);
            self.store(generation, |e| {
                e.agents.insert(public_id.to_owned(), runtime.clone());
            });
            Ok(Some(runtime))
        })
        .await;
        self.metrics.db(DbOp::ReadConfig, asked.elapsed());
        loaded
    }

    /// The program of version `version` of the agent `runtime` runs: for a call that
    /// started on an earlier version, which it finishes on.
    pub async fn program(
        &self,
        runtime: &AgentRuntime,
        version: i64,
    ) -> Result<Option<Arc<Program>>, sqlx::Error> {
        if version == runtime.version {
            return Ok(Some(runtime.program.clone()));
        }
        let key = (runtime.agent.id, version);
        if let Some(p) = self
            .entries
            .read()
            .expect("catalog lock")
            .programs
            .get(&key)
        {
            return Ok(Some(p.clone()));
        }
        let generation = self.generation.load(Ordering::Acquire);
        let Some(v) = documents::version(&self.db, runtime.agent.id, version).await? else {
            return Ok(None);
        };
        let program = Arc::new(v.document.compile());
        self.store(generation, |e| {
            e.programs.insert(key, program.clone());
        });
        Ok(Some(program))
    }

    /// The agent a presented runtime token speaks for. Unknown tokens are not cached.
    pub async fn token_agent(&self, presented: &str) -> Result<Option<i64>, sqlx::Error> {
        let hash = SecretHash::of(presented);
        let key: [u8; 32] = hash.as_bytes().try_into().expect("32 bytes");
        if let Some(agent) = self.entries.read().expect("catalog lock").tokens.get(&key) {
            return Ok(Some(*agent));
        }
        let generation = self.generation.load(Ordering::Acquire);
        let asked = Instant::now();
        let agent = tokens::agent_for(&self.db, presented).await;
        self.metrics.db(DbOp::ReadConfig, asked.elapsed());
        let agent = agent?;
        if let Some(agent) = agent {
            self.store(generation, |e| {
                e.tokens.insert(key, agent);
            });
        }
        Ok(agent)
    }

    /// Records that this catalog belongs to the server registered as `id` in `servers`,
    /// which has applied `version`.
    pub fn registered_as(&self, id: i64, version: i64) {
        self.server.store(id, Ordering::Release);
        self.seen_version.store(version, Ordering::Release);
    }

    /// Checks `config_version` once; drops the cache if another process changed something,
    /// and records the version as applied.
    pub async fn check_for_changes(&self) -> Result<(), sqlx::Error> {
        let version = crate::store::servers::config_version(&self.db).await?;
        let seen = self.seen_version.load(Ordering::Acquire);
        if seen != version {
            self.invalidate();
            let server = self.server.load(Ordering::Acquire);
            if server != 0 {
                crate::store::servers::applied(&self.db, server, version).await?;
            }
            self.seen_version.store(version, Ordering::Release);
        }
        Ok(())
    }

    /// Watches for changes by other processes until the task is aborted.
    pub fn spawn_watcher(&self) -> tokio::task::JoinHandle<()> {
        let this = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(WATCH_INTERVAL);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                if let Err(e) = this.check_for_changes().await {
                    tracing::warn!(error = %e, "could not check for configuration changes");
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    #[tokio::test]
    async fn concurrent_misses_share_one_load() {
        let inflight: Arc<Inflight<String>> = Arc::default();
        let loads = Arc::new(AtomicUsize::new(0));
        let callers: Vec<_> = (0..200)
            .map(|_| {
                let (inflight, loads) = (inflight.clone(), loads.clone());
                tokio::spawn(async move {
                    single_flight(&inflight, "agent", 7, || async {
                        loads.fetch_add(1, Ordering::SeqCst);
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        Ok(Some(Arc::new("loaded".to_owned())))
                    })
                    .await
                })
            })
            .collect();
        for c in callers {
            assert_eq!(
                c.await.unwrap().unwrap().as_deref().map(String::as_str),
                Some("loaded")
            );
        }
        assert_eq!(loads.load(Ordering::SeqCst), 1);
        assert!(
            inflight.lock().unwrap().is_empty(),
            "the finished load is forgotten"
        );
    }
}
