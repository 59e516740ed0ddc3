//! The only code that talks to etcd. Keys under `cluster.prefix`:
//!
//! | key | value | bound to |
//! |---|---|---|
//! | `meta` | `{"partitions":P,"mode":"ordered"}` (created once) | — |
//! | `members/<node>` | `{"node","advertise","state","incarnation"}` | the node's lease |
//! | `unreachable/<peer>/<observer>` | `""`: the observer has not reached the peer over HTTP for `cluster.peer_timeout_ms` | the observer's lease |
//! | `owners/<partition>` | `<node> <lease id>`; **epoch = the key's create revision** | the owner's lease |
//! | `seq/<partition>` | the next seq no owner has leased yet | — |
//!
//! Every decision that needs agreement is one etcd transaction: an owner key is created
//! only if absent (so one owner at a time, and each ownership has a new, higher epoch),
//! deleted only by the owner at its own epoch, and a seq block is leased by
//! compare-and-swap on the counter's revision.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use etcd_client::{Client, Compare, CompareOp, ConnectOptions, GetOptions, PutOptions, Txn, TxnOp};
use serde::{Deserialize, Serialize};

use crate::engine::ownership::{Member, Owner};

/// Seqs leased per ownership of a partition (a new owner starts above every earlier block).
pub const SEQ_BLOCK: u64 = 1 << 32;

/// Why an etcd operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("etcd: {0}")]
    Etcd(#[from] etcd_client::Error),
    #[error("etcd did not answer within {0:?}")]
    Timeout(Duration),
    #[error("etcd holds a malformed value at `{key}`: {why}")]
    Malformed { key: String, why: String },
    #[error("the seq counter of partition {0} changed under us; try again")]
    Contended(u32),
}

/// The cluster's fixed shape, agreed by every node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Meta {
    pub partitions: u64,
    pub mode: String,
}

/// Members and owners as read from etcd in one range read.
#[derive(Debug, Clone, Default)]
pub struct View {
    pub members: BTreeMap<String, Member>,
    /// Per partition: owner node, its lease and the epoch.
    pub owners: Vec<Option<(Owner, i64)>>,
    /// The store's revision when read.
    pub revision: i64,
    /// Per peer: the members that have not reached it for `cluster.peer_timeout_ms`.
    pub unreachable: BTreeMap<String, BTreeSet<String>>,
}

/// What registering a member key found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Registration {
    /// The key is ours now.
    Registered,
    /// A key of the same incarnation exists (this node's own earlier life whose lease has
    /// not run out yet): try again later.
    Busy,
    /// Another incarnation of this node id holds the key (a replacement started while
    /// this node was frozen past its lease).
    Taken { incarnation: String },
}

/// A connection to the cluster's keys in etcd.
#[derive(Clone)]
pub struct Store {
    client: Client,
    prefix: String,
    timeout: Duration,
}

impl Store {
    /// Connect to `endpoints`; every call gives up after `timeout`.
    pub async fn connect(
        endpoints: &[String],
        prefix: &str,
        timeout: Duration,
    ) -> Result<Store, StoreError> {
        let options = ConnectOptions::new()
            .with_connect_timeout(timeout)
            .with_timeout(timeout)
            .with_keep_alive(Duration::from_secs(2), timeout);
        let client = tokio::time::timeout(timeout * 2, Client::connect(endpoints, Some(options)))
            .await
            .map_err(|_| StoreError::Timeout(timeout * 2))??;
        Ok(Store {
            client,
            prefix: prefix.trim_end_matches('/').to_string(),
            timeout,
        })
    }

    /// A clone of the underlying client (the lease keeper runs its own stream on it).
    pub fn client(&self) -> Client {
        self.client.clone()
    }

    fn key(&self, rest: &str) -> String {
        format!("{}/{rest}", self.prefix)
    }

    fn owner_key(&self, partition: u32) -> String {
        self.key(&format!("owners/{partition:05}"))
    }

    async fn within<T>(
        &self,
        f: impl std::future::Future<Output = Result<T, etcd_client::Error>>,
    ) -> Result<T, StoreError> {
        tokio::time::timeout(self.timeout, f)
            .await
            .map_err(|_| StoreError::Timeout(self.timeout))?
            .map_err(StoreError::from)
    }

