//! The storage conformance suite against `MemStorage`.

#[test]
fn mem_storage_passes_the_conformance_suite() {
    keel::testing::run_storage_conformance(keel::MemStorage::new);
}
