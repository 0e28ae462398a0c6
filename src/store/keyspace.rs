//! Keyspace administration under the prefix: counting and listing
//! entities (SCAN pages, never KEYS), and deleting them all in bounded
//! steps.

use super::*;

impl FeatureStore {
    /// Keys under the prefix (a full SCAN: keep it off request paths),
    /// whatever they hold and whatever bytes their names are.
    pub fn count_entities(&self) -> Result<u64, StoreError> {
        self.census(0).map(|c| c.count)
    }

    /// Up to `limit` entity ids, sorted: only ids the store accepts
    /// (`validate::entity_id`), so every one can be read back. SCAN stops
    /// once `limit` are found.
    pub fn list_entity_ids(&self, limit: usize) -> Result<Vec<String>, StoreError> {
        let mut ids = Vec::new();
        if limit > 0 {
            let mut unlisted = 0;
            self.scan_keys(|keys| {
                self.take_ids(keys, &mut ids, &mut unlisted, limit);
                if ids.len() >= limit {
                    ControlFlow::Break(())
                } else {
                    ControlFlow::Continue(())
                }
            })?;
        }
        ids.sort();
        Ok(ids)
    }

    /// How many entities there are and up to `limit` of their ids (sorted),
    /// in one full SCAN: what a status page needs, for the price of a count.
    pub fn count_and_list_entities(&self, limit: usize) -> Result<(u64, Vec<String>), StoreError> {
        self.census(limit).map(|c| (c.count, c.ids))
    }

    /// One full SCAN: every key under the prefix counted, up to `limit` ids
    /// listed (sorted), and how many keys have a name the store would refuse
    /// as an id (written by another tool: not UTF-8, a space, a glob
    /// character ...). Those are counted and deleted by `delete_all`, never
    /// listed, so nothing picks an id from the list that it cannot read.
    pub fn census(&self, limit: usize) -> Result<Census, StoreError> {
        let mut census = Census::default();
        self.scan_keys(|keys| {
            census.count += keys.len() as u64;
            self.take_ids(keys, &mut census.ids, &mut census.unlisted, limit);
            ControlFlow::Continue(())
        })?;
        census.ids.sort();
        Ok(census)
    }

    /// One SCAN page of the whole keyspace (no MATCH, so keys outside the
    /// prefix are seen and counted in `foreign`), from `cursor`: the next
    /// cursor (0 once the pass is over) and the page's tallies, ids taken
    /// into `into` up to `limit` as `census` does. A pass of pages bounded
    /// by a time budget is how the server counts without a full SCAN per
    /// refresh; seeing the foreign keys tells it whether `DBSIZE` is exact.
    /// On a cluster the pass goes through every primary in turn: the top 16
    /// bits of the cursor say which (a node's own cursor stays far below
    /// 2^48: it counts buckets of its tables).
    pub fn census_page(
        &self,
        cursor: u64,
        count: usize,
        into: &mut Census,
        limit: usize,
    ) -> Result<CensusPage, StoreError> {
        let (node, node_cursor) = ((cursor >> NODE_SHIFT) as usize, cursor & NODE_CURSOR);
        let (next, keys, nodes) = self.scan_page(node, node_cursor, count)?;
        if next > NODE_CURSOR {
            return Err(StoreError::Redis(format!(
                "SCAN: a cursor past 2^{NODE_SHIFT} ({next})"
            )));
        }
        let next = match next {
            0 if node + 1 < nodes => ((node + 1) as u64) << NODE_SHIFT,
            0 => 0,
            more => ((node as u64) << NODE_SHIFT) | more,
        };
        let prefix = self.config.key_prefix.as_bytes();
        let (mine, foreign): (Vec<_>, Vec<_>) =
            keys.into_iter().partition(|k| k.starts_with(prefix));
        into.count += mine.len() as u64;
        self.take_ids(mine, &mut into.ids, &mut into.unlisted, limit);
        Ok(CensusPage {
            next,
            foreign: foreign.len() as u64,
            node_done: next & NODE_CURSOR == 0,
        })
    }