    /// Create the cluster's meta if absent; answer the cluster's meta (which may differ
    /// from `mine`: the caller refuses to join then).
    pub async fn ensure_meta(&self, mine: &Meta) -> Result<Meta, StoreError> {
        let key = self.key("meta");
        let value = serde_json::to_string(mine).unwrap_or_default();
        let txn = Txn::new()
            .when([Compare::create_revision(key.clone(), CompareOp::Equal, 0)])
            .and_then([TxnOp::put(key.clone(), value, None)])
            .or_else([TxnOp::get(key.clone(), None)]);
        let mut c = self.client.clone();
        let res = self.within(c.txn(txn)).await?;
        if res.succeeded() {
            return Ok(mine.clone());
        }
        for op in res.op_responses() {
            if let etcd_client::TxnOpResponse::Get(g) = op
                && let Some(kv) = g.kvs().first()
            {
                return serde_json::from_slice(kv.value()).map_err(|e| StoreError::Malformed {
                    key: key.clone(),
                    why: e.to_string(),
                });
            }
        }
        Err(StoreError::Malformed {
            key,
            why: "missing".into(),
        })
    }

    /// Grant a lease of `ttl_secs`.
    pub async fn grant(&self, ttl_secs: i64) -> Result<i64, StoreError> {
        let mut c = self.client.clone();
        Ok(self.within(c.lease_grant(ttl_secs, None)).await?.id())
    }

    /// Revoke a lease (its member and owner keys vanish at once).
    pub async fn revoke(&self, lease: i64) -> Result<(), StoreError> {
        let mut c = self.client.clone();
        self.within(c.lease_revoke(lease)).await?;
        Ok(())
    }

    /// Register this node's member key under `lease` — only if no member of that id
    /// exists: one id is one member, whatever its incarnation.
    pub async fn register(&self, member: &Member, lease: i64) -> Result<Registration, StoreError> {
        let key = self.key(&format!("members/{}", member.node));
        let value = serde_json::to_string(member).unwrap_or_default();
        let txn = Txn::new()
            .when([Compare::create_revision(key.clone(), CompareOp::Equal, 0)])
            .and_then([TxnOp::put(
                key.clone(),
                value,
                Some(PutOptions::new().with_lease(lease)),
            )])
            .or_else([TxnOp::get(key.clone(), None)]);
        let mut c = self.client.clone();
        let res = self.within(c.txn(txn)).await?;
        if res.succeeded() {
            return Ok(Registration::Registered);
        }
        let held = res.op_responses().into_iter().find_map(|op| match op {
            etcd_client::TxnOpResponse::Get(g) => g.kvs().first().map(|kv| kv.value().to_vec()),
            _ => None,
        });
        // Gone again between the compare and the read: just try again.
        let Some(held) = held else {
            return Ok(Registration::Busy);
        };
        let theirs: Member = serde_json::from_slice(&held).map_err(|e| StoreError::Malformed {
            key: key.clone(),
            why: e.to_string(),
        })?;
        Ok(if theirs.incarnation == member.incarnation {
            Registration::Busy
        } else {
            Registration::Taken {
                incarnation: theirs.incarnation,
            }
        })
    }

    /// Update this node's member key (its state), only while it is bound to `lease`.
    pub async fn update_member(&self, member: &Member, lease: i64) -> Result<bool, StoreError> {
        let key = self.key(&format!("members/{}", member.node));
        let value = serde_json::to_string(member).unwrap_or_default();
        let txn = Txn::new()
            .when([Compare::lease(key.clone(), CompareOp::Equal, lease)])
            .and_then([TxnOp::put(
                key,
                value,
                Some(PutOptions::new().with_lease(lease)),
            )]);
        let mut c = self.client.clone();
        Ok(self.within(c.txn(txn)).await?.succeeded())
    }

    /// The member registered under `node` now, if any.
    pub async fn member(&self, node: &str) -> Result<Option<Member>, StoreError> {
        let key = self.key(&format!("members/{node}"));
        let mut c = self.client.clone();
        let res = self.within(c.get(key.clone(), None)).await?;
        match res.kvs().first() {
            None => Ok(None),
            Some(kv) => {
                serde_json::from_slice(kv.value())
                    .map(Some)
                    .map_err(|e| StoreError::Malformed {
                        key,
                        why: e.to_string(),
                    })
            }
        }
    }

    /// Say (under `lease`) that `observer` has not reached `peer` for the peer timeout.
    pub async fn mark_unreachable(
        &self,
        peer: &str,
        observer: &str,
        lease: i64,
    ) -> Result<(), StoreError> {
        let key = self.key(&format!("unreachable/{peer}/{observer}"));
        let mut c = self.client.clone();
        self.within(c.put(key, "", Some(PutOptions::new().with_lease(lease))))
            .await?;
        Ok(())
    }

    /// Take back [`Store::mark_unreachable`].
    pub async fn clear_unreachable(&self, peer: &str, observer: &str) -> Result<(), StoreError> {
        let key = self.key(&format!("unreachable/{peer}/{observer}"));
        let mut c = self.client.clone();
        self.within(c.delete(key, None)).await?;
        Ok(())
    }

