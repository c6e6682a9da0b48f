//! The credentials a running server checks against: users and REST secrets from
//! the configuration, plus, when a store is configured, the users, secrets and
//! revocations of the store, held in memory as one snapshot.
//!
//! No lookup ever waits on a database: a poller loads a new snapshot when the
//! store's generation counter moves and swaps it in whole. A request sees either the
//! old snapshot or the new one, never a mix.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use super::store_sync::Trigger;
use crate::turn::auth::{CredentialStore, Lookup, RestSecrets, StaticUsers, UserKeys};

/// One user as the store holds it: keys, never the password.
#[derive(Clone, Debug)]
pub struct KeyedUser {
    pub realm: String,
    pub name: String,
    pub keys: UserKeys,
    pub userhash: [u8; 32],
}

/// What the store contributes, as loaded at one generation.
#[derive(Debug, Default)]
pub struct StoreContents {
    pub generation: i64,
    pub users: Vec<KeyedUser>,
    pub secrets: Vec<String>,
    /// Revoked REST usernames and when their credential would have expired.
    pub revocations: Vec<(String, u64)>,
}

/// The snapshot lookups read.
#[derive(Clone)]
struct View {
    generation: i64,
    /// realm → name → keys (nested so a lookup by `&str` allocates nothing).
    users: HashMap<Box<str>, HashMap<Box<str>, UserKeys>>,
    userhashes: HashMap<[u8; 32], (Box<str>, Box<str>)>,
    /// Configuration secrets first, then the store's.
    rest: RestSecrets,
    /// The store's secrets alone, to rebuild `rest` when the configuration's
    /// secrets change.
    store_secrets: Vec<String>,
    revoked: HashMap<Box<str>, u64>,
}

/// Configuration credentials plus the latest store snapshot.
pub struct LiveCredentials {
    /// Users and secrets from the configuration; a reload swaps them whole.
    config: RwLock<Arc<ConfigCredentials>>,
    view: RwLock<Arc<View>>,
    /// False while the store cannot be read: new allocations are then refused (the
    /// snapshot may be stale), while existing ones keep refreshing from it.
    healthy: AtomicBool,
    /// Snapshots reloaded from the store, by what woke the poller
    /// ([`Trigger`]: poll, notify), for `ferroturn_credential_reloads_total`.
    reloads: [AtomicU64; 2],
}

impl std::fmt::Debug for LiveCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LiveCredentials")
            .field("generation", &self.generation())
            .field("healthy", &self.is_healthy())
            .finish_non_exhaustive()
    }
}

/// The configuration's share of the credentials.
struct ConfigCredentials {
    users: StaticUsers,
    secrets: Vec<String>,
}

impl LiveCredentials {
    /// Credentials from the configuration alone; `replace` adds a store's.
    pub fn new(realm: &str, users: &[(String, String)], secrets: &[String]) -> Self {
        let this = Self {
            config: RwLock::new(Arc::new(ConfigCredentials {
                users: StaticUsers::new(&[realm], users),
                secrets: secrets.to_vec(),
            })),
            view: RwLock::new(Arc::new(View {
                generation: -1,
                users: HashMap::new(),
                userhashes: HashMap::new(),
                rest: RestSecrets::new(secrets),
                store_secrets: Vec::new(),
                revoked: HashMap::new(),
            })),
            healthy: AtomicBool::new(true),
            reloads: Default::default(),
        };
        this.replace(StoreContents {
            generation: -1,
            ..Default::default()
        });
        this
    }

    /// Swaps in the store's contents at a new generation.
    pub fn replace(&self, contents: StoreContents) {
        let mut users: HashMap<Box<str>, HashMap<Box<str>, UserKeys>> = HashMap::new();
        let mut userhashes = HashMap::new();
        for u in contents.users {
            userhashes.insert(
                u.userhash,
                (u.realm.as_str().into(), u.name.as_str().into()),
            );
            users
                .entry(u.realm.into())
                .or_default()
                .insert(u.name.into(), u.keys);
        }
        let config = self.config_creds();
        let view = View {
            generation: contents.generation,
            users,
            userhashes,
            rest: rest_secrets(&config.secrets, &contents.secrets),
            store_secrets: contents.secrets,
            revoked: contents
                .revocations
                .into_iter()
                .map(|(u, e)| (u.into(), e))
                .collect(),
        };
        *self.view.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(view);
    }