    /// `DBSIZE` and `samples` `RANDOMKEY`s in one round trip (to every
    /// primary at once on a cluster, the samples shared among them): the
    /// number of keys in the database (summed over the primaries), and
    /// whether every sampled key is under the prefix (an empty database
    /// samples nothing and says true).
    pub fn dbsize_sampled(&self, samples: usize) -> Result<(u64, bool), StoreError> {
        let per_node = samples.div_ceil(self.nodes()?.len().max(1));
        let mut cmds = vec![redis::cmd("DBSIZE")];
        cmds.extend((0..per_node).map(|_| redis::cmd("RANDOMKEY")));
        let prefix = self.config.key_prefix.as_bytes();
        let (mut size, mut all_mine) = (0u64, true);
        for replies in self.pipeline_on_each_node(&cmds)? {
            let mut values = replies.into_iter();
            size += match values.next() {
                Some(v) => decode::<u64>("DBSIZE", ok_reply(v)?)?,
                None => return Err(StoreError::Redis("DBSIZE: an empty reply".into())),
            };
            for v in values {
                if let Some(key) = decode::<Option<Vec<u8>>>("RANDOMKEY", ok_reply(v)?)? {
                    all_mine &= key.starts_with(prefix);
                }
            }
        }
        Ok((size, all_mine))
    }

    /// Moves valid ids from `keys` into `ids` until it holds `limit`;
    /// counts the keys whose id is not valid in `unlisted`.
    pub(super) fn take_ids(
        &self,
        keys: Vec<Vec<u8>>,
        ids: &mut Vec<String>,
        unlisted: &mut u64,
        limit: usize,
    ) {
        let prefix = self.config.key_prefix.len();
        for key in keys {
            let id = key
                .get(prefix..)
                .and_then(|id| std::str::from_utf8(id).ok())
                .filter(|id| validate::entity_id(id).is_ok());
            match id {
                Some(id) if ids.len() < limit => ids.push(id.to_owned()),
                Some(_) => {}
                None => *unlisted += 1,
            }
        }
    }

    /// Deletes every key under the prefix (SCAN + UNLINK, one batch of keys
    /// at a time), whatever its name's bytes, and nothing else. Returns how
    /// many keys went.
    pub fn delete_all(&self) -> Result<u64, StoreError> {
        self.delete_all_reporting(|_| {})
    }

    /// `delete_all`, calling `deleted_so_far` after each batch with the
    /// running total: a reset of millions of keys takes seconds, and the
    /// page shows how far it got. Each batch (one SCAN page, one UNLINK)
    /// holds Redis for about a millisecond, so reads go on around it.
    pub fn delete_all_reporting(
        &self,
        mut deleted_so_far: impl FnMut(u64),
    ) -> Result<u64, StoreError> {
        let mut deleted = 0u64;
        let mut failure = None;
        self.scan_keys(|keys| {
            if keys.is_empty() {
                return ControlFlow::Continue(());
            }
            match self.unlink(&keys) {
                Ok(n) => {
                    deleted += n;
                    deleted_so_far(deleted);
                    ControlFlow::Continue(())
                }
                Err(e) => {
                    failure = Some(e);
                    ControlFlow::Break(())
                }
            }
        })?;
        match failure {
            Some(e) => Err(e),
            None => Ok(deleted),
        }
    }

    /// `UNLINK`s `keys` in one round trip: one command standalone; on a
    /// cluster one per slot (a command's keys must share one), pipelined.
    /// How many went.
    fn unlink(&self, keys: &[Vec<u8>]) -> Result<u64, StoreError> {
        let mut by_slot: BTreeMap<Option<u16>, Cmd> = BTreeMap::new();
        for key in keys {
            by_slot
                .entry(self.slot_of(key))
                .or_insert_with(|| redis::cmd("UNLINK"))
                .arg(key.as_slice());
        }
        let mut pipe = redis::pipe();
        pipe.ignore_errors();
        for cmd in by_slot.into_values() {
            pipe.add_command(cmd);
        }
        let replies: Vec<Value> = self.run_pipeline(&pipe)?;
        replies.into_iter().try_fold(0u64, |sum, v| match v {
            Value::ServerError(e) => Err(server_error(e)),
            v => Ok(sum + decode::<u64>("UNLINK", v)?),
        })
    }
}

/// Where the node's index starts in a census cursor.
const NODE_SHIFT: u32 = 48;
const NODE_CURSOR: u64 = (1 << NODE_SHIFT) - 1;
