//! Replays the kept fuzz corpus of this connector's parameters (`fuzz/corpus/params_mysql/`)
//! through the body of the `params_mysql` fuzz target, so every test run checks it without the
//! fuzzer: parsing and validation for both directions never panic and refuse with an invalid
//! parameter naming the field.

use kps_connector_core::fuzzing::{connector_params, corpus_dir, replay_corpus};
use kps_connector_mysql::MysqlConnector;

#[test]
fn the_kept_params_corpus_replays() {
    let files = replay_corpus(&corpus_dir("params_mysql"), |data| {
        connector_params(MysqlConnector::default(), data)
    });
    assert!(files >= 5, "{files} files");
}