    /// Remove this node's member key.
    pub async fn delete_member(&self, node: &str) -> Result<(), StoreError> {
        let mut c = self.client.clone();
        self.within(c.delete(self.key(&format!("members/{node}")), None))
            .await?;
        Ok(())
    }

    /// Members, owners and meta in one range read.
    pub async fn load(&self, partitions: u32) -> Result<View, StoreError> {
        let prefix = self.key("");
        let mut c = self.client.clone();
        let res = self
            .within(c.get(prefix.clone(), Some(GetOptions::new().with_prefix())))
            .await?;
        let mut view = View {
            members: BTreeMap::new(),
            owners: vec![None; partitions as usize],
            revision: res.header().map(|h| h.revision()).unwrap_or(0),
            unreachable: BTreeMap::new(),
        };
        for kv in res.kvs() {
            let key = String::from_utf8_lossy(kv.key());
            let rest = key.strip_prefix(&prefix).unwrap_or(&key);
            if let Some(node) = rest.strip_prefix("members/") {
                match serde_json::from_slice::<Member>(kv.value()) {
                    Ok(m) => {
                        view.members.insert(node.to_string(), m);
                    }
                    Err(e) => tracing::warn!(key = %key, error = %e, "ignoring a malformed member"),
                }
            } else if let Some(pair) = rest.strip_prefix("unreachable/") {
                if let Some((peer, observer)) = pair.split_once('/') {
                    view.unreachable
                        .entry(peer.to_string())
                        .or_default()
                        .insert(observer.to_string());
                }
            } else if let Some(p) = rest.strip_prefix("owners/") {
                let (Ok(p), Ok(value)) = (p.parse::<usize>(), std::str::from_utf8(kv.value()))
                else {
                    continue;
                };
                let mut parts = value.split(' ');
                let node = parts.next().unwrap_or_default().to_string();
                let lease = parts.next().and_then(|l| l.parse().ok()).unwrap_or(0);
                if let Some(slot) = view.owners.get_mut(p) {
                    *slot = Some((
                        Owner {
                            node,
                            epoch: kv.create_revision() as u64,
                        },
                        lease,
                    ));
                }
            }
        }
        Ok(view)
    }

    /// Become the owner of `partition` if nobody is; answers the epoch, or `None` when
    /// another node owns it.
    pub async fn acquire(
        &self,
        partition: u32,
        node: &str,
        lease: i64,
    ) -> Result<Option<u64>, StoreError> {
        let key = self.owner_key(partition);
        let txn = Txn::new()
            .when([Compare::create_revision(key.clone(), CompareOp::Equal, 0)])
            .and_then([TxnOp::put(
                key,
                format!("{node} {lease}"),
                Some(PutOptions::new().with_lease(lease)),
            )]);
        let mut c = self.client.clone();
        let res = self.within(c.txn(txn)).await?;
        if !res.succeeded() {
            return Ok(None);
        }
        // The key was created by this transaction: its create revision is the header's.
        Ok(res.header().map(|h| h.revision() as u64))
    }

    /// Give up `partition`, only if it is still owned at `epoch` (never delete a newer
    /// owner's key).
    pub async fn release(&self, partition: u32, epoch: u64) -> Result<bool, StoreError> {
        let key = self.owner_key(partition);
        let txn = Txn::new()
            .when([Compare::create_revision(
                key.clone(),
                CompareOp::Equal,
                epoch as i64,
            )])
            .and_then([TxnOp::delete(key, None)]);
        let mut c = self.client.clone();
        Ok(self.within(c.txn(txn)).await?.succeeded())
    }

    /// Lease the next block of seqs of `partition`; answers its first seq.
    pub async fn lease_seqs(&self, partition: u32) -> Result<u64, StoreError> {
        let key = self.key(&format!("seq/{partition:05}"));
        let mut c = self.client.clone();
        let res = self.within(c.get(key.clone(), None)).await?;
        let (floor, compare) = match res.kvs().first() {
            Some(kv) => {
                let floor = std::str::from_utf8(kv.value())
                    .ok()
                    .and_then(|v| v.parse::<u64>().ok())
                    .ok_or_else(|| StoreError::Malformed {
                        key: key.clone(),
                        why: "not a number".into(),
                    })?;
                (
                    floor,
                    Compare::mod_revision(key.clone(), CompareOp::Equal, kv.mod_revision()),
                )
            }
            None => (
                0,
                Compare::create_revision(key.clone(), CompareOp::Equal, 0),
            ),
        };
        let next = floor.saturating_add(SEQ_BLOCK);
        let txn = Txn::new()
            .when([compare])
            .and_then([TxnOp::put(key, next.to_string(), None)]);
        if self.within(c.txn(txn)).await?.succeeded() {
            Ok(floor)
        } else {
            Err(StoreError::Contended(partition))
        }
    }
}
