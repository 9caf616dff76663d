//! The declarative stream set: what to stop, start and restart to go from the running set to
//! the desired one. Pure, so it is tested on its own.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Map, Value};

use crate::connector::Direction;

/// One stream as the platform declares it (validated).
#[derive(Debug, Clone, PartialEq)]
pub struct StreamSpec {
    /// The stream id, unique within the connector.
    pub id: String,
    /// Its direction.
    pub direction: Direction,
    /// The NATS subject it publishes to (ingress) or subscribes on (egress).
    pub transport_channel: String,
    /// The connector-specific parameters.
    pub metadata: Map<String, Value>,
}

/// What to do to reach a desired set.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Plan {
    /// Running streams absent from the desired set.
    pub stop: BTreeSet<String>,
    /// Desired streams not running.
    pub start: BTreeSet<String>,
    /// Streams whose declaration changed: stop, then start with the new one.
    pub restart: BTreeSet<String>,
    /// Streams declared exactly as they run: left untouched.
    pub keep: BTreeSet<String>,
}

/// Computes the plan from the running to the desired declarations.
pub fn plan<'a>(
    running: impl IntoIterator<Item = &'a StreamSpec>,
    desired: impl IntoIterator<Item = &'a StreamSpec>,
) -> Plan {
    let running: BTreeMap<&str, &StreamSpec> =
        running.into_iter().map(|s| (s.id.as_str(), s)).collect();
    let desired: BTreeMap<&str, &StreamSpec> =
        desired.into_iter().map(|s| (s.id.as_str(), s)).collect();
    let mut plan = Plan::default();
    for (id, spec) in &desired {
        match running.get(id) {
            None => plan.start.insert((*id).to_owned()),
            Some(current) if current == spec => plan.keep.insert((*id).to_owned()),
            Some(_) => plan.restart.insert((*id).to_owned()),
        };
    }
    for id in running.keys() {
        if !desired.contains_key(id) {
            plan.stop.insert((*id).to_owned());
        }
    }
    plan
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(id: &str, channel: &str) -> StreamSpec {
        StreamSpec {
            id: id.to_owned(),
            direction: Direction::Ingress,
            transport_channel: channel.to_owned(),
            metadata: Map::new(),
        }
    }

    #[test]
    fn plan_starts_stops_restarts_and_keeps() {
        let running = [spec("a", "x"), spec("b", "x"), spec("c", "x")];
        let desired = [spec("a", "x"), spec("b", "changed"), spec("d", "x")];
        let plan = plan(&running, &desired);
        let set = |ids: &[&str]| ids.iter().map(|s| s.to_string()).collect::<BTreeSet<_>>();
        assert_eq!(plan.keep, set(&["a"]));
        assert_eq!(plan.restart, set(&["b"]));
        assert_eq!(plan.stop, set(&["c"]));
        assert_eq!(plan.start, set(&["d"]));
    }

    #[test]
    fn every_id_lands_in_exactly_one_bucket() {
        // A small exhaustive property: for all subsets of 4 ids running and desired, with or
        // without a change, the buckets partition the union of ids.
        let ids = ["a", "b", "c", "d"];
        for running_mask in 0u32..16 {
            for desired_mask in 0u32..16 {
                for changed_mask in 0u32..16 {
                    let running: Vec<_> = (0..4)
                        .filter(|i| running_mask & (1 << i) != 0)
                        .map(|i| spec(ids[i], "x"))
                        .collect();
                    let desired: Vec<_> = (0..4)
                        .filter(|i| desired_mask & (1 << i) != 0)
                        .map(|i| {
                            spec(
                                ids[i],
                                if changed_mask & (1 << i) != 0 {
                                    "y"
                                } else {
                                    "x"
                                },
                            )
                        })
                        .collect();
                    let plan = plan(&running, &desired);
                    for (i, id) in ids.iter().enumerate() {
                        let buckets = [&plan.stop, &plan.start, &plan.restart, &plan.keep]
                            .iter()
                            .filter(|b| b.contains(*id))
                            .count();
                        let present = (running_mask | desired_mask) & (1 << i) != 0;
                        assert_eq!(
                            buckets,
                            usize::from(present),
                            "{id} {running_mask} {desired_mask} {changed_mask}"
                        );
                    }
                }
            }
        }
    }
}
