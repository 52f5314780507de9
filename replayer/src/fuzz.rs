//! The replayer's fuzz targets (`fuzz/`, run with cargo-fuzz): a gRPC answer's body, and
//! the bytes of an HTTP/2 connection, as a hostile target could send them, must neither
//! panic nor hang. Their seeds and every input that once crashed them live in
//! `fuzz/corpus/<target>/`; a unit test below runs them on stable with the other tests.

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

/// An HTTP/2 server's bytes to a client with three streams in flight: frames, header
/// blocks (HPACK), windows, resets and GOAWAYs, read in pieces of every size.
pub fn h2_answer(data: &[u8]) {
    crate::h2::answer_to_streams(data);
}

#[cfg(test)]
mod tests {
    fn corpus(target: &str, run: fn(&[u8])) {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus").join(target);
        let mut ran = 0;
        for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
            run(&std::fs::read(entry.expect("entry").path()).expect("read"));
            ran += 1;
        }
        assert!(ran >= 2, "the target has seeds: {ran} files");
    }

    #[test]
    fn the_fuzz_corpus_replays_without_a_panic() {
        corpus("grpc_answer", super::grpc_answer);
        corpus("h2_answer", super::h2_answer);
    }
}