    /// Swaps in the configuration's users and secrets (a reload). Lookups see
    /// the new ones from the next request on; call
    /// [`Server::recheck_credentials`](crate::turn::Server::recheck_credentials)
    /// afterwards to end allocations of users no longer configured.
    pub fn set_config(&self, realm: &str, users: &[(String, String)], secrets: &[String]) {
        let config = Arc::new(ConfigCredentials {
            users: StaticUsers::new(&[realm], users),
            secrets: secrets.to_vec(),
        });
        let mut view = self.view.write().unwrap_or_else(|p| p.into_inner());
        let mut next = View::clone(&view);
        next.rest = rest_secrets(secrets, &next.store_secrets);
        *self.config.write().unwrap_or_else(|p| p.into_inner()) = config;
        *view = Arc::new(next);
    }

    fn config_creds(&self) -> Arc<ConfigCredentials> {
        self.config
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn current(&self) -> Arc<View> {
        self.view.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// The store generation of the current snapshot (-1 before the first load).
    pub fn generation(&self) -> i64 {
        self.current().generation
    }

    pub fn set_healthy(&self, healthy: bool) {
        self.healthy.store(healthy, Ordering::Relaxed);
    }

    /// Counts a reload of the store's snapshot woken by `trigger`.
    pub fn count_reload(&self, trigger: Trigger) {
        self.reloads[trigger as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// Reloads counted by [`count_reload`](Self::count_reload), by trigger.
    pub fn reloads(&self) -> [(Trigger, u64); 2] {
        [Trigger::Poll, Trigger::Notify]
            .map(|t| (t, self.reloads[t as usize].load(Ordering::Relaxed)))
    }

    pub fn is_healthy(&self) -> bool {
        self.healthy.load(Ordering::Relaxed)
    }

    /// The secret new REST credentials are minted with (the credentials API):
    /// the store's newest, else the configuration's first — the rule of
    /// `ferroturn credential mint`. Every secret is accepted on login.
    pub fn minting_secret(&self) -> Option<String> {
        self.current()
            .store_secrets
            .first()
            .or(self.config_creds().secrets.first())
            .cloned()
    }

    /// The username a USERHASH stands for, among configured and stored users.
    pub fn username_for_hash(&self, userhash: &[u8; 32], realm: &str) -> Option<String> {
        let view = self.current();
        view.userhashes
            .get(userhash)
            .filter(|(r, _)| &**r == realm)
            .map(|(_, n)| n.to_string())
    }
}

impl CredentialStore for LiveCredentials {
    fn lookup(&self, username: &str, realm: &str, now_unix: u64) -> Lookup {
        self.lookup_candidate(username, realm, now_unix, 0)
    }

    /// Candidates in order: the configured user, the stored user, then one per REST
    /// secret (configuration secrets first). A revoked REST username is `Revoked`.
    fn lookup_candidate(&self, username: &str, realm: &str, now_unix: u64, index: usize) -> Lookup {
        let mut index = index;
        let config = self.config_creds();
        if let Lookup::Found(keys, exp) = config.users.lookup(username, realm, now_unix) {
            if index == 0 {
                return Lookup::Found(keys, exp);
            }
            index -= 1;
        }
        let view = self.current();
        if let Some(keys) = view.users.get(realm).and_then(|m| m.get(username)) {
            if index == 0 {
                return Lookup::Found(keys.clone(), None);
            }
            index -= 1;
        }
        match view.rest.lookup_candidate(username, realm, now_unix, index) {
            Lookup::Found(..) if view.revoked.contains_key(username) => Lookup::Revoked,
            other => other,
        }
    }

    fn accepts_new_allocations(&self) -> bool {
        self.is_healthy()
    }

    /// Configured users first, then stored ones (the same order as `lookup`).
    fn lookup_userhash(&self, userhash: &[u8; 32], realm: &str, now_unix: u64) -> Option<String> {
        self.config_creds()
            .users
            .lookup_userhash(userhash, realm, now_unix)
            .or_else(|| self.username_for_hash(userhash, realm))
    }
}

/// REST secrets in lookup order: the configuration's, then the store's.
fn rest_secrets(config: &[String], store: &[String]) -> RestSecrets {
    let all: Vec<&str> = config.iter().chain(store).map(String::as_str).collect();
    RestSecrets::new(&all)
}

/// A shared handle, as the core wants it.
pub fn shared(creds: &Arc<LiveCredentials>) -> Arc<dyn CredentialStore> {
    creds.clone()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::turn::auth::rest_password;

    fn user(realm: &str, name: &str, password: &str) -> KeyedUser {
        KeyedUser {
            realm: realm.into(),
            name: name.into(),
            keys: UserKeys::derive(name, realm, password),
            userhash: crate::stun::integrity::userhash(name, realm),
        }
    }

    #[test]
    fn config_then_store_then_rest_with_revocation() {
        let c = LiveCredentials::new("r", &[("alice".into(), "a".into())], &["s1".into()]);
        assert!(matches!(c.lookup("bob", "r", 0), Lookup::Unknown));
        c.replace(StoreContents {
            generation: 3,
            users: vec![user("r", "bob", "b"), user("r", "alice", "stored")],
            secrets: vec!["s2".into()],
            revocations: vec![("2000000000:eve".into(), 2_000_000_000)],
        });
        assert_eq!(c.generation(), 3);
        assert_eq!(c.minting_secret().as_deref(), Some("s2"));
        // Config alice first, then stored alice as a second candidate.
        let Lookup::Found(k0, _) = c.lookup_candidate("alice", "r", 0, 0) else {
            panic!()
        };
        let Lookup::Found(k1, _) = c.lookup_candidate("alice", "r", 0, 1) else {
            panic!()
        };
        assert_eq!(k0, UserKeys::derive("alice", "r", "a"));
        assert_eq!(k1, UserKeys::derive("alice", "r", "stored"));
        assert!(matches!(c.lookup("bob", "r", 0), Lookup::Found(..)));
        assert!(matches!(c.lookup("bob", "other", 0), Lookup::Unknown));
        // REST: both secrets are candidates, the store's second.
        let name = "2000000000:carol";
        let Lookup::Found(k, Some(2_000_000_000)) = c.lookup_candidate(name, "r", 0, 1) else {
            panic!()
        };
        assert_eq!(k, UserKeys::derive(name, "r", &rest_password(b"s2", name)));
        assert!(matches!(
            c.lookup("2000000000:eve", "r", 0),
            Lookup::Revoked
        ));
        assert_eq!(
            c.username_for_hash(&crate::stun::integrity::userhash("bob", "r"), "r")
                .as_deref(),
            Some("bob")
        );
        // A later snapshot without bob: bob is gone at once.
        c.replace(StoreContents {
            generation: 4,
            ..Default::default()
        });
        assert!(matches!(c.lookup("bob", "r", 0), Lookup::Unknown));
        assert!(matches!(c.lookup("alice", "r", 0), Lookup::Found(..)));
        // No store secret left: the configuration's mints.
        assert_eq!(c.minting_secret().as_deref(), Some("s1"));
    }

    #[test]
    fn config_reload_swaps_users_and_secrets_but_keeps_the_store() {
        let c = LiveCredentials::new("r", &[("alice".into(), "a".into())], &["s1".into()]);
        c.replace(StoreContents {
            generation: 1,
            users: vec![user("r", "bob", "b")],
            secrets: vec!["s2".into()],
            revocations: vec![],
        });
        c.set_config("r2", &[("carol".into(), "c".into())], &["s3".into()]);
        assert!(matches!(c.lookup("alice", "r", 0), Lookup::Unknown));
        assert!(matches!(c.lookup("carol", "r2", 0), Lookup::Found(..)));
        assert!(matches!(c.lookup("bob", "r", 0), Lookup::Found(..)));
        assert_eq!(c.generation(), 1);
        // REST: s3 (config) then s2 (store); s1 is gone.
        let name = "2000000000:dave";
        let Lookup::Found(k, _) = c.lookup_candidate(name, "r", 0, 0) else {
            panic!()
        };
        assert_eq!(k, UserKeys::derive(name, "r", &rest_password(b"s3", name)));
        let Lookup::Found(k, _) = c.lookup_candidate(name, "r", 0, 1) else {
            panic!()
        };
        assert_eq!(k, UserKeys::derive(name, "r", &rest_password(b"s2", name)));
        assert!(matches!(
            c.lookup_candidate(name, "r", 0, 2),
            Lookup::Unknown
        ));
    }
}
