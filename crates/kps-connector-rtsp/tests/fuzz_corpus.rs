//! Replays the kept fuzz corpus of this connector's parameters (`fuzz/corpus/params_rtsp/`)
//! through the body of the `params_rtsp` fuzz target, so every test run checks it without the
//! fuzzer: parsing and validation for both directions never panic and refuse with an invalid
//! parameter naming the field.

use kps_connector_core::fuzzing::{connector_params, corpus_dir, replay_corpus};
use kps_connector_rtsp::RtspConnector;

#[test]
fn the_kept_params_corpus_replays() {
    let files = replay_corpus(&corpus_dir("params_rtsp"), |data| {
        connector_params(RtspConnector, data)
    });
    assert!(files >= 5, "{files} files");
}
