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

#[cfg(test)]
mod properties {
    //! Property tests of [`plan`]: for arbitrary running and desired sets, applying the plan to
    //! the running set gives the desired one, and no stream is touched without a reason.

    use super::*;
    use proptest::collection::{btree_map, vec};
    use proptest::prelude::*;
    use proptest::sample::select;

    /// A few ids, channels and values, so running and desired sets overlap and collide often.
    fn id() -> impl Strategy<Value = String> {
        select(vec!["a", "b", "c", "d", "e", "f"]).prop_map(str::to_owned)
    }

    fn direction() -> impl Strategy<Value = Direction> {
        prop_oneof![Just(Direction::Ingress), Just(Direction::Egress)]
    }

    fn metadata() -> impl Strategy<Value = Map<String, Value>> {
        let value = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            (0u8..3).prop_map(Value::from),
            select(vec!["x", "y"]).prop_map(Value::from),
        ];
        btree_map(select(vec!["host", "topic", "qos"]), value, 0..3).prop_map(|fields| {
            fields
                .into_iter()
                .map(|(key, value)| (key.to_owned(), value))
                .collect()
        })
    }

    /// A declaration without its id: direction, channel, metadata.
    fn body() -> impl Strategy<Value = (Direction, String, Map<String, Value>)> {
        (
            direction(),
            select(vec!["s.1", "s.2"]).prop_map(str::to_owned),
            metadata(),
        )
    }

    fn specs(bodies: BTreeMap<String, (Direction, String, Map<String, Value>)>) -> Vec<StreamSpec> {
        bodies
            .into_iter()
            .map(
                |(id, (direction, transport_channel, metadata))| StreamSpec {
                    id,
                    direction,
                    transport_channel,
                    metadata,
                },
            )
            .collect()
    }

    /// What a declaration change can be.
    #[derive(Debug, Clone, Copy)]
    enum Change {
        Keep,
        Remove,
        Direction,
        Channel,
        Metadata,
    }

    fn change() -> impl Strategy<Value = Change> {
        prop_oneof![
            Just(Change::Keep),
            Just(Change::Remove),
            Just(Change::Direction),
            Just(Change::Channel),
            Just(Change::Metadata),
        ]
    }

    /// A running set, and a desired set made from it by keeping, removing or changing one part
    /// of each stream and adding new ones.
    fn derived_sets() -> impl Strategy<Value = (Vec<StreamSpec>, Vec<StreamSpec>)> {
        (
            btree_map(id(), body(), 0..6),
            vec(change(), 6),
            btree_map(id(), body(), 0..4),
        )
            .prop_map(|(running, changes, added)| {
                let running = specs(running);
                let mut desired = Vec::new();
                for (spec, change) in running.iter().zip(changes) {
                    let mut spec = spec.clone();
                    match change {
                        Change::Keep => {}
                        Change::Remove => continue,
                        Change::Direction => {
                            spec.direction = match spec.direction {
                                Direction::Ingress => Direction::Egress,
                                Direction::Egress => Direction::Ingress,
                            }
                        }
                        Change::Channel => spec.transport_channel.push_str(".new"),
                        Change::Metadata => {
                            spec.metadata
                                .insert("changed".to_owned(), Value::from(true));
                        }
                    }
                    desired.push(spec);
                }
                let taken: BTreeSet<String> = running.iter().map(|s| s.id.clone()).collect();
                desired.extend(
                    specs(added)
                        .into_iter()
                        .filter(|spec| !taken.contains(&spec.id)),
                );
                (running, desired)
            })
    }

    /// Two sets drawn independently (ids still collide often).
    fn independent_sets() -> impl Strategy<Value = (Vec<StreamSpec>, Vec<StreamSpec>)> {
        (btree_map(id(), body(), 0..6), btree_map(id(), body(), 0..6))
            .prop_map(|(running, desired)| (specs(running), specs(desired)))
    }

    fn by_id(specs: &[StreamSpec]) -> BTreeMap<String, StreamSpec> {
        specs.iter().map(|s| (s.id.clone(), s.clone())).collect()
    }

    /// What the supervisor does with a plan: stop, restart with the new declaration, start;
    /// kept streams stay as they run.
    fn apply(
        running: &[StreamSpec],
        desired: &[StreamSpec],
        plan: &Plan,
    ) -> Result<BTreeMap<String, StreamSpec>, TestCaseError> {
        let mut now = by_id(running);
        let desired = by_id(desired);
        for id in plan.stop.iter().chain(&plan.restart) {
            prop_assert!(now.remove(id).is_some(), "{} stopped but not running", id);
        }
        for id in plan.restart.iter().chain(&plan.start) {
            let Some(spec) = desired.get(id) else {
                return Err(TestCaseError::fail(format!("{id} started but not desired")));
            };
            prop_assert!(
                now.insert(id.clone(), spec.clone()).is_none(),
                "{} started twice",
                id
            );
        }
        Ok(now)
    }

    fn check(running: &[StreamSpec], desired: &[StreamSpec]) -> Result<(), TestCaseError> {
        let plan = plan(running, desired);
        let before = by_id(running);
        let after = by_id(desired);

        prop_assert_eq!(apply(running, desired, &plan)?, after.clone());

        // No stream id appears twice: the buckets are disjoint.
        let buckets = [&plan.stop, &plan.start, &plan.restart, &plan.keep];
        let total: usize = buckets.iter().map(|b| b.len()).sum();
        let union: BTreeSet<&String> = buckets.iter().flat_map(|b| b.iter()).collect();
        prop_assert_eq!(total, union.len(), "an id in two buckets: {:?}", plan);
        let all: BTreeSet<&String> = before.keys().chain(after.keys()).collect();
        prop_assert_eq!(union, all);

        for (id, spec) in &after {
            match before.get(id) {
                // Unchanged: neither stopped nor started, kept.
                Some(current) if current == spec => {
                    prop_assert!(plan.keep.contains(id), "{} unchanged but not kept", id);
                }
                // Direction, channel or parameters changed: restarted.
                Some(_) => prop_assert!(
                    plan.restart.contains(id),
                    "{} changed but not restarted",
                    id
                ),
                None => prop_assert!(plan.start.contains(id), "{} new but not started", id),
            }
        }
        for id in before.keys() {
            if !after.contains_key(id) {
                prop_assert!(plan.stop.contains(id), "{} removed but not stopped", id);
            }
        }
        Ok(())
    }

    proptest! {
        #[test]
        fn applying_the_plan_gives_the_desired_set((running, desired) in derived_sets()) {
            check(&running, &desired)?;
        }

        #[test]
        fn independent_sets_plan_correctly((running, desired) in independent_sets()) {
            check(&running, &desired)?;
        }

        #[test]
        fn planning_a_set_against_itself_keeps_everything((running, _) in independent_sets()) {
            let plan = plan(&running, &running);
            prop_assert!(plan.stop.is_empty() && plan.start.is_empty() && plan.restart.is_empty());
            prop_assert_eq!(plan.keep.len(), running.len());
        }
    }
}
