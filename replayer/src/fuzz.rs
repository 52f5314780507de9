//! The replayer's fuzz target (`fuzz/`, run with cargo-fuzz): a gRPC answer's body, as a
//! hostile target could send it, must neither panic nor hang. Its seeds and every input
//! that once crashed it live in `fuzz/corpus/grpc_answer/`; a unit test below runs them on
//! stable with the other tests.

/// A gRPC answer's body: its messages counted as they stream past in pieces of every size,
/// then read as JSON without a schema, as response comparison reads it.
pub fn grpc_answer(data: &[u8]) {
    for piece in [1, 5, 7, 4096] {
        let mut frames = crate::rpc::Frames::default();
        for part in data.chunks(piece) {
            frames.take(part);
        }
        let _ = frames.whole();
    }
    let _ = crate::protobuf::grpc_body(data, None);
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_fuzz_corpus_replays_without_a_panic() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus/grpc_answer");
        let mut ran = 0;
        for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
            super::grpc_answer(&std::fs::read(entry.expect("entry").path()).expect("read"));
            ran += 1;
        }
        assert!(ran >= 2, "the target has seeds: {ran} files");
    }
}
